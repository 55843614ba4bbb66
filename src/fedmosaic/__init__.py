"""fedmosaic: multimodal federated learning for parties that hold different modalities.

The Python API (imported on first use, so ``import fedmosaic`` stays cheap):

- :class:`Federation`: one algorithm on one task, built from objects or ``Federation.from_config``;
  ``step()``, ``rounds(n)``, ``run()``, ``summary()``.
- :class:`RoundResult`: what one round produced.
- :func:`load_config`, :class:`RunConfig`: the TOML configuration tree.
- :func:`build_task`: the Task a config describes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedmosaic._compat import install_torchvision_fix

install_torchvision_fix()  # lazily: importing torch here would cost every command seconds

__version__ = "0.1.0"

if TYPE_CHECKING:
    from fedmosaic.config import RunConfig, load_config
    from fedmosaic.data.tasks import build_task
    from fedmosaic.engines.federation import Federation
    from fedmosaic.engines.protocol import RoundResult

_LAZY = {
    "Federation": "fedmosaic.engines.federation",
    "RoundResult": "fedmosaic.engines.protocol",
    "RunConfig": "fedmosaic.config",
    "load_config": "fedmosaic.config",
    "build_task": "fedmosaic.data.tasks",
}

__all__ = ["Federation", "RoundResult", "RunConfig", "__version__", "build_task", "load_config"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fedmosaic' has no attribute {name!r}")
