"""A benchmark script run from a test: a subprocess, offline, no display (smoke modes keep scripts alive)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_benchmark(
    script: str, *args: str, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/<script> <args>``; with ``check``, a failed run fails the test (stderr shown)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"},
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc
