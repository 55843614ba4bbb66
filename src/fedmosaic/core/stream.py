"""Continuous recordings with a label per time step: what the reference evaluation protocol of the
autoencoder family reads (``algorithm.eval_protocol = "reference"``, docs/fedmekt.md).

A :class:`Stream` is one or more recordings laid end to end: ``signals[m]`` is ``(T, C)`` float32,
``labels`` is ``(T,)`` int64 with ``-1`` on unlabelled steps, and ``bounds`` holds the first step of
every recording plus ``T`` (an encoder restarts its state at a bound: two users' recordings are not
one sequence).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNLABELLED = -1


@dataclass(frozen=True)
class Stream:
    """Recordings end to end (see the module doc)."""

    signals: dict[str, np.ndarray]
    labels: np.ndarray
    bounds: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.labels)
        if any(len(s) != n for s in self.signals.values()):
            raise ValueError("every signal of a stream needs one row per label")
        b = self.bounds
        if len(b) < 2 or b[0] != 0 or b[-1] != n or np.any(np.diff(b) <= 0):
            raise ValueError(f"stream bounds must rise from 0 to {n}, got {b.tolist()}")

    def __len__(self) -> int:
        return len(self.labels)

    def chunks(self, length: int) -> list[tuple[int, int]]:
        """``(start, end)`` of consecutive pieces of at most ``length`` steps, never across a bound."""
        out = []
        for lo, hi in zip(self.bounds[:-1], self.bounds[1:], strict=True):
            out += [(int(s), int(min(s + length, hi))) for s in range(int(lo), int(hi), length)]
        return out


def concatenate(streams: list[Stream]) -> Stream:
    """The recordings of ``streams`` end to end, in order."""
    names = list(streams[0].signals)
    offsets = np.cumsum([0] + [len(s) for s in streams])
    bounds = np.unique(np.concatenate([s.bounds + o for s, o in zip(streams, offsets, strict=False)]))
    return Stream(
        {m: np.concatenate([s.signals[m] for s in streams]) for m in names},
        np.concatenate([s.labels for s in streams]),
        bounds,
    )


@dataclass(frozen=True)
class ServerStreams:
    """The server's labelled share and test stream under the reference protocol."""

    labelled: Stream
    test: Stream
    origin: str  # "recordings" (the data set's continuous recordings) or "windows" (windows end to end)


@dataclass(frozen=True)
class Recording:
    """One continuous recording of a data set, before the task is split: ``(T, C)`` raw signals per
    modality, ``(T,)`` step labels (``-1`` unlabelled), its owner, and whether the data set fixes it
    as test data (an official test user)."""

    signals: dict[str, np.ndarray]
    labels: np.ndarray
    owner: int
    test: bool
