"""The run folder every engine writes: config, metrics, timings, checkpoints, summary.

Layout::

    config.toml        the resolved configuration
    metrics.jsonl      one JSON line per round (deterministic: same seed, same bytes)
    timings.jsonl      seconds per round and peak memory (kept apart: they differ run to run)
    summary.json       final metrics, bytes up/down, wall time
    checkpoints/       checkpoint.json (the commit marker), server_rNNNNN.safetensors, clients/,
                       config.json (the config the run started with: what a resume must match)
    tensorboard/       TensorBoard event files, with ``output.tensorboard = true``
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import tomllib
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
from fedmosaic.core.errors import ConfigError
from fedmosaic.core.message import Message

# Keys that change how a run is carried out but none of its numbers: a resume may change them.
OPERATIONAL_KEYS = frozenset(
    {
        "engine.progress",
        "engine.workers",
        "engine.threads",
        "engine.state_cache",
        "output.plots",
        "output.dir",
        "output.tensorboard",
    }
)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_sha256(tree: dict[str, Any]) -> str:
    """A config's fingerprint: SHA-256 of its JSON in the config's own key order.

    Not sorted: order can matter (the order of ``clients.mix`` decides which clients hold what).
    """
    return hashlib.sha256(json.dumps(tree, default=str).encode()).hexdigest()


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two config trees (sorted)."""
    fa, fb = _flatten(a), _flatten(b)
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))


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
        self.fingerprint = self.checkpoints / "config.json"
        self.client_states = self.checkpoints / "clients"
        self.tensorboard = self.path / "tensorboard"

    def exists(self) -> bool:
        """True when the folder already holds a run (its config)."""
        return self.config.exists()

    def write_config(self, tree: dict[str, Any]) -> None:
        """Write ``config.toml`` and record it as the run's fingerprint (see :meth:`check_config`)."""
        atomic_write_bytes(self.config, tomli_w.dumps(tree).encode())
        self._write_fingerprint(tree, [])

    def _write_fingerprint(self, tree: dict[str, Any], extended: list[dict[str, int]]) -> None:
        record = {"sha256": config_sha256(tree), "config": tree, "extended": extended}
        atomic_write_bytes(self.fingerprint, (json.dumps(record, indent=2) + "\n").encode())  # order kept

    def check_config(self, tree: dict[str, Any], key: str = "--resume") -> None:
        """Refuse to continue the run under a config other than the one it started with.

        One line naming every key that differs (operational keys that cannot change a number, such
        as the progress bar or worker count, may differ). A folder from before fingerprints were
        recorded is accepted as it is.
        """
        if not self.fingerprint.exists():
            return
        recorded = json.loads(self.fingerprint.read_text())
        if recorded["sha256"] == config_sha256(tree):
            return
        changed = [k for k in config_diff(recorded["config"], tree) if k not in OPERATIONAL_KEYS]
        if not changed and config_diff(recorded["config"], tree) == []:
            raise ConfigError(
                f"{key}: {self.path} was run with the same settings in another order (the order of "
                "clients.mix decides which clients hold which modalities); restore config.toml's order"
            )
        if changed:
            old, new = _flatten(recorded["config"]), _flatten(tree)
            what = "; ".join(f"{k} {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}" for k in changed)
            hint = (
                " (to run more rounds: fedmosaic run --resume DIR --rounds N)" if "rounds" in changed else ""
            )
            raise ConfigError(
                f"{key}: {self.path} was run with another config; changed since it started: {what}. "
                f"Undo the change or start a new run{hint}"
            )

    def extend_rounds(self, rounds: int) -> dict[str, Any]:
        """Raise the run's ``rounds`` to ``rounds`` (config.toml and the fingerprint), recording when.

        Only upwards and only from the last committed round on: the rounds already run stay as they
        were, and ``extended`` in the fingerprint says which round the extension started after.
        """
        recorded = json.loads(self.fingerprint.read_text()) if self.fingerprint.exists() else {}
        # The recorded tree keeps the config's own key order (check_config the folder first).
        tree = dict(recorded["config"]) if recorded else tomllib.loads(self.config.read_text())
        old = int(tree["rounds"])
        if rounds <= old:
            raise ConfigError(
                f"--rounds: {rounds} must exceed the run's {old} rounds (only extending is allowed)"
            )
        marker = json.loads(self.marker.read_text()) if self.marker.exists() else {"round": 0}
        tree["rounds"] = rounds
        extension = {"from": old, "to": rounds, "after_round": int(marker["round"])}
        atomic_write_bytes(self.config, tomli_w.dumps(tree).encode())
        self._write_fingerprint(tree, [*recorded.get("extended", []), extension])
        return tree

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
