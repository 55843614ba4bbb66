"""The FedCMI benchmark script in smoke mode (tiny sizes, one seed), so it never rots."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark_runs import ROOT, run_benchmark


# slow: ~45 s of CI's 20-minute budget; the section's renderer is still checked on every run by
# tests/test_benchmark_harness.py where results are stored, and `pytest -m slow` runs this smoke
@pytest.mark.slow
def test_fedcmi_benchmark_smoke(tmp_path: Path) -> None:
    if not (ROOT.parent / "shared" / "datasets" / "fsdd" / "recordings").is_dir():
        pytest.skip("FSDD recordings not available")
    target = tmp_path / "BENCHMARKS.md"
    proc = run_benchmark("fedcmi.py", "--smoke", "--output", str(target), timeout=300)
    out = proc.stdout
    for row in ("| fedcmi |", "| fedcmi, no class-wise T |", "| fedcmi, no infiltration |", "| fedavg |"):
        assert out.count(row) == 2, row  # one row per task
    for column in ("image+audio acc", "audio F1", "image+text acc", "text F1"):
        assert column in out
    assert "- weak (" in out and "- fused (" in out
    assert "benchmarks/fedcmi.py --smoke" in out
    assert not target.exists()  # smoke mode never writes the published table
