"""A stand-in for a standard-library module, as one Flower module sees it, with some names replaced.

fedmosaic's Flower launchers change one call inside one flwr 1.41.0 module (a ``time.sleep``, a
``subprocess.Popen``) by giving that module its own copy of ``time`` or ``subprocess``: the rest of
Flower and of the process keep the real one.
"""

from __future__ import annotations

import types
from typing import Any


def stand_in(module: types.ModuleType, **replacements: Any) -> types.ModuleType:
    """A module with every public name of ``module``, except ``replacements``."""
    proxy = types.ModuleType(module.__name__)
    proxy.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
    proxy.__dict__.update(replacements)
    return proxy
