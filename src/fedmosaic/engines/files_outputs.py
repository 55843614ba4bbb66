"""A pipeline root's outputs: the same ``metrics.jsonl``, ``timings.jsonl`` and ``summary.json`` as a
run folder's, so ``report.md`` and ``fedmosaic report`` read a pipeline like any run.

Rows are rewritten, never appended: a server step rerun after a crash replaces its round's row
instead of adding a second one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedmosaic.config import RunConfig
from fedmosaic.core.algorithm import Algorithm
from fedmosaic.core.checkpoint import atomic_write_bytes
from fedmosaic.core.modality import ClientSpec
from fedmosaic.engines.run_folder import peak_rss_mb, read_jsonl
from fedmosaic.privacy import privacy_summary


def rewrite_row(path: Path, row: dict[str, Any]) -> None:
    """Put ``row`` in the JSON-lines file ``path`` as its round's row; later rounds' rows are dropped."""
    rows = [old for old in read_jsonl(path) if old["round"] < row["round"]] + [row]
    atomic_write_bytes(path, "".join(json.dumps(x, sort_keys=True) + "\n" for x in rows).encode())


def pipeline_summary(
    root: Path, cfg: RunConfig, algorithm: type[Algorithm], specs: list[ClientSpec]
) -> dict[str, Any]:
    """The run's summary, with the keys :class:`fedmosaic.Federation` writes (what report.md reads).

    ``wall_s`` adds up compute, not waiting: the server's steps plus the seconds each client's
    reply says it took, so a round that waited a week for a site still costs its seconds.
    """
    rows = read_jsonl(root / "metrics.jsonl")
    timings = read_jsonl(root / "timings.jsonl")
    evaluated = [row for row in rows if "eval" in row]
    wall = sum(t["seconds"] for t in timings)
    summary: dict[str, Any] = {
        "algorithm": algorithm.name,
        "dataset": cfg.task.dataset,
        "seed": cfg.seed,
        "rounds": len(rows),
        "clients": len(specs),
        "groups": {g: sum(1 for s in specs if s.group == g) for g in sorted({s.group for s in specs})},
        "data": json.loads((root / "server" / "server.json").read_text())["data"],
        "final": evaluated[-1]["eval"] if evaluated else {},
        "bytes_up": sum(row["bytes_up"] for row in rows),
        "bytes_down": sum(row["bytes_down"] for row in rows),
        "wall_s": wall,
        "seconds_per_round": wall / max(len(rows), 1),
        "peak_rss_mb": max((t["peak_rss_mb"] for t in timings), default=peak_rss_mb()),
    }
    if cfg.privacy.enabled:
        n, per_round = len(specs), cfg.clients.per_round or len(specs)
        pooled = algorithm.needs_pooled_data
        summary["privacy"] = privacy_summary(cfg.privacy, rows, n, per_round, pooled=pooled)
    return summary
