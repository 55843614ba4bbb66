"""The gvf benchmark in smoke mode, so it never rots (the full run is not part of the tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gvf_benchmark_smoke(tmp_path: Path) -> None:
    target = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gvf.py"), "--smoke", "--output", str(target)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, proc.stderr
    for text in (
        "| local |",
        "| fedavg |",
        "| gvf |",
        "| gvf, random pairing |",
        "benchmarks/gvf.py --smoke",
    ):
        assert text in proc.stdout
    assert "vs local" in proc.stdout and "| image acc | image F1 |" in proc.stdout
    assert not target.exists()  # smoke mode never overwrites the published table
