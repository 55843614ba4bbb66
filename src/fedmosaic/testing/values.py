"""Values a constrained config field must reject, and how to write one as a ``--set`` override."""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal

import annotated_types


def _members(annotation: Any) -> tuple[Any, ...]:
    """The types a field accepts (``int | None`` -> ``(int,)``; ``None`` is never an invalid value)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(m for m in typing.get_args(annotation) if m is not type(None))
    return (annotation,)


def _past(bound: Any, kind: type, side: Literal["below", "above"], strict: bool) -> Any:
    """The value just past a bound: the bound itself when it is strict, else the next int/float."""
    if strict:
        return kind(bound)
    if kind is int:
        return int(bound) - 1 if side == "below" else int(bound) + 1
    return math.nextafter(float(bound), -math.inf if side == "below" else math.inf)


def invalid_values(annotation: Any, metadata: Sequence[Any]) -> list[Any]:
    """Values a field of this type and these pydantic constraints must reject (empty if none is known).

    Types: a string for a number, a fraction for an int, ``"maybe"`` and ``2`` for a bool, a choice
    that is not one for a ``Literal``. Bounds (``Gt``/``Ge``/``Lt``/``Le``): the value just past.
    """
    members = _members(annotation)
    if str in members or any(
        typing.get_origin(m) is not Literal and m not in (bool, int, float) for m in members
    ):
        return []  # a free string (or a container/model) has no generic invalid value
    choices = [c for m in members if typing.get_origin(m) is Literal for c in typing.get_args(m)]
    out: list[Any] = []
    if bool in members:
        out += ["maybe", 2]
    if int in members and bool not in members:
        out.append(1.5)
    if any(m in (int, float) for m in members) or choices:
        bogus = "not-a-" + "-or-".join(map(str, choices)) if choices else "much"
        out.append(bogus)
    if choices and all(isinstance(c, int) and not isinstance(c, bool) for c in choices):
        out.append(max(choices) + 1)
    number = float if float in members else int if int in members and bool not in members else None
    if number is not None:
        for c in metadata:
            if isinstance(c, annotated_types.Gt):
                out.append(_past(c.gt, number, "below", strict=True))
            elif isinstance(c, annotated_types.Ge):
                out.append(_past(c.ge, number, "below", strict=False))
            elif isinstance(c, annotated_types.Lt):
                out.append(_past(c.lt, number, "above", strict=True))
            elif isinstance(c, annotated_types.Le):
                out.append(_past(c.le, number, "above", strict=False))
    return out


def toml_literal(value: Any) -> str:
    """``value`` as a TOML literal for a ``--set`` override."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    return repr(value)  # ints, floats (repr round-trips; inf/nan are TOML too)
