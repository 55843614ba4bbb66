"""Decode an image file into the store's format: uint8 ``(C, S, S)``, centre-cropped and resized.

Pillow does the work: ``Image.draft`` lets the JPEG decoder scale down while decoding (much faster
for photos far larger than ``S``), and ``ImageOps.fit`` crops the largest centred square and resizes
it. EXIF orientation is not applied, like torchvision's ``decode_jpeg`` default and like COCO, whose
annotations refer to the stored pixel grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from fedmosaic.data.registry import DataError

_MODES = {1: "L", 3: "RGB"}


class ImageReadError(DataError):
    """An image file that is missing or does not decode; ``path`` and ``reason`` kept apart so that a
    loader can hand them to ``LoadContext.bad``."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def read_image(path: str | Path, size: int, channels: Literal[1, 3] = 3) -> np.ndarray:
    """Decode ``path`` to uint8 ``(channels, size, size)``: centre crop to a square, then resize.

    Any colour mode is converted (palette, RGBA and CMYK to RGB, dropping alpha; anything to
    greyscale for ``channels=1``). Raises :class:`ImageReadError` (one line naming the file) when the
    file is missing, truncated or not an image Pillow can decode.
    """
    path = Path(path)
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if not path.is_file():
        raise ImageReadError(path, "image file not found")
    try:
        with Image.open(path) as img:
            img.draft(_MODES[channels], (size, size))  # JPEG only: decode at a reduced scale >= size
            img = img.convert(_MODES[channels])  # forces the full decode, so truncation surfaces here
            fitted = ImageOps.fit(img, (size, size), method=Image.Resampling.BILINEAR)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ... by format
        raise ImageReadError(path, f"cannot decode image ({_one_line(exc)})") from exc
    array = np.asarray(fitted, dtype=np.uint8)
    if channels == 1:
        return array[None].copy()
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no detail"
    return f"{type(exc).__name__}: {text}"
