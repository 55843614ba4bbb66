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
    from fedmosaic.algorithms import centralized, fedavg, fedprox, local  # noqa: F401
    from fedmosaic.algorithms import gvf  # noqa: F401
    from fedmosaic.algorithms import fedcmi  # noqa: F401
    from fedmosaic.algorithms import fedmekt, mmfedavg  # noqa: F401
