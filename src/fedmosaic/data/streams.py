"""The server's continuous streams for the reference evaluation protocol (docs/fedmekt.md).

The reference (``yuchenzhao/iotdi22-mmfl``, ``src/utils.py::split_server_train``; FedMEKT's servers
take it over) gives the server its labelled share this way: the training recordings end to end are
cut into ``N_LABEL_DIV`` equal slices (9 for mHealth) and ``round(N_LABEL_DIV * 0.11)`` of them (1) are
drawn at random, again until the share holds every class of the test stream. The test stream is the
held-out users' recordings. Here the same, from the data set's recordings: the recordings the data
set fixes as test (HAPT's official test users) form the test stream; the others, in load order, are
cut into 9 slices. As in the reference, that share overlaps the recordings clients train on (without
labels); the windowed labelled set stays disjoint from everything.

Signals are standardised with the task's client statistics (the windows' normalisation), so the
encoder sees the scale it was trained on (the reference z-scored each subject on its own).
"""

from __future__ import annotations

import numpy as np

from fedmosaic.core.stream import UNLABELLED, Recording, ServerStreams, Stream, concatenate
from fedmosaic.core.task import View

N_LABEL_DIV = 9  # the reference's N_LABEL_DIV_MHEALTH: the training stream is cut into 9 slices
SUPERVISED_RATIO = 0.11  # the reference's train_supervised_ratio: round(9 * 0.11) = 1 slice is labelled
MAX_DRAWS = 1000  # the reference redraws until the share has every test class; stop somewhere


def _standardised(rec: Recording, stats: dict[str, dict[str, list[float]]]) -> Stream:
    signals = {}
    for m, x in rec.signals.items():
        s = stats.get(m)
        mean = np.asarray(s["mean"]) if s else 0.0
        std = np.asarray(s["std"]) if s else 1.0
        signals[m] = ((x - mean) / std).astype(np.float32)
    return Stream(signals, rec.labels.astype(np.int64), np.array([0, len(rec.labels)]))


def _slice(stream: Stream, lo: int, hi: int) -> Stream:
    inner = stream.bounds[(stream.bounds > lo) & (stream.bounds < hi)]
    return Stream(
        {m: s[lo:hi] for m, s in stream.signals.items()},
        stream.labels[lo:hi],
        np.concatenate([[0], inner - lo, [hi - lo]]),
    )


def labelled_share(train: Stream, test_classes: set[int], rng: np.random.Generator) -> Stream:
    """The reference's labelled share of ``train``: ``round(9 * 0.11)`` of 9 equal slices, drawn until
    they hold every class in ``test_classes`` (after :data:`MAX_DRAWS` draws, the draw holding most)."""
    n_take = max(1, round(N_LABEL_DIV * SUPERVISED_RATIO))
    edges = np.linspace(0, len(train), N_LABEL_DIV + 1).astype(np.int64)
    best: tuple[int, np.ndarray] | None = None
    for _ in range(MAX_DRAWS):
        picked = np.sort(rng.choice(N_LABEL_DIV, n_take, replace=False))
        held = set()
        for k in picked:
            held |= set(np.unique(train.labels[edges[k] : edges[k + 1]]).tolist())
        covered = len(test_classes & held)
        if best is None or covered > best[0]:
            best = (covered, picked)
        if covered == len(test_classes):
            break
    assert best is not None
    return concatenate([_slice(train, int(edges[k]), int(edges[k + 1])) for k in best[1]])


def streams_from_recordings(
    recordings: list[Recording], stats: dict[str, dict[str, list[float]]], rng: np.random.Generator
) -> ServerStreams | None:
    """The server's streams from the data set's recordings; None when it fixes no test recording."""
    test = [_standardised(r, stats) for r in recordings if r.test]
    train = [_standardised(r, stats) for r in recordings if not r.test]
    if not test or not train:
        return None
    test_stream = concatenate(test)
    classes = set(np.unique(test_stream.labels).tolist()) - {UNLABELLED}
    return ServerStreams(labelled_share(concatenate(train), classes, rng), test_stream, "recordings")


def stream_from_windows(view: View) -> Stream:
    """A view's windows end to end as one recording of bouts, every step labelled with its window's label.

    The stand-in for data sets without continuous recordings (synthetic tasks, window-only loaders):
    the reference protocol's per-step classifier and 2,000-step scoring then run on it.
    """
    names = [m.name for m in view.info.modalities if m.kind in ("timeseries", "audio")]
    j = {m: view.info.modality_names.index(m) for m in names}
    rows = np.flatnonzero(view.mask[:, [j[m] for m in names]].all(axis=1))
    windows = {m: view.store[m][view.indices[rows]] for m in names}  # (N, C, T)
    steps = next(iter(windows.values())).shape[2] if len(rows) else 0
    signals = {m: w.transpose(0, 2, 1).reshape(-1, w.shape[1]).astype(np.float32) for m, w in windows.items()}
    labels = np.repeat(view.labels[rows].astype(np.int64), steps)
    return Stream(signals, labels, np.array([0, len(labels)], dtype=np.int64))
