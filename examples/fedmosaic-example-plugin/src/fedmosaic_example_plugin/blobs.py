"""A generated data set (``task.dataset = "blobs"``): two Gaussian-blob modalities, tiny and fast.

Each class has one centre per modality; a sample is its class's centres plus Gaussian noise, in
both modalities ``a`` and ``b`` (kind ``embedding``, shape ``(dim,)``). ``spread`` sets how much the
blobs overlap, so either modality alone is informative and both together more so.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fedmosaic.core.modality import Modality
from fedmosaic.data.registry import DatasetEntry, LoadContext, LoadedData, register_dataset

MODALITIES = ("a", "b")


class BlobsOptions(BaseModel):
    """``task.options`` of the blobs data set."""

    model_config = ConfigDict(extra="forbid")  # a misspelt option is an error, as for fedmosaic's own

    n_samples: int = Field(300, ge=20, description="samples, split evenly over the classes")
    n_classes: int = Field(3, ge=2)
    dim: int = Field(8, ge=1, description="features per modality")
    spread: float = Field(1.0, gt=0, description="noise standard deviation; the centres are N(0, 1)")


def modality_names(_: BaseModel) -> tuple[str, ...]:
    """The modality names, known without generating anything."""
    return MODALITIES


def load(options: BaseModel, ctx: LoadContext) -> LoadedData:
    """Generate the samples from ``ctx.seed`` (the run's seed): the same seed, the same data."""
    assert isinstance(options, BlobsOptions)
    rng = np.random.default_rng(ctx.seed)
    labels = np.arange(options.n_samples, dtype=np.int64) % options.n_classes
    store = {}
    for name in MODALITIES:
        centres = rng.standard_normal((options.n_classes, options.dim))
        noise = options.spread * rng.standard_normal((options.n_samples, options.dim))
        store[name] = (centres[labels] + noise).astype(np.float32)
    return LoadedData(
        modalities=tuple(Modality(name, "embedding", (options.dim,)) for name in MODALITIES),
        store=store,
        labels=labels,
        class_names=tuple(f"blob {k}" for k in range(options.n_classes)),
    )


register_dataset(DatasetEntry("blobs", BlobsOptions, modality_names, load))
