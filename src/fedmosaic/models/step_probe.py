"""The reference evaluation protocol of the autoencoder family: a classifier labels every time step
of a continuous stream from that step's representation, and the test stream is scored in windows
of 2,000 steps by weighted-F1 (``yuchenzhao/iotdi22-mmfl`` ``src/server.py``, FedMEKT's
``evaluating_classifier``; docs/fedmekt.md says where this differs).

The per-step classifier is :func:`fit_probe`'s L-BFGS logistic regression (the reference's "MLP" is
one linear layer, with dropout 0.5 on mHealth, trained by a few Adam steps per round), fitted fresh
at each evaluation on the server's labelled share, to a stated tolerance; its training record lands
in the row as under the window protocol.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch.nn import functional as F

from fedmosaic.core.metrics import classification_metrics
from fedmosaic.core.stream import UNLABELLED, Stream
from fedmosaic.core.task import TaskInfo
from fedmosaic.models.linear_probe import standardised_fit_predict

EVAL_WIN = 2000  # the reference's EVAL_WIN: the encoder restarts, and F1 is taken, every 2,000 steps
STATS_WIDTH = 128  # trailing window of the raw-statistics control (HAPT's 2.56 s window at 50 Hz)

# (B, C, T) chunks of one modality -> (B, T, F) per-step features
SeqFeaturizer = Callable[[torch.Tensor, str], torch.Tensor]


@torch.no_grad()
def encode_stream(stream: Stream, featurize: SeqFeaturizer, modality: str) -> np.ndarray:
    """``(T, F)`` per-step features: ``featurize`` runs on each :data:`EVAL_WIN`-step chunk from a
    fresh state (as the reference encodes its test windows), full-length chunks batched together."""
    chunks = stream.chunks(EVAL_WIN)
    signal = stream.signals[modality]
    out: np.ndarray | None = None
    by_length: dict[int, list[tuple[int, int]]] = {}
    for lo, hi in chunks:
        by_length.setdefault(hi - lo, []).append((lo, hi))
    for group in by_length.values():
        for start in range(0, len(group), 64):  # bounded memory: 64 chunks of 2,000 steps at a time
            part = group[start : start + 64]
            x = torch.from_numpy(np.stack([signal[lo:hi] for lo, hi in part])).transpose(1, 2)
            feats = featurize(x.contiguous(), modality).cpu().numpy()  # (b, length, F)
            if out is None:
                out = np.empty((len(stream), feats.shape[2]), dtype=np.float32)
            for (lo, hi), f in zip(part, feats, strict=True):
                out[lo:hi] = f
    assert out is not None
    return out


def local_statistics(x: torch.Tensor, modality: str) -> torch.Tensor:
    """The raw-statistics control per step: the step's channels and the mean, std, min and max of
    every channel over the trailing :data:`STATS_WIDTH` steps (causal, like the LSTM), ``(B, T, 5C)``.
    """
    width = min(STATS_WIDTH, x.shape[2])
    padded = F.pad(x, (width - 1, 0), mode="replicate")
    mean = F.avg_pool1d(padded, width, stride=1)
    sq = F.avg_pool1d(padded.square(), width, stride=1)
    std = (sq - mean.square()).clamp_min(0).sqrt()
    high = F.max_pool1d(padded, width, stride=1)
    low = -F.max_pool1d(-padded, width, stride=1)
    return torch.cat([x, mean, std, low, high], dim=1).transpose(1, 2)


def window_scores(stream: Stream, pred: np.ndarray) -> dict[str, float]:
    """Mean over the test stream's :data:`EVAL_WIN`-step windows of accuracy and weighted-F1, on the
    labelled steps of each window (windows without one are skipped); ``windows`` counts the scored."""
    f1s, accs = [], []
    for lo, hi in stream.chunks(EVAL_WIN):
        y = stream.labels[lo:hi]
        keep = y != UNLABELLED
        if not keep.any():
            continue
        f1s.append(f1_score(y[keep], pred[lo:hi][keep], average="weighted", zero_division=0))
        accs.append(accuracy_score(y[keep], pred[lo:hi][keep]))
    return {"weighted_f1": float(np.mean(f1s)), "accuracy": float(np.mean(accs)), "windows": float(len(f1s))}


def step_evaluation(
    featurize: SeqFeaturizer,
    labelled: Stream,
    test: Stream,
    info: TaskInfo,
    tol: float = 1e-6,
    max_iter: int = 5000,
    c: float = 1.0,
    stride: int = 1,
) -> dict[str, dict[str, float]]:
    """Metrics by modality subset (``"acc"``, ``"gyro"``, ``"acc+gyro"``) of per-step classifiers.

    For each subset: per-step features of its modalities concatenated (task order), standardised with
    the labelled share's statistics, a logistic regression fitted by L-BFGS on the labelled share's
    labelled steps, and the test stream scored: ``weighted_f1`` and ``accuracy`` are means over
    :data:`EVAL_WIN`-step windows (the reference's numbers); ``macro_f1`` and ``pooled_weighted_f1``
    are over all labelled test steps at once (a window holds few classes, so a per-window macro-F1
    says little). Unlabelled steps are neither trained on nor scored. The classifier is fitted on
    every ``stride``-th labelled step (at 50 Hz neighbouring steps' representations are nearly
    the same; L-BFGS's cost grows with the rows); every test step is scored.
    """
    names = [m for m in info.modality_names if m in labelled.signals and m in test.signals]
    feats_l = {m: encode_stream(labelled, featurize, m) for m in names}
    feats_t = {m: encode_stream(test, featurize, m) for m in names}
    rows_l = np.flatnonzero(labelled.labels != UNLABELLED)[::stride]
    rows_t = np.flatnonzero(test.labels != UNLABELLED)
    if len(rows_l) == 0 or len(rows_t) == 0:
        raise ValueError(
            "algorithm.eval_protocol: the reference protocol found no labelled step to train or test on"
        )
    y_l = labelled.labels[rows_l]
    out: dict[str, dict[str, float]] = {}
    for subset in info.subsets():
        ordered = [m for m in names if m in subset]
        if len(ordered) != len(subset):
            continue
        x_l = np.concatenate([feats_l[m][rows_l] for m in ordered], axis=1)
        x_t = np.concatenate([feats_t[m] for m in ordered], axis=1)
        pred, record = standardised_fit_predict(x_l, y_l, x_t, tol, max_iter, c)
        pooled = classification_metrics(test.labels[rows_t], pred[rows_t], info.num_classes)
        out[info.group(subset)] = {
            **window_scores(test, pred),
            "macro_f1": pooled["macro_f1"],
            "pooled_weighted_f1": pooled["weighted_f1"],
            **record,
        }
    return out
