"""Shared pieces of the sensor loaders: whitespace float tables, windows, contiguous runs.

The UCI-HAPT, UCI-HAR and mHealth loaders all read plain-text tables of numbers and cut fixed-length
windows out of recordings. This module does that once:

- :func:`read_table` parses a whitespace-separated table with numpy's C parser and, only when that
  fails, re-reads it line by line to name every bad line (wrong number of values, not a number,
  NaN/Inf, beyond the float32 range), so a bad file costs a slow pass but a good one never does.
- :func:`cut_windows` places windows with a step inside ``[start, end)`` ranges; :func:`runs` finds
  the ranges of equal labels; :func:`clear_of` drops windows that cover a bad row;
  :func:`gather` copies the windows out channels-first; :func:`majority_labels` labels windows that
  slide over a whole recording.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedmosaic.data.registry import DataError, LoadContext

# Windows are stored as float32: a finite float64 beyond this would become infinity there.
FLOAT32_MAX = float(np.finfo(np.float32).max)
TOO_LARGE = f"value beyond the float32 range (|x| > {FLOAT32_MAX:.3g})"


@dataclass
class Table:
    """A parsed numeric text table: ``values[i]`` is line ``i + 1`` of ``path``.

    Rows listed in ``bad`` (1-based line, reason) hold NaN; call :meth:`report` to pass them to the
    bad-sample policy.
    """

    path: Path
    values: np.ndarray
    bad: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)

    def bad_mask(self) -> np.ndarray:
        """``(n_rows,)`` bool, True on the rows listed in ``bad``."""
        mask = np.zeros(len(self.values), dtype=bool)
        if self.bad:
            mask[np.fromiter((line - 1 for line, _ in self.bad), dtype=np.int64)] = True
        return mask

    def report(self, ctx: LoadContext) -> np.ndarray:
        """Report every bad line through ``ctx.bad`` (raises under "error") and return :meth:`bad_mask`."""
        for line, reason in self.bad:
            ctx.bad(self.path, reason, line=line)
        return self.bad_mask()

    def mark_bad(self, rows: np.ndarray, reason: str) -> None:
        """Add the 0-based ``rows`` to ``bad`` with ``reason`` (a loader's own per-row check)."""
        known = {line for line, _ in self.bad}
        new = [(int(r) + 1, reason) for r in rows if int(r) + 1 not in known]
        if new:
            self.bad = sorted(self.bad + new)
            self.values[np.asarray(rows, dtype=np.int64)] = np.nan


def read_table(path: Path, n_cols: int) -> Table:
    """Read a whitespace-separated table of ``n_cols`` floats per line.

    Raises :class:`DataError` if the file is missing, unreadable or empty (a whole-file problem);
    every bad line (wrong value count, not a number, NaN/Inf, beyond the float32 range) is listed in
    ``Table.bad``. Trailing blank lines are ignored; a blank line inside the table is a bad line
    (rows are positions).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    body = raw.rstrip()
    if not body:
        raise DataError(f"{path}: file is empty")
    n_lines = body.count(b"\n") + 1
    try:
        # numpy's C parser: fast, but it skips blank lines and stops at the first bad one.
        values = np.loadtxt(path, dtype=np.float64, comments=None, ndmin=2)
    except ValueError:  # includes UnicodeDecodeError
        values = None
    if values is None or values.shape != (n_lines, n_cols):
        return _read_table_slowly(path, body, n_cols)
    table = Table(path, values)
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        table.mark_bad(np.flatnonzero(~finite), "NaN or infinite value")
    huge = (np.abs(values) > FLOAT32_MAX).any(axis=1) & finite
    if huge.any():
        table.mark_bad(np.flatnonzero(huge), TOO_LARGE)
    return table


def _read_table_slowly(path: Path, body: bytes, n_cols: int) -> Table:
    """Line-by-line parse that names every bad line (used only when the fast parse failed)."""
    lines = body.decode("utf-8", errors="replace").split("\n")
    values = np.full((len(lines), n_cols), np.nan)
    bad: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        tokens = line.split()
        if len(tokens) != n_cols:
            bad.append((i + 1, f"expected {n_cols} values, found {len(tokens)}"))
            continue
        try:
            row = [float(t) for t in tokens]
        except ValueError:
            word = next(t for t in tokens if not _is_float(t))
            bad.append((i + 1, f"not a number: {word[:40]!r}"))
            continue
        if not all(np.isfinite(row)):
            bad.append((i + 1, "NaN or infinite value"))
            continue
        if max(abs(v) for v in row) > FLOAT32_MAX:
            bad.append((i + 1, TOO_LARGE))
            continue
        values[i] = row
    return Table(path, values, bad)


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def int_column(table: Table, col: int, low: int, high: int, what: str) -> np.ndarray:
    """Column ``col`` as int64; rows whose value is not an integer in ``[low, high]`` are marked bad
    (reason names ``what``) and hold ``-1``."""
    column = table.values[:, col]
    ok = np.isfinite(column) & (column == np.round(column)) & (column >= low) & (column <= high)
    wrong = np.flatnonzero(~ok & ~table.bad_mask())
    if len(wrong):
        table.mark_bad(wrong, f"{what} must be an integer in {low}..{high}")
    out = np.full(len(column), -1, dtype=np.int64)
    out[ok] = column[ok].astype(np.int64)
    out[table.bad_mask()] = -1
    return out


def step_for(window: int, overlap: float) -> int:
    """Window step for a fractional ``overlap``: ``round(window * (1 - overlap))``, at least 1."""
    return max(1, round(window * (1.0 - overlap)))


def count_windows(length: int, window: int, step: int) -> int:
    """How many windows of ``window`` rows, ``step`` apart, fit in ``length`` rows."""
    return max(0, (length - window) // step + 1) if length >= window else 0


def cut_windows(
    starts: np.ndarray, ends: np.ndarray, window: int, step: int
) -> tuple[np.ndarray, np.ndarray]:
    """Windows inside each ``[starts[k], ends[k])`` range, the first at the range start.

    Returns ``(window_starts, owner)``: window ``j`` covers rows ``window_starts[j] ..
    window_starts[j] + window - 1`` and lies inside range ``owner[j]``.
    """
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    lengths = ends - starts
    counts = np.where(lengths >= window, (lengths - window) // step + 1, 0)
    owner = np.repeat(np.arange(len(starts)), counts)
    first = np.cumsum(counts) - counts  # index of each range's first window
    offset = np.arange(len(owner)) - first[owner]
    return starts[owner] + offset * step, owner


def runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximal runs of equal consecutive values: ``(starts, ends, run_values)``, ends exclusive."""
    values = np.asarray(values)
    if len(values) == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, values[:0]
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate(([0], change)).astype(np.int64)
    ends = np.concatenate((change, [len(values)])).astype(np.int64)
    return starts, ends, values[starts]


def clear_of(bad_rows: np.ndarray, window_starts: np.ndarray, window: int) -> np.ndarray:
    """Bool per window: True if none of its rows is flagged in ``bad_rows``."""
    if not bad_rows.any():
        return np.ones(len(window_starts), dtype=bool)
    before = np.concatenate(([0], np.cumsum(bad_rows, dtype=np.int64)))
    return before[window_starts + window] == before[window_starts]


def gather(signal: np.ndarray, window_starts: np.ndarray, window: int) -> np.ndarray:
    """Copy windows out of a ``(rows, channels)`` signal as float32 ``(n, channels, window)``."""
    if len(window_starts) == 0:
        return np.empty((0, signal.shape[1], window), dtype=np.float32)
    # sliding_window_view puts the window axis last, which is exactly channels-first.
    view = np.lib.stride_tricks.sliding_window_view(signal, window, axis=0)
    return view[window_starts].astype(np.float32)


def majority_labels(row_labels: np.ndarray, window_starts: np.ndarray, window: int) -> np.ndarray:
    """Label of each window = the label (``>= 0``) covering more than half of its rows, else -1.

    ``row_labels`` is one int per row, -1 for unlabelled rows.
    """
    n_classes = int(row_labels.max(initial=-1)) + 1
    if n_classes == 0 or len(window_starts) == 0:
        return np.full(len(window_starts), -1, dtype=np.int64)
    one_hot = np.zeros((len(row_labels) + 1, n_classes), dtype=np.int32)
    labelled = np.flatnonzero(row_labels >= 0)
    one_hot[labelled + 1, row_labels[labelled]] = 1
    before = np.cumsum(one_hot, axis=0)
    counts = before[window_starts + window] - before[window_starts]
    best = counts.argmax(axis=1)
    return np.where(2 * counts.max(axis=1) > window, best, -1).astype(np.int64)


def read_activity_labels(path: Path, fallback: Sequence[str]) -> tuple[str, ...]:
    """Class names from a UCI ``activity_labels.txt`` (``id NAME`` per line, ids 1..k in order).

    Returns ``fallback`` if the file is absent; raises :class:`DataError` if it is malformed or does
    not name the ``len(fallback)`` activities the loader expects.
    """
    if not path.is_file():
        return tuple(fallback)
    names: list[str] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split(maxsplit=1)
        if not parts:
            continue
        if len(parts) != 2 or parts[0] != str(len(names) + 1):
            raise DataError(f"{path}:{number}: expected '{len(names) + 1} NAME', found {line.strip()!r}")
        names.append(parts[1].strip())
    if len(names) != len(fallback):
        raise DataError(f"{path}: expected {len(fallback)} activities, found {len(names)}")
    return tuple(names)


def windows_per_class(labels: np.ndarray, class_names: Sequence[str]) -> dict[str, int]:
    """``{class name: window count}`` for every class (zero counts included)."""
    counts = np.bincount(labels, minlength=len(class_names))
    return {name: int(c) for name, c in zip(class_names, counts, strict=True)}


def compact_ids(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, uniques)``: ``values`` renumbered 0..k-1 in sorted order of ``uniques``."""
    uniques, ids = np.unique(values, return_inverse=True)
    return ids.astype(np.int64), uniques
