"""The CLI contract: run, --set, --out, --resume, report, one-line errors, Ctrl-C."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import wait_until
from fedmosaic.cli import app
from fedmosaic.engines.run_folder import read_jsonl

TINY = [
    "task.options.n_samples=400",
    "task.proxy_size=40",
    "task.labelled_size=40",
    "rounds=2",
    "model.embed_dim=16",
    "model.text_hidden=16",
]


def sets(*extra: str) -> list[str]:
    out = []
    for item in [*TINY, *extra]:
        out += ["--set", item]
    return out


def invoke(*args: str):
    return CliRunner().invoke(app, ["run", "-q", *args])


def test_run_writes_every_output_and_compares(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))  # and spares this process a freeze
    out = tmp_path / "run"
    result = invoke(*sets('compare=["local"]'), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert frozen == [True]  # the imports were put out of the collector's reach once, before the run
    for name in (
        "config.toml",
        "metrics.jsonl",
        "timings.jsonl",
        "summary.json",
        "report.md",
        "plots/metrics.png",
        "plots/bytes.png",
        "comparison.md",
        "baselines/local/summary.json",
        "baselines/local/report.md",
    ):
        assert (out / name).exists(), name
    assert "fedavg vs local" in result.stdout
    assert str(out) in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algorithm"] == "fedavg" and summary["rounds"] == 2
    assert json.loads((out / "baselines/local/summary.json").read_text())["algorithm"] == "local"
    assert "| fedavg |" in (out / "comparison.md").read_text()
    resolved = (out / "config.toml").read_text()
    assert "n_samples = 400" in resolved


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("rounds=abc", "rounds"),
        ("training.lrr=0.1", "training.lrr"),
        ("algorithm.name=nope", "algorithm.name"),
        ("clients.mix=image:2,audio:3", "clients.mix"),
        ("clients.per_round=50", "clients.per_round"),
    ],
)
def test_bad_config_is_one_line_naming_the_key_and_writes_nothing(
    tmp_path: Path, override: str, key: str
) -> None:
    out = tmp_path / "run"
    result = invoke(*sets(override), "--out", str(out))
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert key in lines[0] and lines[0].startswith("error:")
    assert "Traceback" not in result.output
    assert not out.exists()


def test_more_clients_than_samples_is_a_clear_error(tmp_path: Path) -> None:
    result = invoke(*sets("clients.mix=image+text:300"), "--out", str(tmp_path / "r"))
    assert result.exit_code == 2
    assert "clients.count" in result.stderr and "\n" not in result.stderr.strip()


def test_out_folder_holding_a_run_is_refused_and_kept(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert invoke(*sets(), "--out", str(out)).exit_code == 0
    before = (out / "metrics.jsonl").read_bytes()
    result = invoke(*sets("seed=3"), "--out", str(out))
    assert result.exit_code == 2 and "--resume" in result.stderr
    assert (out / "metrics.jsonl").read_bytes() == before


def test_resume_refuses_overrides_and_missing_runs(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--resume", str(tmp_path), "--set", "rounds=3"])
    assert result.exit_code == 2 and "--resume" in result.stderr
    result = CliRunner().invoke(app, ["run", "--resume", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "no run" in result.stderr


def test_resume_of_a_finished_run_keeps_its_metrics(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert invoke(*sets(), "--out", str(out)).exit_code == 0
    before = (out / "metrics.jsonl").read_text()
    result = CliRunner().invoke(app, ["run", "-q", "--resume", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "metrics.jsonl").read_text() == before


def test_report_compares_runs(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert invoke(*sets(), "--out", str(a)).exit_code == 0
    assert invoke(*sets("algorithm.name=local"), "--out", str(b)).exit_code == 0
    result = CliRunner().invoke(app, ["report", str(a), str(b), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| fedavg |" in text and "| local |" in text
    for name in ("comparison_accuracy.png", "comparison_macro_f1.png", "comparison_bytes.png"):
        assert (tmp_path / "cmp" / "plots" / name).stat().st_size > 1000


def test_report_on_a_non_run_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "summary.json" in result.stderr


def test_ctrl_c_leaves_a_resumable_folder_with_identical_final_metrics(tmp_path: Path) -> None:
    rounds = 8  # about 0.25 s each: after the second row, over a second of rounds is left to interrupt
    args = sets(f"rounds={rounds}", "algorithm.name=local")
    reference = tmp_path / "reference"
    assert invoke(*args, "--out", str(reference)).exit_code == 0

    out = tmp_path / "cut"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedmosaic.cli", "run", "-q", *args, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # A shell starts background jobs with SIGINT ignored (CI scripts, `cmd &`), and Python keeps
        # an ignored SIGINT ignored: the child gets the default disposition, as in a terminal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert wait_until(lambda: len(read_jsonl(out / "metrics.jsonl")) >= 2, timeout_s=120), (
            "run never got going"
        )
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 130, f"exit status {proc.returncode}, not the interrupt's 130: {stderr}"
    assert "--resume" in stderr
    assert len(read_jsonl(out / "metrics.jsonl")) < rounds
    result = CliRunner().invoke(app, ["run", "-q", "--resume", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()


def test_algorithms_lists_the_baselines() -> None:
    result = CliRunner().invoke(app, ["algorithms"])
    assert result.exit_code == 0
    for name in ("fedavg", "fedprox", "local", "centralized"):
        assert name in result.stdout
