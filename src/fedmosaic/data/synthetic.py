"""The embedded default task: procedural images and captions whose label needs both.

Each sample is an object with a *shape* (circle, square, triangle, cross) and a *material*
(wood, metal, glass); the label is the pair. The image shows the shape clearly but hints the
material only through an unreliable texture; the caption names the material reliably but the shape
only sometimes. So an image-only or text-only party is measurably worse than one holding both.
Everything is generated offline from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

SHAPES = ("circle", "square", "triangle", "cross")
MATERIALS = ("wood", "metal", "glass")
_MATERIAL_WORDS = {
    "wood": ("wooden", "oak", "timber"),
    "metal": ("metal", "steel", "iron"),
    "glass": ("glass", "crystal", "transparent"),
}
_SHAPE_WORDS = {
    "circle": ("circle", "disc", "ring"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "wedge", "pyramid"),
    "cross": ("cross", "plus", "star"),
}
_GENERIC = ("object", "thing", "item", "piece")
_COLOURS = ("red", "green", "blue", "yellow", "white", "grey", "orange", "purple")
_SIZES = ("small", "large", "tiny", "big", "medium")
_PLACES = ("on a table", "in a box", "on the floor", "near a wall", "in the light", "")
_TEMPLATE_WORDS = ("a", "an", "photo", "of", "showing", "there", "is")


class SyntheticOptions(BaseModel):
    """Options of the ``synthetic`` data set (``[task.options]``)."""

    model_config = ConfigDict(extra="forbid")
    n_samples: int = Field(3000, ge=20, description="samples generated in all (clients + server sets)")
    image_size: int = Field(24, ge=12, le=128, description="square image side in pixels")
    texture_reliability: float = Field(
        0.4, ge=0, le=1, description="P(image texture shows the true material)"
    )
    caption_reliability: float = Field(0.9, ge=0, le=1, description="P(caption names the true material)")
    shape_mention: float = Field(0.3, ge=0, le=1, description="P(caption names the true shape)")
    pixel_noise: float = Field(0.08, ge=0, le=1, description="std of Gaussian pixel noise (0-1 scale)")
    max_tokens: int = Field(12, ge=6, le=64, description="caption length in tokens, padded")


@dataclass
class SyntheticSamples:
    images: np.ndarray  # (n, 3, S, S) uint8
    captions: list[str]
    labels: np.ndarray  # (n,) int64: shape * len(MATERIALS) + material
    shapes: np.ndarray
    materials: np.ndarray


def class_names() -> tuple[str, ...]:
    """``"circle/wood"`` ... in label order."""
    return tuple(f"{s}/{m}" for s in SHAPES for m in MATERIALS)


def vocabulary() -> list[str]:
    """Every word a caption can contain (the tokenizer is built from it, offline)."""
    words: set[str] = set(_GENERIC) | set(_COLOURS) | set(_SIZES) | set(_TEMPLATE_WORDS)
    for group in (*_MATERIAL_WORDS.values(), *_SHAPE_WORDS.values()):
        words.update(group)
    for place in _PLACES:
        words.update(place.split())
    return sorted(words)


def _shape_mask(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = rng.uniform(0.25, 0.4) * size
    cy, cx = rng.uniform(r, size - r, size=2)
    dy, dx = (yy - cy) / r, (xx - cx) / r
    if shape == "circle":
        return dy**2 + dx**2 <= 1.0
    if shape == "square":
        return (np.abs(dy) <= 0.8) & (np.abs(dx) <= 0.8)
    if shape == "triangle":
        return (dy <= 0.8) & (dy >= -0.9 + 1.7 * np.abs(dx))
    return ((np.abs(dy) <= 0.3) & (np.abs(dx) <= 1.0)) | ((np.abs(dx) <= 0.3) & (np.abs(dy) <= 1.0))


def _texture(material: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if material == "wood":  # stripes at a random phase
        period = rng.uniform(3.0, 5.0)
        return 0.5 + 0.5 * np.sin(2 * np.pi * (yy + rng.uniform(0, period)) / period)
    if material == "metal":  # smooth diagonal sheen
        return np.clip((xx + yy) / (2 * size) + rng.uniform(-0.2, 0.2), 0, 1)
    cell = int(rng.integers(2, 4))  # glass: checkerboard
    return (((yy // cell) + (xx // cell)) % 2).astype(np.float32)


def _caption(shape: int, material: int, opts: SyntheticOptions, rng: np.random.Generator) -> str:
    true_m = MATERIALS[material]
    said_m = true_m if rng.random() < opts.caption_reliability else MATERIALS[rng.integers(len(MATERIALS))]
    noun = (
        str(rng.choice(_SHAPE_WORDS[SHAPES[shape]]))
        if rng.random() < opts.shape_mention
        else str(rng.choice(_GENERIC))
    )
    words = [
        "a",
        str(rng.choice(_SIZES)),
        str(rng.choice(_COLOURS)),
        str(rng.choice(_MATERIAL_WORDS[said_m])),
        noun,
    ]
    if rng.random() < 0.5:
        words = ["photo", "of", *words]
    place = str(rng.choice(_PLACES))
    return " ".join([*words, *place.split()])


def generate(opts: SyntheticOptions, seed: int) -> SyntheticSamples:
    """Generate ``opts.n_samples`` labelled image+caption pairs from ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    n, size = opts.n_samples, opts.image_size
    shapes = rng.integers(len(SHAPES), size=n)
    materials = rng.integers(len(MATERIALS), size=n)
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    captions: list[str] = []
    for i in range(n):
        shown = materials[i] if rng.random() < opts.texture_reliability else rng.integers(len(MATERIALS))
        mask = _shape_mask(SHAPES[shapes[i]], size, rng)
        texture = _texture(MATERIALS[shown], size, rng)
        colour = rng.uniform(0.3, 1.0, size=3)[:, None, None]
        background = rng.uniform(0.0, 0.25, size=(3, 1, 1))
        img = np.where(mask[None], colour * (0.55 + 0.45 * texture[None]), background)
        img = img + rng.normal(0.0, opts.pixel_noise, size=img.shape)
        images[i] = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
        captions.append(_caption(int(shapes[i]), int(materials[i]), opts, rng))
    labels = (shapes * len(MATERIALS) + materials).astype(np.int64)
    return SyntheticSamples(images, captions, labels, shapes, materials)
