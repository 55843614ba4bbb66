"""Message: what crosses the wire between the halves of an algorithm (and what client state is)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

MetaValue = str | int | float | bool
V = TypeVar("V")


@dataclass
class Message:
    """Named numpy arrays plus flat metadata.

    numpy (not torch) at the boundary: Flower's ArrayRecord, safetensors and ``.npz`` all take it.
    ``nbytes`` is the exact sum of the arrays' ``nbytes``; engines add it up into ``bytes_up`` and
    ``bytes_down``. Client state uses the same type so engines can checkpoint it.
    """

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, MetaValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, value in self.arrays.items():
            if not isinstance(value, np.ndarray):
                raise TypeError(f"Message.arrays[{key!r}] must be a numpy array, got {type(value).__name__}")
        for key, value in self.meta.items():
            if not isinstance(value, str | int | float | bool):
                raise TypeError(
                    f"Message.meta[{key!r}] must be str, int, float or bool, got {type(value).__name__}"
                )

    @property
    def nbytes(self) -> int:
        """Exact byte count of the arrays (metadata is not counted)."""
        return int(sum(a.nbytes for a in self.arrays.values()))

    def is_empty(self) -> bool:
        """True when the message carries neither arrays nor metadata."""
        return not self.arrays and not self.meta

    def select(self, prefixes: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The arrays whose names start with any of ``prefixes``."""
        return {k: v for k, v in self.arrays.items() if k.startswith(prefixes)}

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray] | None = None, **meta: MetaValue) -> Message:
        """Build a message from arrays and keyword metadata."""
        return cls(dict(arrays or {}), dict(meta))


# A server's or client's state often holds its model's weights beside other named groups (optimiser
# moments, control variates, a velocity), each under its own prefix; the two functions below are the
# one way those groups are packed into a flat Message and unpacked again.


def prefixed(values: Mapping[str, V], prefix: str) -> dict[str, V]:
    """``values`` with ``prefix`` put before every name (``{"w": a}``, ``"opt/m/"`` -> ``{"opt/m/w": a}``)."""
    return {prefix + name: value for name, value in values.items()}


def split_prefixed(values: Mapping[str, V], *prefixes: str) -> tuple[dict[str, V], list[dict[str, V]]]:
    """The inverse of :func:`prefixed`: the entries under none of ``prefixes``, and per prefix (in the
    order given) its entries with the prefix removed. An entry goes to the first prefix it starts with;
    each part keeps the order of ``values``."""
    rest: dict[str, V] = {}
    groups: list[dict[str, V]] = [{} for _ in prefixes]
    for name, value in values.items():
        for prefix, group in zip(prefixes, groups, strict=True):
            if name.startswith(prefix):
                group[name.removeprefix(prefix)] = value
                break
        else:
            rest[name] = value
    return rest, groups
