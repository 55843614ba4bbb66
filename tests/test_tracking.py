"""TensorBoard tracking: what the event log holds equals metrics.jsonl, once per round, resumes included.

Events are read back with TensorBoard's own ``EventAccumulator``: as they are in the files (so a
round logged twice would show twice), or, where a rerun repeats rounds on purpose, with the
``purge_step`` restart rule the TensorBoard UI applies. Values are TensorBoard scalars, 32-bit floats, so the
expected numbers are rounded the same way. The expected tags are spelled out here, not taken from
the module under test.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
from typer.testing import CliRunner

from conftest import TINY_OVERRIDES
from fedmosaic import Federation, runner
from fedmosaic.cli import app
from fedmosaic.config import ConfigError, load_config
from fedmosaic.core.errors import MissingExtraError
from fedmosaic.core.task import Task
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.protocol import RoundResult
from fedmosaic.engines.run_folder import RunFolder, read_jsonl
from fedmosaic.reporting.tracking import TENSORBOARD_MISSING, TensorBoardLogger

OVERRIDES = [*TINY_OVERRIDES, "output.plots=false"]


def read_events(logdir: Path, purge: bool = False) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of every scalar in ``logdir`` (``purge``: as TensorBoard shows it)."""
    # size_guidance 0: keep every event, not a reservoir sample.
    acc = EventAccumulator(str(logdir), size_guidance={SCALARS: 0}, purge_orphaned_data=purge)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()[SCALARS]}


