"""The scenarios benchmark in smoke mode (one setting, 1 round, part of HAPT), so it never rots."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark_runs import ROOT, run_benchmark


# ~17 CPU s (two HAPT loads, five federations, two evaluations): more than this share of the
# default run's CI time, so it runs with the slow tests (pytest -m slow)
@pytest.mark.slow
def test_scenarios_benchmark_smoke(tmp_path: Path) -> None:
    if not (ROOT.parent / "shared" / "datasets" / "uci-hapt" / "HAPT-RawData.tar.xz").is_file():
        pytest.skip("real HAPT archive not available")
    target = tmp_path / "BENCHMARKS.md"
    proc = run_benchmark("scenarios.py", "--smoke", "--output", str(target), timeout=600)
    out = proc.stdout
    assert "| label noise 0.5 |" in out
    assert "| majority class (seed 0) |" in out and "| untrained model (seed 0) |" in out
    assert "| FedMultimodal, published" in out and "77.74" in out and "85.17" in out
    assert "- label noise 0.5: 0 labels dropped," in out  # the effective counts from summary.json
    assert "benchmarks/scenarios.py --seeds 0 --rounds 1" in out
    assert not target.exists()  # smoke mode never overwrites the published table
