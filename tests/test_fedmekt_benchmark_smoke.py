"""The FedMEKT benchmark runs in smoke mode (so it never rots) and leaves BENCHMARKS.md alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_fedmekt_benchmark_smoke(tmp_path: Path) -> None:
    if not (ROOT.parent / "shared" / "datasets" / "uci-hapt" / "HAPT-RawData.tar.xz").is_file():
        pytest.skip("real HAPT archive not available")
    target = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fedmekt.py"), "--smoke", "--output", str(target)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, proc.stderr
    for text in ("| FedMEKT-C |", "| FedMEKT-S |", "| mmFedAvg |", "| mmFedProx |", "| majority class |"):
        assert text in proc.stdout
    assert "FedMEKT speed at mHealth-like sizes" in proc.stdout and "benchmarks/fedmekt.py" in proc.stdout
    assert "| clients (fit) | server (configure + aggregate) | linear evaluation |" in proc.stdout
    assert "| FedMEKT-C, 2 workers |" in proc.stdout  # the row the 2-core target is judged on
    assert "not judged (smoke sizes" in proc.stdout  # a tenth of the data never claims the target
    assert not target.exists()  # smoke mode never overwrites the published table
