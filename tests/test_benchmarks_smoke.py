"""Benchmark scripts run in smoke mode so they never rot (full runs are not part of the tests)."""

from __future__ import annotations

from pathlib import Path

from benchmark_runs import ROOT, run_benchmark


def test_default_task_benchmark_smoke(tmp_path: Path) -> None:
    target = tmp_path / "BENCHMARKS.md"
    proc = run_benchmark("default_task.py", "--smoke", "--output", str(target), timeout=300)
    for name in ("| fedavg |", "| local |", "| centralized |", "default_task.py"):
        assert name in proc.stdout
    assert not target.exists()  # smoke mode never overwrites the published table


def test_uci_har_benchmark_smoke(tmp_path: Path) -> None:
    if not (ROOT.parent / "shared" / "datasets" / "uci-hapt" / "HAPT-RawData.tar.xz").is_file():
        import pytest

        pytest.skip("real HAPT archive not available")
    target = tmp_path / "BENCHMARKS.md"
    proc = run_benchmark("uci_har.py", "--smoke", "--output", str(target), timeout=600)
    for text in ("| acc+gyro at every client |", "| modality drop rate 0.5 |", "FedAvg F1 77.7"):
        assert text in proc.stdout
    assert not target.exists()
