"""Algorithms by name. Built-ins register on first lookup; plug-ins call :func:`register`."""

from __future__ import annotations

from fedmosaic.core.algorithm import Algorithm

_ALGORITHMS: dict[str, type[Algorithm]] = {}


def register(cls: type[Algorithm]) -> type[Algorithm]:
    """Class decorator: make an Algorithm available under ``cls.name``."""
    _ALGORITHMS[cls.name] = cls
    return cls


def get_algorithm(name: str) -> type[Algorithm]:
    """The algorithm called ``name``; ``KeyError`` lists the known ones."""
    _load_builtins()
    if name not in _ALGORITHMS:
        raise KeyError(f"unknown algorithm {name!r}; known: {', '.join(sorted(_ALGORITHMS))}")
    return _ALGORITHMS[name]


def algorithm_names() -> list[str]:
    """Every registered algorithm's name."""
    _load_builtins()
    return sorted(_ALGORITHMS)


def _load_builtins() -> None:
    # Importing a module runs its @register decorator; nothing else is used from these names.
    from fedmosaic.algorithms import (  # noqa: F401
        centralized,
        fedavg,
        fedcmi,
        fedmekt,
        fedprox,
        gvf,
        local,
        mmfedavg,
    )
