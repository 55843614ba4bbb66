"""pydantic's validation errors as the one-line ``key: what was expected`` messages users see.

Kept apart from the models: every place that validates user input (the run config, an algorithm's
block, a Flower node's config, a resumed run's old config) reports its problems through this one
formatter, so they all read the same.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

_NAMES_KEY = re.compile(r"^[a-z_]+(\.[A-Za-z0-9_+]+)*: ")


def format_error(exc: ValidationError, prefix: str = "") -> str:
    """Every problem pydantic found, one ``key: what was expected`` line each, in pydantic's order.

    Reporting all of them at once spares a fix-and-rerun cycle per bad key; a single problem reads
    exactly as it always did. Repeated lines (the same key failing the same way twice) are dropped.
    """
    lines: list[str] = []
    for err in _one_per_union(exc.errors(include_url=False)):
        for line in _error_lines(err, prefix):
            if line not in lines:
                lines.append(line)
    return "\n".join(lines)


# The last loc part pydantic adds per branch of a union field: a type name ("int") or a schema
# description ("literal['classes','silhouette']", a model's class name). Field names and the
# user's own dict keys are lower case without brackets.
_BRANCH_TAG = re.compile(r"[\[A-Z]")
_TYPE_TAGS = frozenset({"int", "float", "str", "bool", "bytes", "none", "list", "dict", "set", "tuple"})


def _is_branch_tag(part: Any) -> bool:
    return isinstance(part, str) and (part in _TYPE_TAGS or bool(_BRANCH_TAG.search(part)))


def _loc(err: Any) -> list[Any]:
    """An error's location without pydantic's ``function-...`` validator steps."""
    return [p for p in err["loc"] if not str(p).startswith("function-")]


def _same_union(a: Any, b: Any) -> bool:
    """Whether two errors are two branches of one union-typed value failing on the same input."""
    loc_a, loc_b = _loc(a), _loc(b)
    return (
        bool(loc_a and loc_b)
        and loc_a[:-1] == loc_b[:-1]
        and _is_branch_tag(loc_a[-1])
        and _is_branch_tag(loc_b[-1])
        and a.get("input") == b.get("input")
    )


def _one_per_union(errors: list[Any]) -> list[Any]:
    """Keep the first of the errors pydantic reports for each branch of one union-typed value.

    ``k = "auto"`` against ``int | Literal["classes", "silhouette"]`` is one problem but two errors
    (locs ``k.int`` and ``k.literal[...]``); the first is what a single error always printed.
    """
    kept: list[Any] = []
    for err in errors:
        if not any(_same_union(k, err) for k in kept):
            kept.append(err)
    return kept


def _error_lines(err: Any, prefix: str) -> list[str]:
    """The line(s) for one pydantic error (several when a validator reported several problems)."""
    key = ".".join(str(p) for p in _loc(err))
    if prefix and key:
        key = f"{prefix}.{key}"
    elif prefix:
        key = prefix
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return [f"{key}: unknown key"]
    if "\n" in msg:
        # A validator that collected several problems (a nested block, _fits_dataset): each line
        # normally names its own key already; name ours on any that does not.
        return [
            line if _NAMES_KEY.match(line) or not key else f"{key}: {line}"
            for line in msg.splitlines()
            if line.strip()
        ]
    if _NAMES_KEY.match(msg):
        return [msg]  # the validator already named the key
    got = err.get("input")
    shows_input = err["type"] == "missing" or isinstance(got, dict | list) or "got " in msg
    tail = "" if shows_input else f" (got {got!r})"
    return [f"{key}: {msg}{tail}" if key else f"{msg}{tail}"]
