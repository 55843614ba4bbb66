"""Linear evaluation of a frozen encoder: a fresh linear probe per modality subset, trained on the
server's labelled set and scored on the test set (the "generalised classifier" of FedMEKT).

The probe is created, trained and dropped inside one call: nothing of it survives to the next
evaluation, so a round's numbers measure that round's encoder alone.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from fedmosaic.core.metrics import classification_metrics
from fedmosaic.core.seeding import Rng
from fedmosaic.core.task import TaskInfo, View, to_tensor

Featurizer = Callable[[torch.Tensor, str], torch.Tensor]  # (windows, modality) -> (B, F) features


@torch.no_grad()
def encode_view(view: View, featurize: Featurizer, modality: str, batch_size: int = 512) -> np.ndarray:
    """Features of every sample of ``view`` that has ``modality`` (rows without it are NaN)."""
    j = view.info.modality_names.index(modality)
    rows = np.flatnonzero(view.mask[:, j])
    out: np.ndarray | None = None
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        feats = featurize(to_tensor(view.store[modality][view.indices[chunk]]), modality).numpy()
        if out is None:
            out = np.full((len(view), feats.shape[1]), np.nan, dtype=np.float32)
        out[chunk] = feats
    return out if out is not None else np.full((len(view), 1), np.nan, dtype=np.float32)


def _complete_rows(view: View, subset: frozenset[str]) -> np.ndarray:
    cols = [view.info.modality_names.index(m) for m in subset]
    return np.flatnonzero(view.mask[:, cols].all(axis=1))


def linear_evaluation(
    featurize: Featurizer,
    labelled: View,
    test: View,
    info: TaskInfo,
    rng: Rng,
    lr: float,
    epochs: int,
    batch_size: int = 32,
) -> dict[str, dict[str, float]]:
    """Metrics by subset name (``"acc"``, ``"gyro"``, ``"acc+gyro"``) of fresh linear probes.

    For each non-empty subset of the task's modalities, the features of its modalities are
    concatenated (task order), standardised with the labelled set's statistics (an affine map, so the
    probe stays linear in the encoder's output) and a new ``nn.Linear`` is trained with Adam on the
    labelled samples that have every modality of the subset; it is scored on the test samples that
    have them. Initialisation and batch order come from ``rng`` (per subset).
    """
    if len(labelled) == 0:
        raise ValueError("task.labelled_size: linear evaluation needs a labelled server set (got 0 samples)")
    names = info.modality_names
    feats_l = {m: encode_view(labelled, featurize, m) for m in names}
    feats_t = {m: encode_view(test, featurize, m) for m in names}
    out: dict[str, dict[str, float]] = {}
    for subset in info.subsets():
        group = info.group(subset)
        ordered = [m for m in names if m in subset]
        rows_l, rows_t = _complete_rows(labelled, subset), _complete_rows(test, subset)
        if len(rows_l) == 0 or len(rows_t) == 0:
            continue  # no labelled or test sample has all of these modalities
        x_l = np.concatenate([feats_l[m][rows_l] for m in ordered], axis=1)
        x_t = np.concatenate([feats_t[m][rows_t] for m in ordered], axis=1)
        mean, std = x_l.mean(0), x_l.std(0) + 1e-6
        x_l, x_t = (x_l - mean) / std, (x_t - mean) / std
        y_l = labelled.labels[rows_l].astype(np.int64)
        with rng.seeded(f"probe-init/{group}"):
            probe = nn.Linear(x_l.shape[1], info.num_classes)
        optimizer = torch.optim.Adam(probe.parameters(), lr=lr, fused=True)  # one kernel per step
        xt_l, yt_l = torch.from_numpy(x_l), torch.from_numpy(y_l)
        order = rng.numpy(f"probe-batches/{group}")
        for _ in range(epochs):
            for idx in torch.from_numpy(order.permutation(len(y_l))).split(batch_size):
                loss = nn.functional.cross_entropy(probe(xt_l[idx]), yt_l[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            pred = probe(torch.from_numpy(x_t)).argmax(1).numpy()
        out[group] = classification_metrics(test.labels[rows_t], pred, info.num_classes)
    return out
