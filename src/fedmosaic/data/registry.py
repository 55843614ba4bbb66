"""Data sets by name: each has an options model, its modality names and a loader."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from fedmosaic.core.modality import Modality


@dataclass
class LoadedData:
    """A data set in memory, before it is split: one array per modality and one label per sample."""

    modalities: tuple[Modality, ...]
    store: dict[str, np.ndarray]
    labels: np.ndarray
    class_names: tuple[str, ...]
    extras: dict[str, object]


@dataclass(frozen=True)
class DatasetEntry:
    """How to load one data set: options class, modality names (without loading), loader."""

    name: str
    options: type[BaseModel]
    modality_names: Callable[[BaseModel], tuple[str, ...]]
    load: Callable[[BaseModel, Path | None, int], LoadedData]
    needs_data_dir: bool = False


_DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(entry: DatasetEntry) -> None:
    """Add a data set to the registry (a plug-in may call this too)."""
    _DATASETS[entry.name] = entry


def get_dataset(name: str) -> DatasetEntry:
    """The registered data set ``name``; ``KeyError`` lists the known ones."""
    _load_builtins()
    if name not in _DATASETS:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(sorted(_DATASETS))}")
    return _DATASETS[name]


def dataset_names() -> list[str]:
    """Names of every registered data set."""
    _load_builtins()
    return sorted(_DATASETS)


def _load_builtins() -> None:
    from fedmosaic.data import synthetic_task  # noqa: F401  (registers itself)
