"""The FedMEKT benchmark runs in smoke mode (so it never rots) and leaves BENCHMARKS.md alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark_runs import ROOT, run_benchmark


# slow: ~45 s of CI's 20-minute budget; the section's renderer is still checked on every run by
# tests/test_benchmark_harness.py where results are stored, and `pytest -m slow` runs this smoke
@pytest.mark.slow
def test_fedmekt_benchmark_smoke(tmp_path: Path) -> None:
    if not (ROOT.parent / "shared" / "datasets" / "uci-hapt" / "HAPT-RawData.tar.xz").is_file():
        pytest.skip("real HAPT archive not available")
    target = tmp_path / "BENCHMARKS.md"
    proc = run_benchmark("fedmekt.py", "--smoke", "--output", str(target), timeout=600)
    for text in (
        "| FedMEKT-C |",
        "| FedMEKT-S |",
        "| mmFedAvg |",
        "| mmFedProx |",
        "| majority class |",
        "| supervised FedAvg |",
        "| untrained encoder (round-0 weights) |",
        "| raw statistics (per step: its channels; mean, std, min, max of the last 128) |",
        "Reference protocol",
        "**Controls first.**",
    ):
        assert text in proc.stdout
    assert "FedMEKT speed at mHealth-like sizes" in proc.stdout and "benchmarks/fedmekt.py" in proc.stdout
    assert "| clients (fit) | server (configure + aggregate) | linear evaluation |" in proc.stdout
    assert "| FedMEKT-C, 2 workers |" in proc.stdout  # the row the 2-core target is judged on
    assert "not judged (smoke sizes" in proc.stdout  # a tenth of the data never claims the target
    assert not target.exists()  # smoke mode never overwrites the published table
