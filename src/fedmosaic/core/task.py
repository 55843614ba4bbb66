"""The Task: data stored once, and every party's share of it as index arrays with a modality mask."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from fedmosaic.core.modality import ClientSpec, Modality, group_name
from fedmosaic.core.stream import ServerStreams

Batch = tuple[dict[str, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TaskInfo:
    """What an algorithm may know about a task without seeing its data."""

    name: str
    modalities: tuple[Modality, ...]
    num_classes: int
    class_names: tuple[str, ...]

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    def modality(self, name: str) -> Modality:
        """The modality called ``name``."""
        for m in self.modalities:
            if m.name == name:
                return m
        raise KeyError(f"task {self.name!r} has no modality {name!r} (it has {self.modality_names})")

    def subsets(self, held: frozenset[str] | None = None) -> list[frozenset[str]]:
        """Every non-empty subset of ``held`` (default: all modalities), singletons first."""
        names = [m for m in self.modality_names if held is None or m in held]
        out = [frozenset([n]) for n in names]
        if len(names) > 1:
            out.append(frozenset(names))
        return out

    def group(self, modalities: frozenset[str]) -> str:
        """Canonical name (``"image+text"``) of a modality set."""
        return group_name(modalities, self.modality_names)


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """A store slice as a model input: uint8 images to floats in [0, 1], integers to int64, else float32."""
    if array.dtype == np.uint8:  # images are stored as bytes to keep the store small
        return torch.from_numpy(array.astype(np.float32) / 255.0)
    if np.issubdtype(array.dtype, np.integer):
        return torch.from_numpy(array.astype(np.int64))
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


@dataclass
class View:
    """A subset of a task's samples: indices into its store and a per-sample modality mask.

    ``mask[i, j]`` says whether sample ``indices[i]`` has modality ``info.modalities[j]`` *for this
    party*. Batches contain a modality's key only for samples that have it: samples are grouped by
    mask pattern so an image-only party's batches hold no text tensor at all (never zero-filled).
    """

    info: TaskInfo
    store: dict[str, np.ndarray]
    labels_store: np.ndarray
    indices: np.ndarray
    mask: np.ndarray

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=np.int64)
        if self.mask.shape != (len(self.indices), len(self.info.modalities)):
            raise ValueError(f"mask shape {self.mask.shape} does not match {len(self.indices)} samples")

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> np.ndarray:
        return self.labels_store[self.indices]

    @property
    def modalities(self) -> frozenset[str]:
        """Modalities present in at least one sample of this view."""
        names = self.info.modality_names
        return frozenset(names[j] for j in range(len(names)) if self.mask[:, j].any())

    def restrict(self, modalities: frozenset[str]) -> View:
        """The same samples with every modality outside ``modalities`` masked out."""
        keep = np.array([m in modalities for m in self.info.modality_names], dtype=bool)
        mask = self.mask & keep[None, :]
        rows = mask.any(axis=1)
        return View(self.info, self.store, self.labels_store, self.indices[rows], mask[rows])

    def subset(self, rows: np.ndarray) -> View:
        """The view restricted to positions ``rows`` (not store indices)."""
        return View(self.info, self.store, self.labels_store, self.indices[rows], self.mask[rows])

    def batches(
        self, batch_size: int, rng: np.random.Generator | None = None, drop_singletons: bool = False
    ) -> Iterator[Batch]:
        """Yield ``(inputs, labels)`` batches; shuffled when ``rng`` is given.

        Samples are grouped by modality pattern, each group chunked, and the chunk order shuffled.
        ``drop_singletons`` skips batches of one sample (batch norm cannot train on them).
        """
        for idx, present in self.batch_indices(batch_size, rng, drop_singletons):
            yield self.inputs(idx, present), torch.from_numpy(self.labels_store[idx].astype(np.int64))

    def batch_indices(
        self, batch_size: int, rng: np.random.Generator | None = None, drop_singletons: bool = False
    ) -> Iterator[tuple[np.ndarray, tuple[str, ...]]]:
        """The batches of :meth:`batches` as ``(store indices, modality names present)``, nothing loaded."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        names = self.info.modality_names
        patterns, inverse = np.unique(self.mask, axis=0, return_inverse=True)
        chunks: list[tuple[int, np.ndarray]] = []
        for p in range(len(patterns)):
            if not patterns[p].any():
                continue
            rows = np.flatnonzero(inverse.reshape(-1) == p)
            if rng is not None:
                rows = rng.permutation(rows)
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                if drop_singletons and len(chunk) < 2:
                    continue
                chunks.append((p, chunk))
        order = rng.permutation(len(chunks)) if rng is not None else range(len(chunks))
        for k in order:
            p, rows = chunks[k]
            yield self.indices[rows], tuple(names[j] for j in range(len(names)) if patterns[p][j])

    def inputs(self, idx: np.ndarray, present: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """The model inputs of store samples ``idx``: one tensor per modality in ``present``."""
        return {m: to_tensor(self.store[m][idx]) for m in present}


@dataclass
class ClientData:
    """One client's data: its spec, its train and validation views, and the shared test set seen
    through the modalities it holds (for evaluating personal models)."""

    spec: ClientSpec
    train: View
    val: View
    test: View


@dataclass
class Task:
    """A data set split once from the seed into clients, proxy, labelled and test parts (disjoint)."""

    info: TaskInfo
    store: dict[str, np.ndarray]
    labels: np.ndarray
    clients: list[ClientData]
    proxy: View
    labelled: View
    test: View
    extras: dict[str, object] = field(default_factory=dict)
    # continuous recordings for the server (reference evaluation protocol); None: the data set has none
    streams: ServerStreams | None = None
    _by_id: dict[str, ClientData] = field(default_factory=dict, init=False, repr=False)

    @property
    def specs(self) -> list[ClientSpec]:
        return [c.spec for c in self.clients]

    def client(self, client_id: str) -> ClientData:
        """The client called ``client_id``."""
        if len(self._by_id) != len(self.clients):
            self._by_id = {c.spec.id: c for c in self.clients}
        if client_id not in self._by_id:
            raise KeyError(f"no client {client_id!r}")
        return self._by_id[client_id]

    def pooled_train(self) -> View:
        """All clients' training samples with their masks and training labels (the centralized upper
        bound's data; a label-noise scenario gives client training views their own label store)."""
        views = [c.train for c in self.clients]
        return View(
            self.info,
            self.store,
            views[0].labels_store if views else self.labels,
            np.concatenate([v.indices for v in views]),
            np.concatenate([v.mask for v in views]),
        )

    def data_summary(self) -> dict[str, object]:
        """Sizes of every part, the bad samples the loader skipped and the lost clients (natural owners
        left without a client: ``{id, group, reason}``) for the run summary."""
        skipped = list(self.extras.get("skipped", []))  # type: ignore[call-overload]
        # {class: test samples} of test classes no client trains on (data/tasks.py): accuracy 0 at best
        unheld = dict(self.extras.get("test_classes_without_clients", {}))  # type: ignore[call-overload]
        lost = list(self.extras.get("lost_clients", []))  # type: ignore[call-overload]
        return {
            "samples": len(self.labels),
            "client_train": sum(len(c.train) for c in self.clients),
            "client_val": sum(len(c.val) for c in self.clients),
            "proxy": len(self.proxy),
            "labelled": len(self.labelled),
            "test": len(self.test),
            "skipped": len(skipped),
            "skipped_examples": skipped[:5],
            "test_classes_without_clients": unheld,
            "lost_clients": lost,
            # effective counts of data/scenarios.py, only when one is set (default summaries unchanged)
            **({"scenarios": self.extras["scenarios"]} if "scenarios" in self.extras else {}),
        }

    def check_disjoint(self) -> None:
        """Raise if any two parts (clients' train/val, proxy, labelled, test) share a sample."""
        parts = {"proxy": self.proxy.indices, "labelled": self.labelled.indices, "test": self.test.indices}
        for c in self.clients:
            parts[f"{c.spec.id}/train"] = c.train.indices
            parts[f"{c.spec.id}/val"] = c.val.indices
        owner: dict[int, str] = {}
        for part, idx in parts.items():
            if len(np.unique(idx)) != len(idx):
                raise ValueError(f"part {part} lists a sample twice")
            for i in idx.tolist():
                if i in owner:
                    raise ValueError(f"sample {i} is in both {owner[i]} and {part}")
                owner[i] = part
