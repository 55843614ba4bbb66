"""Linear evaluation of a frozen encoder: a fresh linear probe per modality subset, trained on the
server's labelled set and scored on the test set (the "generalised classifier" of FedMEKT).

The probe is an L2 logistic regression trained by L-BFGS to a stated gradient tolerance (an earlier
version took 30 Adam epochs, about 200 steps, and stopped far from convergence: the same features
scored 1 to 18 points higher when trained to convergence, by an amount that varied with the seed:
issue 18).

The probe is created, trained and dropped inside one call: nothing of it survives to the next
evaluation, so a round's numbers measure that round's encoder alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from threadpoolctl import threadpool_limits

from fedmosaic.core.metrics import classification_metrics
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
        feats = featurize(to_tensor(view.store[modality][view.indices[chunk]]), modality).cpu().numpy()
        if out is None:
            out = np.full((len(view), feats.shape[1]), np.nan, dtype=np.float32)
        out[chunk] = feats
    return out if out is not None else np.full((len(view), 1), np.nan, dtype=np.float32)


def _complete_rows(view: View, subset: frozenset[str]) -> np.ndarray:
    cols = [view.info.modality_names.index(m) for m in subset]
    return np.flatnonzero(view.mask[:, cols].all(axis=1))


def window_statistics(x: torch.Tensor, modality: str) -> torch.Tensor:
    """The raw-statistics control: mean, std, min and max over time of every channel, ``(B, 4 * C)``.

    ``x`` is ``(B, C, T)``; no learning involved, so a learned encoder that scores below these
    features under the same probe and labels has learnt less than twelve numbers per window hold.
    """
    return torch.cat([x.mean(2), x.std(2), x.amin(2), x.amax(2)], dim=1)


def fit_probe(
    x: np.ndarray, y: np.ndarray, tol: float, max_iter: int, c: float
) -> tuple[LogisticRegression, dict[str, float]]:
    """Multinomial L2 logistic regression by L-BFGS (scikit-learn) on standardised features.

    Returns the fitted model and its training record: ``probe_steps`` (L-BFGS iterations),
    ``probe_train_loss`` (mean cross-entropy on ``x``, without the penalty) and ``probe_converged``
    (1.0 when the gradient tolerance was reached before ``max_iter``). Deterministic: no seed.
    """
    model = LogisticRegression(solver="lbfgs", tol=tol, max_iter=max_iter, C=c)
    # One BLAS thread: each L-BFGS step is a few small products, and OpenBLAS's threads cost more in
    # synchronisation than they save (measured: 6.5-8x the CPU seconds with 2 threads on a loaded 2-core
    # machine, 6,300 x 8 features)
    with warnings.catch_warnings(), threadpool_limits(1):
        # reported once per evaluation by linear_evaluation's caller, not once per subset by sklearn
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    steps = int(np.max(model.n_iter_))
    proba = model.predict_proba(x)
    record = {
        "probe_steps": float(steps),
        "probe_train_loss": float(log_loss(y, proba, labels=model.classes_)),
        "probe_converged": float(steps < max_iter),
    }
    return model, record


def standardised_fit_predict(
    x_l: np.ndarray, y_l: np.ndarray, x_t: np.ndarray, tol: float, max_iter: int, c: float
) -> tuple[np.ndarray, dict[str, float]]:
    """Predictions for ``x_t`` of a probe fitted on ``(x_l, y_l)``, and the probe's training record.

    Both feature sets are standardised with the labelled set's statistics (an affine map, so the
    probe stays linear in the encoder's output); with one label seen there is nothing to learn and
    that label is predicted.
    """
    x_l, x_t = x_l.astype(np.float64), x_t.astype(np.float64)
    mean, std = x_l.mean(0), x_l.std(0) + 1e-6
    x_l, x_t = (x_l - mean) / std, (x_t - mean) / std
    if len(np.unique(y_l)) < 2:
        return np.full(len(x_t), y_l[0]), {
            "probe_steps": 0.0,
            "probe_train_loss": 0.0,
            "probe_converged": 1.0,
        }
    probe, record = fit_probe(x_l, y_l, tol, max_iter, c)
    return probe.predict(x_t), record


PROBE_KEYS = ("probe_steps", "probe_train_loss", "probe_converged")


def linear_evaluation(
    featurize: Featurizer,
    labelled: View,
    test: View,
    info: TaskInfo,
    tol: float = 1e-6,
    max_iter: int = 5000,
    c: float = 1.0,
) -> dict[str, dict[str, float]]:
    """Metrics by subset name (``"acc"``, ``"gyro"``, ``"acc+gyro"``) of fresh linear probes.

    For each non-empty subset of the task's modalities, the features of its modalities are
    concatenated (task order), standardised with the labelled set's statistics (an affine map, so the
    probe stays linear in the encoder's output) and a new logistic regression is trained by L-BFGS to
    the gradient tolerance ``tol`` (at most ``max_iter`` iterations) on the labelled samples that
    have every modality of the subset; it is scored on the test samples that have them. Besides
    accuracy, macro- and weighted-F1, each subset's dict holds the probe's training record
    (:data:`PROBE_KEYS`): whether ``tol`` was reached is the caller's to report.
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
        y_l = labelled.labels[rows_l].astype(np.int64)
        pred, record = standardised_fit_predict(x_l, y_l, x_t, tol, max_iter, c)
        out[group] = {**classification_metrics(test.labels[rows_t], pred, info.num_classes), **record}
    return out


def unconverged(results: dict[str, dict[str, float]]) -> list[str]:
    """Keys of ``results`` whose probe stopped at ``max_iter`` before reaching its tolerance."""
    return [k for k, v in results.items() if v.get("probe_converged", 1.0) < 1.0]
