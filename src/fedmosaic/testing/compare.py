"""Bit-exact comparison of messages and metrics rows, and the listings a failed check prints."""

from __future__ import annotations

import json
import math
from typing import Any

from fedmosaic.core.message import Message


def _same_scalar(a: Any, b: Any) -> bool:
    """Equal metadata values of the same type (a bool is not an int here); NaN equals NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def message_difference(a: Message, b: Message) -> str | None:
    """The first way ``b`` differs from ``a`` bit for bit (names, dtypes, shapes, bytes, metadata
    keys, value types and values; NaN equals NaN), or ``None``."""
    if sorted(a.arrays) != sorted(b.arrays):
        return f"array names {sorted(a.arrays)} became {sorted(b.arrays)}"
    for name in sorted(a.arrays):
        x, y = a.arrays[name], b.arrays[name]
        if x.dtype != y.dtype:
            return f"array {name!r}: dtype {x.dtype} became {y.dtype}"
        if x.shape != y.shape:
            return f"array {name!r}: shape {x.shape} became {y.shape}"
        if x.tobytes() != y.tobytes():  # C-order bytes: equal values, signed zeros and NaN payloads
            return f"array {name!r}: its bytes differ"
    if sorted(a.meta) != sorted(b.meta):
        return f"meta keys {sorted(a.meta)} became {sorted(b.meta)}"
    for key in sorted(a.meta):
        if not _same_scalar(a.meta[key], b.meta[key]):
            x, y = a.meta[key], b.meta[key]
            return f"meta {key!r}: {x!r} ({type(x).__name__}) became {y!r} ({type(y).__name__})"
    return None


def row_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The first difference between two metrics rows (or lists of rows), NaN equal to NaN, or ``None``."""
    where = path or "the rows"
    if isinstance(a, dict) and isinstance(b, dict):
        if sorted(a) != sorted(b):
            return f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for key in sorted(a):
            found = row_difference(a[key], b[key], f"{path}.{key}" if path else str(key))
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} vs {len(b)} entries"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = row_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return None if both_nan or a == b else f"{where}: {a!r} vs {b!r}"


def listing(title: str, lines: list[str], limit: int = 12) -> str:
    """``title`` and the first ``limit`` lines (a broken upload can repeat hundreds of times)."""
    more = [f"... and {len(lines) - limit} more"] if len(lines) > limit else []
    return "\n  ".join([f"{title} ({len(lines)}):", *lines[:limit], *more])


def json_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as ``metrics.jsonl`` holds them (what the file pipeline's rows went through)."""
    return [json.loads(json.dumps(row, sort_keys=True)) for row in rows]
