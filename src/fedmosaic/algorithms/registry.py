"""Algorithms by name. Built-ins and entry points (``fedmosaic.algorithms``) load on first lookup.

A plug-in registers with :func:`register` when its module is imported (see :mod:`fedmosaic.core.plugins`).
"""

from __future__ import annotations

from fedmosaic.core.algorithm import Algorithm
from fedmosaic.core.plugins import Registry


def _load_builtins() -> None:
    # Importing a module runs its @register decorator; nothing else is used from these names.
    from fedmosaic.algorithms import (  # noqa: F401
        centralized,
        fedavg,
        fedcmi,
        fedmekt,
        fedopt,
        fedprox,
        gvf,
        local,
        mmfedavg,
        moon,
        scaffold,
    )


ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm", "fedmosaic.algorithms", _load_builtins)


def register(cls: type[Algorithm]) -> type[Algorithm]:
    """Class decorator: make an Algorithm available under ``cls.name``.

    Another class under a taken name is a one-line :class:`~fedmosaic.core.errors.PluginError`.
    """
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise TypeError(f"@register takes an Algorithm subclass, got {cls!r}")
    ALGORITHMS.add(cls.name, cls, by=cls)
    return cls


def get_algorithm(name: str) -> type[Algorithm]:
    """The algorithm called ``name``; ``KeyError`` lists the known ones."""
    return ALGORITHMS.get(name)


def algorithm_names() -> list[str]:
    """Every registered algorithm's name."""
    return ALGORITHMS.names()


def ensure_loaded() -> None:
    """Load the built-ins and the ``fedmosaic.algorithms`` entry points now (normally on first lookup)."""
    ALGORITHMS.ensure_loaded()
