"""Data sets by name: each has an options model, its modality names and a loader.

Built-ins and the ``fedmosaic.datasets`` entry points load on first lookup (:mod:`fedmosaic.core.plugins`).

A loader reads one source format and returns a :class:`LoadedData`: one array per modality (raw
values; the task builder normalises sensor channels from training data only), one label per
sample, and the structure the splitter must respect (natural owners, blocks that must not be cut,
samples whose role the data fixes, per-sample modality presence).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel

from fedmosaic.core.errors import DataError
from fedmosaic.core.modality import Modality
from fedmosaic.core.plugins import Registry
from fedmosaic.core.stream import Recording

# What a sample's role in the split is, when the data itself fixes it (``LoadedData.role``).
ROLE_FREE, ROLE_TEST, ROLE_PROXY, ROLE_LABELLED, ROLE_VAL = 0, 1, 2, 3, 4


@dataclass
class LoadContext:
    """What a loader gets besides its options: where the data is, the seed, the bad-sample policy.

    Loaders report every bad sample through :meth:`bad`, which raises :class:`DataError` under the
    ``"error"`` policy and records the sample as skipped under ``"skip"``; the run summary counts them.
    """

    data_dir: Path | None = None
    seed: int = 0
    on_bad_sample: Literal["error", "skip"] = "error"
    skipped: list[str] = field(default_factory=list)

    def bad(self, where: str | Path, reason: str, line: int | None = None) -> None:
        """Report a bad sample at ``where`` (a file, optionally a 1-based ``line``)."""
        place = f"{where}:{line}" if line is not None else str(where)
        if self.on_bad_sample == "error":
            raise DataError(f'{place}: {reason} (set task.on_bad_sample = "skip" to skip such samples)')
        self.skipped.append(f"{place}: {reason}")

    def require_dir(self, dataset: str) -> Path:
        """``data_dir``, which must exist; a one-line error names ``task.data_dir`` otherwise."""
        if self.data_dir is None:
            raise DataError(f"task.data_dir: data set {dataset!r} needs a data folder")
        path = Path(self.data_dir).expanduser()
        if not path.is_dir():
            raise DataError(f"task.data_dir: {str(path)!r} is not a folder")
        return path


@dataclass
class LoadedData:
    """A data set in memory, before it is split.

    - ``store[m]``: one array per modality, first axis = sample. A text modality may instead come as
      raw strings in ``texts[m]`` (the task builder tokenises them with the model's tokenizer).
    - ``groups``/``group_names``: the natural owner of each sample (user, speaker, subject, folder
      client); ``partition = "natural"`` makes one client per owner.
    - ``blocks``: samples with the same block id are never put in different parts (overlapping
      windows of one recording segment; captions of one photo).
    - ``role``: ``ROLE_*`` per sample where the data fixes it (official test users, a client's own
      ``val/`` folder); ``ROLE_FREE`` elsewhere.
    - ``present``: ``(n, n_modalities)`` bool, which modalities each sample really has (a folder
      client without text); ``None`` = all.
    """

    modalities: tuple[Modality, ...]
    store: dict[str, np.ndarray]
    labels: np.ndarray
    class_names: tuple[str, ...]
    extras: dict[str, object] = field(default_factory=dict)
    texts: dict[str, list[str]] = field(default_factory=dict)
    groups: np.ndarray | None = None
    group_names: tuple[str, ...] = ()
    blocks: np.ndarray | None = None
    role: np.ndarray | None = None
    present: np.ndarray | None = None
    skipped: list[str] = field(default_factory=list)
    # continuous recordings with per-step labels (raw, unstandardised), for the reference protocol
    recordings: list[Recording] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def check(self) -> None:
        """Raise ``ValueError`` if the parts disagree in length or shape (a loader bug, not bad data)."""
        n = len(self.labels)
        for m in self.modalities:
            if m.name in self.texts:
                data_len = len(self.texts[m.name])
            elif m.name in self.store:
                data_len = len(self.store[m.name])
                if self.store[m.name].shape[1:] != tuple(m.shape):
                    raise ValueError(
                        f"modality {m.name!r}: store shape {self.store[m.name].shape[1:]} != {m.shape}"
                    )
            else:
                raise ValueError(f"modality {m.name!r} has neither a store array nor texts")
            if data_len != n:
                raise ValueError(f"modality {m.name!r} has {data_len} samples for {n} labels")
        for name in ("groups", "blocks", "role"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries for {n} samples")
        if (
            self.groups is not None
            and self.group_names
            and self.groups.max(initial=-1) >= len(self.group_names)
        ):
            raise ValueError("groups holds an id without a name in group_names")
        if self.present is not None and self.present.shape != (n, len(self.modalities)):
            raise ValueError(f"present has shape {self.present.shape}, expected {(n, len(self.modalities))}")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError("a label lies outside class_names")


@dataclass(frozen=True)
class DatasetEntry:
    """How to load one data set: options class, modality names (without loading), loader."""

    name: str
    options: type[BaseModel]
    modality_names: Callable[[BaseModel], tuple[str, ...]]
    load: Callable[[BaseModel, LoadContext], LoadedData]
    needs_data_dir: bool = False
    natural_unit: str = ""  # what one natural client is ("user", "speaker", ...); "" = no natural split
    # The modalities the loader returns (kind and shape) from the options alone, without reading data:
    # lets an algorithm's fit to the data be checked before loading. None: known only after loading.
    modalities: Callable[[BaseModel], tuple[Modality, ...]] | None = None


# Modules under fedmosaic.data that register a built-in data set when imported.
_BUILTIN_MODULES = ("synthetic_task", "uci_hapt", "uci_har", "mhealth", "fsdd_digits", "coco", "folder")
# Each built-in's name and the module registering it: a run imports only its own data set's loader.
_DECLARED = {
    "synthetic": "synthetic_task",
    "uci-hapt": "uci_hapt",
    "uci-har": "uci_har",
    "mhealth": "mhealth",
    "fsdd-digits": "fsdd_digits",
    "coco": "coco",
    "folder": "folder",
}


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(f"fedmosaic.data.{module}")


DATASETS: Registry[DatasetEntry] = Registry(
    "data set",
    "fedmosaic.datasets",
    _load_builtins,
    declared={name: f"fedmosaic.data.{module}" for name, module in _DECLARED.items()},
)


def register_dataset(entry: DatasetEntry) -> None:
    """Add a data set to the registry (a plug-in's module calls this when imported).

    Another entry (a loader from another module) under a taken name is a one-line
    :class:`~fedmosaic.core.errors.PluginError`.
    """
    if not isinstance(entry, DatasetEntry):
        raise TypeError(f"register_dataset takes a DatasetEntry, got {entry!r}")
    DATASETS.add(entry.name, entry, by=entry.load)


def get_dataset(name: str) -> DatasetEntry:
    """The registered data set ``name``; ``KeyError`` lists the known ones."""
    return DATASETS.get(name)


def dataset_names() -> list[str]:
    """Names of every registered data set."""
    return DATASETS.names()


def ensure_loaded() -> None:
    """Load the built-ins and the ``fedmosaic.datasets`` entry points now (normally on first lookup)."""
    DATASETS.ensure_loaded()