def expected_events(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The same shape, from the run folder's ``metrics.jsonl`` and ``timings.jsonl`` (as 32-bit floats)."""
    folder = RunFolder(run_dir)
    seconds = {t["round"]: t["seconds"] for t in read_jsonl(folder.timings)}
    out: dict[str, list[tuple[int, float]]] = {}

    def add(tag: str, step: int, value: Any) -> None:
        out.setdefault(tag, []).append((step, float(np.float32(value))))

    for row in read_jsonl(folder.metrics):
        r = row["round"]
        for key, value in row["train"].items():
            add(f"train/{key}", r, value)
        for name, metrics in row.get("eval", {}).items():
            for metric, value in metrics.items():
                add(f"eval/{name}/{metric}", r, value)
        add("bytes/up", r, row["bytes_up"])
        add("bytes/down", r, row["bytes_down"])
        add("time/seconds", r, seconds[r])
        add("clients/sampled", r, len(row["clients"]))
        add("clients/rejected", r, len(row.get("rejected", {})))
        add("clients/dropped", r, len(row.get("dropped", [])))
        add("clients/eval_dropped", r, len(row.get("eval_dropped", [])))
        add("round/skipped", r, "skipped" in row)
    return out


def event_files(logdir: Path) -> list[Path]:
    return sorted(logdir.glob("events.out.tfevents.*"))


@pytest.fixture(scope="module")
def task() -> Task:
    return build_task(load_config(None, list(OVERRIDES)))


def test_python_api_logs_each_round_once_across_a_resume(tmp_path: Path, task: Task) -> None:
    model = load_config(None, list(OVERRIDES)).model  # the tiny model sizes
    run_dir, logdir = tmp_path / "run", tmp_path / "tb"

    def federation(tb: TensorBoardLogger) -> Federation:
        return Federation(task, "fedavg", rounds=2, model=model, folder=run_dir, callbacks=[tb])

    # One round, then the process "ends"; a new Federation over the folder continues at round 2.
    with TensorBoardLogger(logdir) as tb:
        first = federation(tb)
        first.step()
        assert [s for s, _ in read_events(logdir)["eval/overall/accuracy"]] == [1]  # flushed, still open
        first.close()
    assert len(event_files(logdir)) == 1
    with TensorBoardLogger(logdir) as tb:
        second = federation(tb)
        assert second.round == 1
        second.run()

    events = read_events(logdir)
    assert events == expected_events(run_dir)  # every tag, steps 1 and 2 once each
    assert {"train/train_loss", "eval/overall/accuracy", "eval/group/image/accuracy"} <= set(events)
    assert len(event_files(logdir)) == 2  # appended beside the first writer's file
    # A finished run built again runs no round: no writer opens, no empty event file is left.
    with TensorBoardLogger(logdir) as tb:
        federation(tb).run()
    assert len(event_files(logdir)) == 2


def test_run_writes_tensorboard_per_run_folder_and_resume_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"

    class InterruptedAfterRoundOne(TensorBoardLogger):
        def __call__(self, result: RoundResult) -> None:
            super().__call__(result)
            raise KeyboardInterrupt  # Ctrl-C right after round 1 was committed and logged

    monkeypatch.setattr(runner, "TensorBoardLogger", InterruptedAfterRoundOne)
    args = [f"--set={item}" for item in [*OVERRIDES, "output.tensorboard=true", 'compare=["local"]']]
    result = CliRunner().invoke(app, ["run", "-q", *args, "--out", str(out)])
    assert result.exit_code == 130, result.output
    assert [s for s, _ in read_events(out / "tensorboard")["bytes/up"]] == [1]

    monkeypatch.setattr(runner, "TensorBoardLogger", TensorBoardLogger)
    result = CliRunner().invoke(app, ["run", "-q", "--resume", str(out)])
    assert result.exit_code == 0, result.output

    for run_dir in (out, out / "baselines" / "local"):
        logdir = RunFolder(run_dir).tensorboard
        assert read_events(logdir) == expected_events(run_dir), run_dir
    assert len(event_files(out / "tensorboard")) == 2


def round_result(r: int, loss: float, **extra: Any) -> RoundResult:
    row = {"round": r, "clients": ["a", "b"], "train": {"train_loss": loss}, "bytes_up": 3, "bytes_down": 4}
    return RoundResult.from_row({**row, **extra}, seconds=0.5)


def test_a_new_writer_replaces_the_rounds_it_logs_again(tmp_path: Path) -> None:
    with TensorBoardLogger(tmp_path) as tb:
        for r in (1, 2, 3):
            tb(round_result(r, float(r)))
    # A rerun from round 2 into the same folder: TensorBoard shows rounds 2 and 3 once, the new values.
    with TensorBoardLogger(tmp_path) as tb:
        tb(round_result(2, 20.0, rejected={"b": "non-finite"}, dropped=["a"], skipped="too few replies"))
        tb(round_result(3, 30.0, train={"train_loss": 30.0, "note": "not a number"}))
    assert len(read_events(tmp_path)["train/train_loss"]) == 5  # in the files
    events = read_events(tmp_path, purge=True)
    assert events["train/train_loss"] == [(1, 1.0), (2, 20.0), (3, 30.0)]
    assert "train/note" not in events
    assert events["clients/rejected"] == [(1, 0.0), (2, 1.0), (3, 0.0)]
    assert events["clients/dropped"] == [(1, 0.0), (2, 1.0), (3, 0.0)]
    assert events["round/skipped"] == [(1, 0.0), (2, 1.0), (3, 0.0)]
    assert events["bytes/down"] == [(1, 4.0), (2, 4.0), (3, 4.0)]


def test_missing_tensorboard_is_one_line_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError) as caught:
        TensorBoardLogger(tmp_path / "tb")
    assert isinstance(caught.value, MissingExtraError) and isinstance(caught.value, ConfigError)
    assert str(caught.value) == TENSORBOARD_MISSING
    assert not (tmp_path / "tb").exists()

    out = tmp_path / "run"
    args = [f"--set={item}" for item in [*OVERRIDES, "output.tensorboard=true"]]
    result = CliRunner().invoke(app, ["run", "-q", *args, "--out", str(out)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {TENSORBOARD_MISSING}"
    assert not out.exists()
