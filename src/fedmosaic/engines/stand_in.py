"""A stand-in for a standard-library module, as one Flower module sees it, with some names replaced.

fedmosaic's Flower launchers change one call inside one flwr 1.41.0 module (a ``time.sleep``, a
``subprocess.Popen``) by giving that module its own copy of ``time`` or ``subprocess``: the rest of
Flower and of the process keep the real one.
"""

from __future__ import annotations

import types
import warnings
from typing import Any

FLWR_VERSION = "1.41.0"  # the flwr release every one of these changes was read from


def stand_in(module: types.ModuleType, **replacements: Any) -> types.ModuleType:
    """A module with every public name of ``module``, except ``replacements``."""
    proxy = types.ModuleType(module.__name__)
    proxy.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
    proxy.__dict__.update(replacements)
    return proxy


def flwr_fits(what: str = "", otherwise: str = "", fits: bool = True) -> bool:
    """Whether a change read from flwr :data:`FLWR_VERSION` may be made: that flwr is installed and
    ``fits`` (the caller's check that the code it replaces is still there). If not, a warning says
    ``what`` was written for which version and what happens ``otherwise``; ``what=""`` stays silent."""
    from importlib.metadata import version

    found = version("flwr")
    if found == FLWR_VERSION and fits:
        return True
    if what:
        warnings.warn(
            f"fedmosaic: {what} was written for flwr {FLWR_VERSION}, found {found}; {otherwise}", stacklevel=3
        )
    return False
