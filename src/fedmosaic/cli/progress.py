"""Round-by-round progress on stderr: rich's live bar on a terminal, plain lines when piped.

A CI, nohup or SLURM log gets a line at the first round, every tenth of the run, at least every
half minute and at the last round, as it happens (rich draws its bar on a non-terminal only when it
stops, which would show nothing until the run ended).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fedmosaic.cli.app import err

# Piped progress: a line at the first round, every ~tenth of the run, at least every
# _PLAIN_EVERY_S seconds (a slow round still shows the run is alive), and at the last round.
_PLAIN_LINES = 10
_PLAIN_EVERY_S = 30.0

RoundCallback = Callable[[int, dict[str, Any]], None]


@contextmanager
def round_progress(enabled: bool) -> Iterator[Callable[[str, int], RoundCallback] | None]:
    if not enabled:
        yield None
        return
    if not err.is_terminal:
        # rich draws its live bar on a non-terminal only when it stops: a CI/nohup/SLURM log would
        # show no progress until the run ended. Plain lines instead.
        yield plain_progress
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err) as bar:

        def factory(name: str, rounds: int) -> RoundCallback:
            task_id = bar.add_task(f"{name} round", total=rounds, last="")

            def update(round: int, row: dict[str, Any]) -> None:
                last = ""
                if "overall" in row.get("eval", {}):
                    last = f"overall acc {row['eval']['overall']['accuracy']:.3f}"
                bar.update(task_id, completed=round, last=last)

            return update

        yield factory


def plain_progress(name: str, rounds: int) -> RoundCallback:
    """Progress for a piped stderr: ``fedavg round 3/20  overall acc 0.412  train loss 1.93  12.3 s``."""
    every = max(1, math.ceil(rounds / _PLAIN_LINES))
    start = last_line = time.monotonic()
    first: int | None = None  # the first round this process runs (a resume starts mid-way)

    def update(round: int, row: dict[str, Any]) -> None:
        nonlocal first, last_line
        now = time.monotonic()
        if first is None:
            first = round
        if not (round in (first, rounds) or round % every == 0 or now - last_line >= _PLAIN_EVERY_S):
            return
        last_line = now
        parts = [f"{name} round {round}/{rounds}"]
        if "overall" in row.get("eval", {}):
            parts.append(f"overall acc {row['eval']['overall']['accuracy']:.3f}")
        loss = row.get("train", {}).get("train_loss")
        if isinstance(loss, int | float):
            parts.append(f"train loss {loss:.4g}")
        elapsed = now - start
        parts.append(f"{elapsed:.1f} s")
        if round < rounds:  # rounds run by this process so far set the pace
            parts.append(f"ETA {elapsed / (round - first + 1) * (rounds - round):.0f} s")
        err.print("  ".join(parts), highlight=False, soft_wrap=True)

    return update
