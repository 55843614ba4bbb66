"""Crash safety: a run SIGKILLed mid-round and resumed ends with exactly an uninterrupted run's metrics.

``fedmosaic run`` runs in a subprocess on a tiny synthetic task; the test polls the run folder's
commit marker (``checkpoints/checkpoint.json``) with bounded waits and kills the process by PID at
several points: right after a round committed (so inside the next round), and at a random delay
into a round. After each kill ``fedmosaic run --resume`` continues; the final ``metrics.jsonl``
must equal byte for byte that of an uninterrupted run with the same seed, and so must the summary's
final metrics. ``fedavg`` (server state only) and ``local`` (every client's own model lives in the
client state store) are covered. Every process is killed by PID in a ``finally`` block.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_OVERRIDES
from fedmosaic import runner
from fedmosaic.config import load_config
from fedmosaic.core.checkpoint import atomic_write_bytes, fsync_dir
from fedmosaic.core.message import Message
from fedmosaic.engines.run_folder import RunFolder

ROUNDS = 6
OVERRIDES = [*TINY_OVERRIDES, f"rounds={ROUNDS}", "output.plots=false", "training.local_epochs=2"]
CLI = [sys.executable, "-c", "from fedmosaic.cli import main; main()", "run", "--quiet"]
START_TIMEOUT_S = 180.0  # first commit: imports + task + a round, on a loaded 2-core machine
ROUND_TIMEOUT_S = 120.0  # any later commit
POLL_S = 0.01

# A kill point: wait until `ahead` more rounds are committed than when the process started, then
# wait `fraction` of the last round's duration (0 = kill right after the commit), then SIGKILL.
SCHEDULES = {
    "fedavg": [(1, 0.0), (1, 0.0), (1, "random")],
    "local": [(1, "random"), (2, 0.0), (1, "random")],
}


def committed(folder: Path) -> int:
    """The last committed round (0 before the first commit); a marker is never read half-written."""
    marker = folder / "checkpoints" / "checkpoint.json"
    return int(json.loads(marker.read_text())["round"]) if marker.exists() else 0


def last_round_seconds(folder: Path) -> float:
    lines = (folder / "timings.jsonl").read_text().splitlines() if (folder / "timings.jsonl").exists() else []
    return float(json.loads(lines[-1])["seconds"]) if lines else 0.5


def wait_for_commit(proc: subprocess.Popen, folder: Path, target: int, timeout: float) -> None:
    """Poll until round ``target`` is committed (bounded; fails if the process dies first)."""
    deadline = time.monotonic() + timeout
    while committed(folder) < target:
        if proc.poll() is not None:
            pytest.fail(f"fedmosaic exited with {proc.returncode} before committing round {target}")
        if time.monotonic() > deadline:
            pytest.fail(f"round {target} not committed within {timeout:.0f} s")
        time.sleep(POLL_S)


def kill_at(args: list[str], folder: Path, ahead: int, fraction: float | str, rng: random.Random) -> int:
    """Start ``fedmosaic run ARGS``, SIGKILL it at the kill point; return the round committed at the kill."""
    start = committed(folder)
    log = (folder.parent / f"{folder.name}.log").open("ab")
    proc = subprocess.Popen([*CLI, *args], stdout=log, stderr=log, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        wait_for_commit(proc, folder, start + ahead, START_TIMEOUT_S + ROUND_TIMEOUT_S * (ahead - 1))
        share = rng.uniform(0.1, 0.9) if fraction == "random" else float(fraction)
        time.sleep(share * last_round_seconds(folder))  # bounded: a fraction of one round
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
    at = committed(folder)
    assert at < ROUNDS, f"the run finished before the kill (round {at}): the test would prove nothing"
    return at


def finish(args: list[str], folder: Path) -> None:
    log = (folder.parent / f"{folder.name}.log").open("ab")
    proc = subprocess.Popen([*CLI, *args], stdout=log, stderr=log, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        assert proc.wait(timeout=START_TIMEOUT_S + ROUND_TIMEOUT_S * ROUNDS) == 0, (
            folder.parent / f"{folder.name}.log"
        ).read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


@pytest.mark.parametrize("algorithm", sorted(SCHEDULES))
def test_sigkill_mid_round_then_resume_equals_an_uninterrupted_run(algorithm: str, tmp_path: Path) -> None:
    sets = [*OVERRIDES, f"algorithm.name={algorithm}"]
    reference = tmp_path / "reference"
    runner.start(load_config(None, sets), reference)  # the uninterrupted run, in-process

    folder = tmp_path / "killed"
    rng = random.Random(f"crash-{algorithm}")
    start_args = [arg for s in sets for arg in ("--set", s)] + ["--out", str(folder)]
    kills = []
    for k, (ahead, fraction) in enumerate(SCHEDULES[algorithm]):
        args = start_args if k == 0 else ["--resume", str(folder)]
        kills.append(kill_at(args, folder, ahead, fraction, rng))
    assert kills == sorted(kills) and len(set(kills)) == len(kills)  # progress across distinct rounds
    finish(["--resume", str(folder)], folder)

    assert (folder / "metrics.jsonl").read_bytes() == (reference / "metrics.jsonl").read_bytes()
    ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (folder, reference))
    for key in ("final", "rounds", "bytes_up", "bytes_down"):
        assert ours[key] == theirs[key], key
    assert len((folder / "timings.jsonl").read_text().splitlines()) == ROUNDS
    assert not list(folder.rglob("*.tmp"))  # no temp file of a killed writer survives the resume
    # The last round's server state and the one before it (a damaged last checkpoint falls back to it).
    assert sorted(p.name for p in (folder / "checkpoints").glob("server_r*")) == [
        f"server_r{ROUNDS - 1:05d}.safetensors",
        f"server_r{ROUNDS:05d}.safetensors",
    ]


# ----------------------------------------------------------------------- the atomic writer itself


def test_atomic_write_keeps_the_old_file_when_the_replace_fails(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "deep" / "state.json"
    atomic_write_bytes(target, b"old")

    def broken(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]  # the temp file is gone


def test_atomic_write_fsyncs_the_file_and_its_directory(tmp_path: Path, monkeypatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    target = tmp_path / "new" / "file.bin"
    atomic_write_bytes(target, b"x")
    # the new directory's entry in its parent, the temp file's data (before the rename), then the
    # directory holding the renamed file
    temp = [k for k, path in enumerate(synced) if path.startswith(str(target.parent / ".file.bin."))]
    assert synced[0] == str(tmp_path) and temp == [1] and synced[2:] == [str(target.parent)]
    fsync_dir(tmp_path)  # a directory can be fsynced on this platform


def test_discard_partial_writes_removes_only_temp_files(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.commit(1, Message({"w": np.zeros(2, np.float32)}), {"bytes_up": 0, "bytes_down": 0, "wall_s": 0.0})
    stale = [
        folder.path / ".metrics.jsonl.abc.tmp",
        folder.checkpoints / ".server_r00002.safetensors.x.tmp",
        folder.client_states / "client_0" / ".r00002.safetensors.y.tmp",
    ]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    assert folder.discard_partial_writes() == 3
    assert not any(p.exists() for p in stale)
    assert folder.last_checkpoint() is not None
