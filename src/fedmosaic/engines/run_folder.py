"""The run folder every engine writes: config, metrics, timings, checkpoints, summary.

Layout::

    config.toml        the resolved configuration
    metrics.jsonl      one JSON line per round (deterministic: same seed, same bytes)
    timings.jsonl      seconds per round and peak memory (kept apart: they differ run to run)
    summary.json       final metrics, bytes up/down, wall time
    checkpoints/       checkpoint.json (the commit marker), server_rNNNNN.safetensors, clients/,
                       config.json (the config the run started with: what a resume must match),
                       checkpoint.prev.json (the previous round's marker: a damaged last checkpoint
                       falls back to it; its server state is kept too)
    tensorboard/       TensorBoard event files, with ``output.tensorboard = true``
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import time
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from fedmosaic.core.checkpoint import (
    atomic_write_bytes,
    atomic_write_json,
    ensure_dir,
    file_sha256,
    load_message,
    save_message,
)
from fedmosaic.core.errors import CheckpointError, ConfigError
from fedmosaic.core.message import Message

if TYPE_CHECKING:
    from fedmosaic.config import RunConfig

# Keys that change how a run is carried out but none of its numbers: a resume may change them.
# (clients.allow_lost only decides whether a task with lost clients may run at all.)
OPERATIONAL_KEYS = frozenset(
    {
        "clients.allow_lost",
        "engine.progress",
        "engine.workers",
        "engine.threads",
        "engine.state_cache",
        "output.plots",
        "output.dir",
        "output.tensorboard",
    }
)


def default_folder(cfg: RunConfig) -> Path:
    """``<output.dir>/<algorithm>-<dataset>-<timestamp>``: where a run goes when no folder is given."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return cfg.output.dir / f"{cfg.algorithm.name}-{cfg.task.dataset}-{stamp}"


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# Keys added after run folders started recording their config, each with the value that does what the
# code did before the key existed. A folder recorded without such a key resumes under that value (the
# same numbers); under any other value it is a change like any other. A key whose default changed
# behaviour (fedmekt's eval_protocol, say) is deliberately absent: resuming under it would not
# continue the same run.
ADDED_KEYS: dict[str, Any] = {
    "task.label_missing_rate": 0.0,
    "task.label_noise_rate": 0.0,
    "clients.sample_drop_rate": 0.0,
    "model.fusion": "mean",
    "engine.device": "cpu",
}


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


