"""The run folder every engine writes: config, metrics, timings, checkpoints, summary.

Layout::

    config.toml        the resolved configuration
    metrics.jsonl      one JSON line per round (deterministic: same seed, same bytes)
    timings.jsonl      seconds per round and peak memory (kept apart: they differ run to run)
    summary.json       final metrics, bytes up/down, wall time
    checkpoints/       checkpoint.json (the commit marker), server_rNNNNN.safetensors, clients/
    tensorboard/       TensorBoard event files, with ``output.tensorboard = true``
"""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path
from typing import Any

import tomli_w

from fedmosaic.core.checkpoint import (
    atomic_write_bytes,
    atomic_write_json,
    ensure_dir,
    load_message,
    save_message,
)
from fedmosaic.core.message import Message


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON line of ``path`` (a torn last line from a crash is ignored)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


class RunFolder:
    """Paths and atomic writers for one run's outputs."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.config = self.path / "config.toml"
        self.metrics = self.path / "metrics.jsonl"
        self.timings = self.path / "timings.jsonl"
        self.summary = self.path / "summary.json"
        self.checkpoints = self.path / "checkpoints"
        self.marker = self.checkpoints / "checkpoint.json"
        self.client_states = self.checkpoints / "clients"
        self.tensorboard = self.path / "tensorboard"

    def exists(self) -> bool:
        """True when the folder already holds a run (its config)."""
        return self.config.exists()

    def write_config(self, tree: dict[str, Any]) -> None:
        atomic_write_bytes(self.config, tomli_w.dumps(tree).encode())

    def append(self, path: Path, row: dict[str, Any]) -> None:
        """Append one JSON line, durably: it is on disk before the round's commit marker is written.

        Without the fsync a power loss could keep the marker of round r but not round r's line, and
        the resumed run would lack that row. A torn last line (a kill mid-write) is dropped on resume.
        """
        ensure_dir(path.parent)
        with path.open("a") as handle:
            handle.write(json.dumps(row, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def truncate(self, path: Path, last_round: int) -> None:
        """Keep only lines of rounds <= ``last_round`` (an interrupted round's lines go)."""
        rows = [r for r in read_jsonl(path) if r["round"] <= last_round]
        atomic_write_bytes(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())

    def commit(self, round: int, server_state: Message, totals: dict[str, Any]) -> None:
        """Checkpoint the end of ``round``: server state first, then the marker that names it.

        Both writes are atomic and durable (directory fsync included), so the old server state is
        deleted only once the marker naming the new one is on disk. Client states of the round were
        written (versioned) during it; see :class:`~fedmosaic.engines.state_store.ClientStateStore`.
        """
        name = f"server_r{round:05d}.safetensors"
        save_message(self.checkpoints / name, server_state)
        atomic_write_json(self.marker, {"round": round, "server_state": name, **totals})
        for old in self.checkpoints.glob("server_r*.safetensors"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def discard_partial_writes(self) -> int:
        """Delete temp files a killed writer left behind (see ``atomic_write_bytes``); return how many."""
        patterns = (".*.tmp", "checkpoints/.*.tmp", "checkpoints/clients/*/.*.tmp")
        stale = [p for pattern in patterns for p in self.path.glob(pattern)]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def last_checkpoint(self) -> tuple[dict[str, Any], Message] | None:
        """The committed marker and server state, or ``None`` before the first commit."""
        if not self.marker.exists():
            return None
        marker = json.loads(self.marker.read_text())
        return marker, load_message(self.checkpoints / marker["server_state"])

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary, summary)
