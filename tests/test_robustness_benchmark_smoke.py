"""The robustness and validation-sweep benchmarks in smoke mode, so they never rot (not the full runs)."""

from __future__ import annotations

import re
from pathlib import Path

from benchmark_runs import run_benchmark


def test_robustness_benchmark_smoke(tmp_path: Path) -> None:
    target = tmp_path / "BENCHMARKS.md"
    proc = run_benchmark("robustness.py", "--smoke", "--output", str(target), timeout=300)
    out = proc.stdout
    for label in (
        "mean, validation off",
        "mean, validation on",
        "median, validation off",
        "trimmed mean (0.3)",
    ):
        assert f"| {label}" in out
    # the x1e6 replies of the 3 poisoned clients (of 10) are all rejected, and no honest reply is
    assert re.search(
        r"\| x1e6 replies: mean, validation on \| [0-9.]+ ± [0-9.]+ \| 3/3 poisoned, 3 in all \|", out
    )
    assert "benchmarks/robustness.py --smoke" in out
    assert not target.exists()  # smoke mode never overwrites the published table


def test_validation_sweep_smoke(tmp_path: Path) -> None:
    target = tmp_path / "BENCHMARKS.md"
    proc = run_benchmark("validation_sweep.py", "--smoke", "--output", str(target), timeout=300)
    # every bad reply of fedavg's 10 clients caught, no clean reply rejected
    assert "| fedavg | " + " | ".join(["10/10"] * 9) + " | 0/10 |" in proc.stdout
    assert "| local | — |" in proc.stdout and "benchmarks/validation_sweep.py --smoke" in proc.stdout
    assert not target.exists()
