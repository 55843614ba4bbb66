"""Results tables on stdout: whole numbers in a log, the run's headline after it finishes."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from fedmosaic.cli.app import out


def print_table(table: Table) -> None:
    """Print a results table: on a terminal as rich fits it, piped at the width of its content."""
    if out.is_terminal:
        out.print(table)
        return
    # Piped there is no screen to fit, and rich's 80-column default would cut numbers to "0.…" in
    # the log: measure the width the content needs (no wrapping) and print at that width.
    # (A console of that width, as Console.print never renders wider than its console.)
    width = Measurement.get(out, out.options.update_width(100_000), table).maximum
    Console(file=out.file, width=width).print(table)


def headline(result: Any) -> None:
    from fedmosaic.reporting.report import comparison_rows

    header, rows = comparison_rows(list(result.summaries.items()))
    table = Table(title="final metrics (test set)")
    for h in header[1:]:
        table.add_column(h, justify="left" if h == "algorithm" else "right")
    for r in rows:
        table.add_row(*r[1:])
    print_table(table)
    names = list(result.summaries)
    main = result.summaries[names[0]]
    for other in names[1:]:
        ref = result.summaries[other]
        diffs = []
        for key in sorted(main["final"]):
            if key == "overall" or key.startswith("group/"):
                a, b = main["final"][key]["accuracy"], ref["final"].get(key, {}).get("accuracy")
                if b is not None:
                    diffs.append(f"{key} {a:.3f} vs {b:.3f} ({a - b:+.3f})")
        # soft-wrapped: a terminal wraps it on screen; a log keeps it one greppable line
        out.print(f"{names[0]} vs {other} (accuracy): " + "; ".join(diffs), highlight=False, soft_wrap=True)
    out.print(
        f"results: {result.folder} (report.md" + (", comparison.md" if result.comparison else "") + ")",
        highlight=False,
        soft_wrap=True,
    )