class _Damaged(Exception):
    """A checkpoint file that cannot be used: ``path`` and why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0][:200] if lines else "") or type(exc).__name__


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
        self.previous_marker = self.checkpoints / "checkpoint.prev.json"
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
        try:
            recorded = json.loads(self.fingerprint.read_text())
            if not isinstance(recorded, dict) or not {"sha256", "config"} <= recorded.keys():
                raise ValueError("no sha256 or config recorded")
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoints: {self.fingerprint} is damaged ({_first_line(exc)}); it records the config "
                "the run started with, so the run cannot be continued safely: start it again"
            ) from None
        if recorded["sha256"] == config_sha256(tree):
            return
        old, new = _flatten(recorded["config"]), _flatten(tree)
        changed = [
            k
            for k in config_diff(recorded["config"], tree)
            if k not in OPERATIONAL_KEYS
            and not (k not in old and k in ADDED_KEYS and new.get(k) == ADDED_KEYS[k])
        ]
        if not changed and config_diff(recorded["config"], tree) == []:
            raise ConfigError(
                f"{key}: {self.path} was run with the same settings in another order (the order of "
                "clients.mix decides which clients hold which modalities); restore config.toml's order"
            )
        if changed:
            what = "; ".join(f"{k} {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}" for k in changed)
            hint = (
                " (to run more rounds: fedmosaic run --resume DIR --rounds N)" if "rounds" in changed else ""
            )
            raise ConfigError(
                f"{key}: {self.path} was run with another config; changed since it started: {what}. "
                f"Undo the change or start a new run{hint}"
            )

    def extend_rounds(self, rounds: int, key: str = "--rounds") -> dict[str, Any]:
        """Raise the run's ``rounds`` to ``rounds`` (config.toml and the fingerprint), recording when.

        Only upwards and only from the last committed round on: the rounds already run stay as they
        were, and ``extended`` in the fingerprint says which round the extension started after.
        ``key`` is what an error calls the request.
        """
        recorded = json.loads(self.fingerprint.read_text()) if self.fingerprint.exists() else {}
        # The recorded tree keeps the config's own key order (check_config the folder first).
        tree = dict(recorded["config"]) if recorded else tomllib.loads(self.config.read_text())
        old = int(tree["rounds"])
        if rounds <= old:
            raise ConfigError(
                f"{key}: {rounds} must exceed the run's {old} rounds (only extending is allowed)"
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

        Every write is atomic and durable (directory fsync included). The marker records the server
        state's SHA-256, so damage is found on resume. The previous marker is kept as
        ``checkpoint.prev.json`` with its server state: a damaged last checkpoint falls back to the
        round before it (:meth:`recover`); older server states are deleted once the new marker is on
        disk. Client states of the round were written (versioned) during it; see
        :class:`~fedmosaic.engines.state_store.ClientStateStore`, which keeps what that fallback needs.
        """
        name = f"server_r{round:05d}.safetensors"
        digest = save_message(self.checkpoints / name, server_state)
        keep = {name}
        try:
            previous = self._read_marker(self.marker)
        except _Damaged:
            previous = None  # nothing committed yet (or a damaged marker: never kept as a fallback)
        if previous is not None and int(previous["round"]) < round:
            atomic_write_json(self.previous_marker, previous)
            keep.add(previous["server_state"])
        atomic_write_json(self.marker, {"round": round, "server_state": name, "sha256": digest, **totals})
        for old in self.checkpoints.glob("server_r*.safetensors"):
            if old.name not in keep:
                old.unlink(missing_ok=True)

    def discard_partial_writes(self) -> int:
        """Delete temp files a killed writer left behind (see ``atomic_write_bytes``); return how many."""
        patterns = (".*.tmp", "checkpoints/.*.tmp", "checkpoints/clients/*/.*.tmp")
        stale = [p for pattern in patterns for p in self.path.glob(pattern)]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def last_checkpoint(self) -> tuple[dict[str, Any], Message] | None:
        """The committed marker and server state, or ``None`` before the first commit.

        Call :meth:`recover` first: a damaged checkpoint raises :class:`CheckpointError` here.
        """
        if not self.marker.exists() and not self.previous_marker.exists():
            return None
        try:
            return self._checked(self.marker)
        except _Damaged as exc:
            raise CheckpointError(f"checkpoints: {exc.path} is damaged ({exc.reason})") from None

    def recover(self) -> str | None:
        """Make a damaged last checkpoint fall back to the previous round's; a warning line if it did.

        Damage is a marker that is not JSON or lacks its keys, a missing or unreadable server state, or
        one whose SHA-256 differs from the marker's. The damaged files are kept beside as
        ``*.damaged``, the previous marker becomes the last one, and the rounds after it are redone on
        resume (metrics, timings and client states are rolled back to it as after any interruption),
        with the same numbers as an uninterrupted run. :class:`CheckpointError` (one line naming the
        file) when no previous checkpoint can stand in; ``None`` when nothing was wrong.
        """
        if not self.marker.exists() and not self.previous_marker.exists():
            return None  # nothing committed yet
        try:
            self._checked(self.marker)
            return None
        except _Damaged as exc:
            damage = exc
        try:
            marker, _ = self._checked(self.previous_marker)
        except _Damaged:
            raise CheckpointError(
                f"checkpoints: {damage.path} is damaged ({damage.reason}) and no earlier checkpoint can "
                "stand in; the run cannot be continued: start it again"
            ) from None
        for path in (damage.path, self.marker):
            if path.exists():
                path.replace(path.with_name(path.name + ".damaged"))
        atomic_write_json(self.marker, marker)
        self.previous_marker.unlink()  # no round before this one is kept
        return (
            f"{damage.path} is damaged ({damage.reason}); continuing from round {marker['round']}, the "
            f"checkpoint before it (the damaged file is kept as {damage.path.name}.damaged)"
        )

    def _read_marker(self, path: Path) -> dict[str, Any]:
        try:
            marker = json.loads(path.read_text())
        except FileNotFoundError:
            raise _Damaged(path, "missing") from None
        except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
            raise _Damaged(path, f"not a checkpoint marker: {_first_line(exc)}") from None
        if not isinstance(marker, dict):
            raise _Damaged(path, "not a checkpoint marker: not a JSON object")
        state = marker.get("server_state")
        # Only a file name in checkpoints/: a marker never points the resume anywhere else.
        if (
            not isinstance(marker.get("round"), int)
            or not isinstance(state, str)
            or Path(state).name != state
        ):
            raise _Damaged(path, "not a checkpoint marker: no round or server state named")
        return marker

    def _checked(self, marker_path: Path) -> tuple[dict[str, Any], Message]:
        """The marker at ``marker_path`` and the server state it names, both verified."""
        marker = self._read_marker(marker_path)
        state = self.checkpoints / marker["server_state"]
        if not state.is_file():
            raise _Damaged(state, "missing")
        if "sha256" in marker and file_sha256(state) != marker["sha256"]:
            raise _Damaged(state, "its bytes differ from those committed (SHA-256 mismatch)")
        try:
            return marker, load_message(state)
        except Exception as exc:  # safetensors raises its own error types for truncated/garbled files
            raise _Damaged(state, f"unreadable: {_first_line(exc)}") from None

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary, summary)
