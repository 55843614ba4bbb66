"""The FedCMI benchmark script in smoke mode (tiny sizes, one seed), so it never rots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_fedcmi_benchmark_smoke(tmp_path: Path) -> None:
    if not (ROOT.parent / "shared" / "datasets" / "fsdd" / "recordings").is_dir():
        pytest.skip("FSDD recordings not available")
    target = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fedcmi.py"), "--smoke", "--output", str(target)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for row in ("| fedcmi |", "| fedcmi, no class-wise T |", "| fedcmi, no infiltration |", "| fedavg |"):
        assert out.count(row) == 2, row  # one row per task
    for column in ("image+audio acc", "audio F1", "image+text acc", "text F1"):
        assert column in out
    assert "- weak (" in out and "- fused (" in out
    assert "benchmarks/fedcmi.py --smoke" in out
    assert not target.exists()  # smoke mode never writes the published table
