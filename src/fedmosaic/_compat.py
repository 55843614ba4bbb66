"""Import-time fix for torchvision on a CPU-only torch.

PyPI's torchvision wheels are CUDA builds. On the CPU torch wheel their C++ extension cannot load,
and torchvision 0.28 then fails at import because it registers fake kernels for
``torchvision::nms``/``qnms`` whose schemas were never defined. transformers imports torchvision
when it is installed, so even a text-only import breaks. Declaring the two schemas before the first
import lets the Python side (classification models, transforms) load; detection ops stay unavailable,
which fedmosaic never uses. On a machine where torchvision's ops do load, this does nothing.
"""

from __future__ import annotations

import importlib.util
import sys

_LIBRARY = None  # kept alive: the schema definitions vanish when the Library object is collected


def _torchvision_ops_load() -> bool:
    """True when torchvision's compiled extension loads against the installed torch."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # nothing to fix
    import glob
    import os

    import torch

    for location in spec.submodule_search_locations:
        for lib in glob.glob(os.path.join(location, "_C*.so")):
            try:
                torch.ops.load_library(lib)
                return True
            except (OSError, RuntimeError):
                return False
    return False


def ensure_torchvision_importable() -> None:
    """Declare torchvision's nms/qnms schemas when its compiled ops cannot load (CPU-only torch)."""
    global _LIBRARY
    if _LIBRARY is not None or "torchvision" in sys.modules:
        return
    if _torchvision_ops_load():
        return
    import torch

    _LIBRARY = torch.library.Library("torchvision", "DEF")
    _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
