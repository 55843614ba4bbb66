"""Decode an image file into the store's format: uint8 ``(C, S, S)``, centre-cropped and resized.

Pillow does the work: ``Image.draft`` lets the JPEG decoder scale down while decoding (much faster
for photos far larger than ``S``), and ``ImageOps.fit`` crops the largest centred square and resizes
it. EXIF orientation is not applied, like torchvision's ``decode_jpeg`` default and like COCO, whose
annotations refer to the stored pixel grid.

**Size cap.** A PNG of 13,000 x 13,000 one-bit pixels is a 20 KB file that costs about 0.8 GB to
decode and convert (Pillow keeps RGB as four bytes a pixel), and Pillow itself only warns below 179
megapixels. ``Image.open`` reads
just the header, so :func:`read_image` compares the declared width x height with a cap *before*
anything is decoded: :data:`DEFAULT_MAX_MEGAPIXELS` (40) keeps one decode near 160 MB, admits every
common camera and phone photo up to 40 MP, and still rejects bombs; a loader option
(``max_megapixels``) moves it up to Pillow's own decompression-bomb limit (89 MP), which is checked
too.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from fedmosaic.core.errors import ImageReadError

_MODES = {1: "L", 3: "RGB"}

# Largest image read_image decodes by default, in megapixels (see the module doc for the reason).
DEFAULT_MAX_MEGAPIXELS = 40.0
# Pillow's own limit: Image.open warns above Image.MAX_IMAGE_PIXELS (89.5 MP) and fails above twice
# that. A cap above it could not be honoured without changing Pillow's process-wide setting, so the
# loaders' max_megapixels option stops here.
PILLOW_MAX_MEGAPIXELS = 89.0


def read_image(
    path: str | Path,
    size: int,
    channels: Literal[1, 3] = 3,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
) -> np.ndarray:
    """Decode ``path`` to uint8 ``(channels, size, size)``: centre crop to a square, then resize.

    Any colour mode is converted (palette, RGBA and CMYK to RGB, dropping alpha; anything to
    greyscale for ``channels=1``). Raises :class:`ImageReadError` (one line naming the file) when the
    file is missing, truncated, not an image Pillow can decode, or declares more than
    ``max_megapixels`` million pixels in its header (refused before any pixel is decoded).
    """
    path = Path(path)
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if not path.is_file():
        raise ImageReadError(path, "image file not found")
    try:
        with warnings.catch_warnings():
            # Pillow warns in Image.open above its own limit; such an image is over our cap as well,
            # so the warning becomes the one-line reason below instead of noise on the terminal.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(path)  # lazy: parses the header, decodes nothing
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        limit = (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        raise ImageReadError(
            path,
            f"image too large: more than {limit:.1f} megapixels declared (Pillow's decompression-bomb "
            f"limit; the cap is {max_megapixels:g} megapixels)",
        ) from None
    except Exception as exc:  # not an image: OSError (UnidentifiedImageError), SyntaxError, ...
        raise ImageReadError(path, f"cannot decode image ({_one_line(exc)})") from exc
    width, height = opened.size
    if width * height > max_megapixels * 1e6:
        opened.close()
        raise ImageReadError(
            path,
            f"image too large: {width} x {height} pixels ({width * height / 1e6:.1f} megapixels) "
            f"exceeds the cap of {max_megapixels:g} megapixels (checked before decoding)",
        )
    try:
        with opened as img:
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
