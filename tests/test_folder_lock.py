"""One writer per run folder: a second run, resume, report, pipeline step or Federation on a locked
folder is refused with one line naming the holder; a dead holder's lock is recovered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import TINY_OVERRIDES
from fedmosaic.cli import app
from fedmosaic.config import load_config
from fedmosaic.engines.folder_lock import LOCK_NAME, FolderInUse, FolderLock, holds

HOLD = """
import sys, time
from fedmosaic.engines.folder_lock import FolderLock
FolderLock(sys.argv[1], "--out").acquire()
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """Another process holding the lock on ``tmp_path / "run"`` (killed at the end; waits bounded)."""
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc, folder
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_second_run_on_a_held_folder_is_refused_and_writes_nothing(
    holder: tuple[subprocess.Popen[str], Path],
) -> None:
    proc, folder = holder
    args = ["run", "--out", str(folder), "-q"] + [a for o in TINY_OVERRIDES for a in ("--set", o)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    message = result.output.strip()
    assert message.startswith(f"error: --out: {folder} is in use by process {proc.pid}")
    assert "\n" not in message
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # the holder's; nothing of ours


def test_federation_pipeline_and_report_respect_the_lock(
    holder: tuple[subprocess.Popen[str], Path], tmp_path: Path
) -> None:
    from fedmosaic import Federation
    from fedmosaic.engines.files import FilePipeline
    from fedmosaic.reporting.report import write_run_report

    proc, folder = holder
    cfg = load_config(None, list(TINY_OVERRIDES))
    with pytest.raises(FolderInUse, match=rf"^folder: {folder} is in use by process {proc.pid} "):
        Federation.from_config(cfg, folder=folder)
    with pytest.raises(FolderInUse, match=r"^--root: "):
        FilePipeline.init(folder, cfg)
    with pytest.raises(FolderInUse, match=r"^report: "):
        write_run_report(folder)
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]


def test_a_killed_holders_lock_is_recovered(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == proc.pid  # stale file left behind
    with FolderLock(folder) as lock:
        assert holds(folder) and lock.folder == folder
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not any(folder.iterdir()), "the lock file goes with the lock"


def test_a_folder_the_lock_created_is_removed_when_nothing_was_written(tmp_path: Path) -> None:
    with FolderLock(tmp_path / "new" / "run"):
        assert (tmp_path / "new" / "run" / LOCK_NAME).exists()
    assert not (tmp_path / "new" / "run").exists()


def test_reentrant_within_a_process_and_released_by_the_outermost(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    outer = FolderLock(folder).acquire()
    inner = FolderLock(folder).acquire()
    inner.release()
    assert holds(folder) and (folder / LOCK_NAME).exists()
    outer.release()
    outer.release()  # idempotent
    assert not holds(folder) and folder.is_dir() and not any(folder.iterdir())


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def test_two_concurrent_runs_do_not_interleave(tmp_path: Path) -> None:
    """The reported failure: two ``fedmosaic run --out X`` at once. One wins, the other is refused."""
    folder = tmp_path / "run"
    overrides = [*TINY_OVERRIDES, "output.plots=false"]
    cmd = [sys.executable, "-m", "fedmosaic.cli", "run", "--out", str(folder), "-q"]
    cmd += [a for o in overrides for a in ("--set", o)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen([*cmd, "--set", "seed=1"], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    # Until the holder has written its details into the lock file, a refusal can only say "another
    # process"; start the second run once the first one's lock names it.
    while time.monotonic() < deadline and "pid" not in _text(folder / LOCK_NAME):
        time.sleep(0.05)
    second = subprocess.run([*cmd, "--set", "seed=2"], env=env, capture_output=True, text=True, timeout=300)
    assert first.wait(timeout=300) == 0, first.stderr.read() if first.stderr else ""
    # Refused while the first runs, or (if the first was quicker) because the folder now holds a run.
    assert second.returncode == 2
    assert "is in use by process" in second.stderr or "already holds a run" in second.stderr
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    assert "seed = 1" in (folder / "config.toml").read_text()
