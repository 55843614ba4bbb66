"""Classification metrics (scikit-learn) and their aggregation over clients and groups."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from fedmosaic.core.message import Message
from fedmosaic.core.modality import ClientSpec

METRIC_NAMES = ("accuracy", "macro_f1", "weighted_f1")


def preload() -> None:
    """Import scikit-learn's metrics now (about 0.9 s), not at a run's first evaluation.

    Engines call it while they set up: the import then happens before the first round's clock
    starts and before worker processes fork (they share it, rather than each paying it in round 1).
    """
    import sklearn.metrics  # noqa: F401


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy, macro-F1 and weighted-F1 over all ``num_classes`` labels.

    One scikit-learn call gives the per-class F1 and supports; the two averages are taken from it as
    ``f1_score(average="macro" | "weighted")`` takes them (the same floats, bit for bit: the
    ``tests/test_metrics.py`` property test), a third of the time of three calls, which personalised
    baselines pay for every client and modality subset in every evaluated round.
    """
    if len(y_true) == 0:
        raise ValueError("cannot compute metrics on an empty evaluation set")
    # lazy: scikit-learn takes ~0.9 s to import, and listing or checking algorithms never scores
    from sklearn.metrics import precision_recall_fscore_support

    labels = list(range(num_classes))
    _, _, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    return {
        "accuracy": float(np.mean(np.asarray(y_true) == np.asarray(y_pred))),
        "macro_f1": float(np.average(f1)),
        "weighted_f1": float(np.average(f1, weights=support)) if support.sum() else 0.0,
    }


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """Unweighted mean of metric dicts (each client counts once)."""
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def flatten_eval(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """``{"image": {"accuracy": ..}}`` -> ``{"image/accuracy": ..}`` (flat Message metadata)."""
    return {
        f"{subset}/{name}": value for subset, metrics in results.items() for name, value in metrics.items()
    }


def unflatten_eval(meta: dict[str, object]) -> dict[str, dict[str, float]]:
    """Inverse of :func:`flatten_eval`; ignores keys without a ``/``."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for key, value in meta.items():
        if "/" in key:
            subset, name = key.rsplit("/", 1)
            out[subset][name] = float(value)  # type: ignore[arg-type]
    return dict(out)


def group_and_overall(
    per_client: dict[str, dict[str, float]], specs: dict[str, ClientSpec]
) -> dict[str, dict[str, float]]:
    """Mean of each client's own-modality metrics per group, and over all clients (``overall``)."""
    by_group: dict[str, list[dict[str, float]]] = defaultdict(list)
    for cid, metrics in per_client.items():
        by_group[specs[cid].group].append(metrics)
    out = {f"group/{g}": mean_metrics(rows) for g, rows in sorted(by_group.items())}
    out["overall"] = mean_metrics(list(per_client.values()))
    return out


def aggregate_client_evaluations(
    replies: dict[str, Message], specs: dict[str, ClientSpec]
) -> dict[str, dict[str, float]]:
    """Combine clients' self-evaluations (personal models) into subset, group and overall metrics.

    Each reply's meta holds ``"<subset>/<metric>"`` for every subset of the client's modalities.
    ``test/<subset>`` is the mean over clients that can test on that subset; a client's own group
    metric is its result on the full set of modalities it holds.
    """
    by_subset: dict[str, list[dict[str, float]]] = defaultdict(list)
    own: dict[str, dict[str, float]] = {}
    for cid, reply in replies.items():
        results = unflatten_eval(reply.meta)
        for subset, metrics in results.items():
            by_subset[subset].append(metrics)
        own[cid] = results[specs[cid].group]
    out = {f"test/{s}": mean_metrics(rows) for s, rows in sorted(by_subset.items())}
    out.update(group_and_overall(own, specs))
    return out


def global_model_groups(
    subset_results: dict[str, dict[str, float]], specs: list[ClientSpec]
) -> dict[str, dict[str, float]]:
    """Group and overall metrics when every client deploys the same global model.

    A client of group g would use the global model on the modalities it holds, so its metric is the
    global model's ``test/g`` result; ``overall`` is the mean over all clients.
    """
    per_client = {s.id: subset_results[f"test/{s.group}"] for s in specs}
    return group_and_overall(per_client, {s.id: s for s in specs})
