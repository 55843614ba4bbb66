"""The throughput benchmark's smoke mode: the bare loop reproduces the engine's weights bit for bit."""

from __future__ import annotations

from pathlib import Path

from benchmark_runs import run_benchmark


def test_throughput_benchmark_smoke(tmp_path: Path) -> None:
    target = tmp_path / "BENCHMARKS.md"
    out = run_benchmark("throughput.py", "--smoke", "--output", str(target), timeout=600).stdout
    assert "| synthetic (smoke) | 1 |" in out
    assert "weights bit-identical after round 1; max metric diff 0, train-loss diff 0" in out
    assert "| evaluation (evaluate_subsets) |" in out
    assert "`python benchmarks/throughput.py --smoke`" in out
    assert not target.exists()  # smoke mode never writes the published table
