"""Registers the synthetic image+text task (``task.dataset = "synthetic"``)."""

from __future__ import annotations

from pydantic import BaseModel

from fedmosaic.core.modality import Modality
from fedmosaic.data import synthetic
from fedmosaic.data.registry import DatasetEntry, LoadContext, LoadedData, register_dataset
from fedmosaic.data.text import encode, word_tokenizer


def _modality_names(_: BaseModel) -> tuple[str, ...]:
    return ("image", "text")


def _modalities(options: BaseModel) -> tuple[Modality, ...]:
    assert isinstance(options, synthetic.SyntheticOptions)
    return (
        Modality("image", "image", (3, options.image_size, options.image_size)),
        Modality("text", "text", (options.max_tokens,)),
    )


def load(options: BaseModel, ctx: LoadContext) -> LoadedData:
    """Generate the task's samples from ``ctx.seed`` (nothing is read from disk)."""
    assert isinstance(options, synthetic.SyntheticOptions)
    samples = synthetic.generate(options, ctx.seed)
    tokenizer = word_tokenizer(synthetic.vocabulary())
    tokens = encode(tokenizer, samples.captions, options.max_tokens)
    size = options.image_size
    return LoadedData(
        modalities=(
            Modality("image", "image", (3, size, size)),
            Modality("text", "text", (options.max_tokens,), vocab_size=len(tokenizer)),
        ),
        store={"image": samples.images, "text": tokens},
        labels=samples.labels,
        class_names=synthetic.class_names(),
        extras={"captions": samples.captions},
    )


register_dataset(
    DatasetEntry("synthetic", synthetic.SyntheticOptions, _modality_names, load, modalities=_modalities)
)
