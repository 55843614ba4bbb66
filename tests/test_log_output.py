"""What a person reads in a log: piped (non-TTY) tables and progress, and ``fedmosaic --version``.

The CLI runs in a subprocess with pipes, so stdout and stderr are real non-terminals, as under CI,
nohup or SLURM.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from typer.testing import CliRunner

import fedmosaic
from conftest import TINY_OVERRIDES
from fedmosaic.cli import app

ROOT = Path(__file__).resolve().parents[1]
# Source first, so the subprocess runs this checkout even when another one is installed.
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "MPLBACKEND": "Agg",
    "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
}


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedmosaic.cli", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def test_version_prints_the_package_version_and_exits_0() -> None:
    result = cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"fedmosaic {fedmosaic.__version__}\n"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert fedmosaic.__version__ == project["version"]  # one version, wherever it is read


def test_version_does_not_import_torch() -> None:
    # torch takes seconds to import; --version (and --help) must not wait for it
    # main() ends the process (cli.app.leave) after running the exit handlers: one of them looks
    script = (
        "import atexit, sys\n"
        "from fedmosaic.cli import main\n"
        "atexit.register(lambda: print('torch' in sys.modules))\n"
        "sys.argv = ['fedmosaic', '--version']\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False", result.stdout + result.stderr


def test_torchvision_and_transformers_still_import_after_fedmosaic() -> None:
    # the CPU-torch fix for torchvision now runs lazily, just before torchvision is first looked up
    script = (
        "import fedmosaic\n"
        "from transformers import BertModel\n"
        "from torchvision.models import mobilenet_v3_small\n"
        "print(type(mobilenet_v3_small()).__name__, BertModel.__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["MobileNetV3", "BertModel"]


def test_piped_run_prints_whole_tables_and_plain_progress_lines(tmp_path: Path) -> None:
    # 10 columns of results, wider than rich's 80-column default for a non-terminal
    overrides = [o for o in TINY_OVERRIDES if not o.startswith(("engine.progress", "compare"))]
    extra = ['compare=["local"]', "output.plots=false"]  # no figures: they are not what is tested here
    sets = [arg for o in [*overrides, *extra] for arg in ("--set", o)]
    run = cli("run", *sets, "--out", str(tmp_path / "run"))
    assert run.returncode == 0, run.stderr
    assert "…" not in run.stdout, run.stdout
    header = next(line for line in run.stdout.splitlines() if "overall acc" in line)
    for column in ("overall macro-F1", "group/image+text acc", "bytes up", "bytes down", "s/round"):
        assert column in header
    rows = [line for line in run.stdout.splitlines() if line.startswith("│")]
    assert [row.split()[1] for row in rows] == ["fedavg", "local"], run.stdout  # one line per row
    assert re.search(r"│ +\d+\.\d\d MB │", rows[0]), rows[0]  # a number with its unit, not wrapped
    comparison = [line for line in run.stdout.splitlines() if line.startswith("fedavg vs local")]
    assert len(comparison) == 1 and "overall" in comparison[0], run.stdout
    # progress arrives as it happens, as plain lines (no bar drawn once at the end)
    progress = [line for line in run.stderr.splitlines() if " round " in line]
    assert len(progress) == 4, run.stderr
    for line, (name, r) in zip(
        progress, [("fedavg", 1), ("fedavg", 2), ("local", 1), ("local", 2)], strict=True
    ):
        assert re.fullmatch(
            rf"{name} round {r}/2  overall acc \d\.\d{{3}}  train loss \S+  \d+\.\d s(  ETA \d+ s)?", line
        ), line
    assert "━" not in run.stderr

    # fedmosaic report's table too (in-process: CliRunner's stdout is no terminal either)
    both = [str(tmp_path / "run"), str(tmp_path / "run" / "baselines" / "local")]
    report = CliRunner().invoke(app, ["report", *both, "--out", str(tmp_path / "cmp")])
    assert report.exit_code == 0, report.output
    assert "…" not in report.stdout and "group/image+text acc" in report.stdout, report.stdout


def test_plain_progress_cadence(monkeypatch) -> None:
    from rich.console import Console

    from fedmosaic.cli import progress as cli_module

    buffer = io.StringIO()
    monkeypatch.setattr(cli_module, "err", Console(file=buffer, width=200))
    clock = iter(range(0, 10_000, 1))  # one second per round
    monkeypatch.setattr(cli_module.time, "monotonic", lambda: float(next(clock)))
    update = cli_module.plain_progress("fedavg", 100)
    for r in range(1, 101):
        update(r, {"round": r, "eval": {"overall": {"accuracy": 0.5}}, "train": {"train_loss": 1.0}})
    rounds = [int(line.split()[2].split("/")[0]) for line in buffer.getvalue().splitlines()]
    assert rounds == [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]  # first, every tenth, last

    buffer.truncate(0)
    buffer.seek(0)
    slow = iter(range(0, 10_000, 45))  # 45 s per round: every round is due by time
    monkeypatch.setattr(cli_module.time, "monotonic", lambda: float(next(slow)))
    update = cli_module.plain_progress("fedavg", 100)
    for r in range(5, 9):  # a resume starting at round 5
        update(r, {"round": r})
    assert [line.split()[2] for line in buffer.getvalue().splitlines()] == [
        "5/100",
        "6/100",
        "7/100",
        "8/100",
    ]
    assert buffer.getvalue().splitlines()[0].endswith("ETA 4275 s")  # 45 s per round x 95 rounds
