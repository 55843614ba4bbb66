"""Import-time fix for torchvision on a CPU-only torch.

PyPI's torchvision wheels are CUDA builds. On the CPU torch wheel their C++ extension cannot load,
and torchvision 0.28 then fails at import because it registers fake kernels for
``torchvision::nms``/``qnms`` whose schemas were never defined. transformers imports torchvision
when it is installed, so even a text-only import breaks. Declaring the two schemas before the first
import lets the Python side (classification models, transforms) load; detection ops stay unavailable,
which fedmosaic never uses. On a machine where torchvision's ops do load, this does nothing.

The check imports torch (seconds), so ``import fedmosaic`` only installs a hook that runs it just
before torchvision is first looked up: ``fedmosaic --version`` and ``--help`` stay fast.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import threading
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

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


class _FixBeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs :func:`ensure_torchvision_importable` the first time anything looks torchvision up.

    It finds nothing itself (the regular finders import torchvision afterwards) and removes itself
    first, so the fix's own ``find_spec("torchvision")`` does not come back here.
    """

    _lock = threading.Lock()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "torchvision":
            return None
        with self._lock:
            if self in sys.meta_path:
                sys.meta_path.remove(self)
                ensure_torchvision_importable()
        return None


def install_torchvision_fix() -> None:
    """Apply :func:`ensure_torchvision_importable` lazily, just before torchvision's first import."""
    if "torchvision" in sys.modules:
        return  # imported before fedmosaic: too late to help, and nothing to wait for
    if not any(isinstance(finder, _FixBeforeTorchvision) for finder in sys.meta_path):
        sys.meta_path.insert(0, _FixBeforeTorchvision())
