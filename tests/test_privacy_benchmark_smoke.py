"""benchmarks/privacy.py runs in smoke mode (tiny sizes, one seed): table, epsilon and plot are produced."""

from __future__ import annotations

from pathlib import Path

from benchmark_runs import run_benchmark


def test_privacy_benchmark_smoke(tmp_path: Path) -> None:
    target, figure = tmp_path / "BENCHMARKS.md", tmp_path / "privacy.png"
    proc = run_benchmark(
        "privacy.py", "--smoke", "--output", str(target), "--figure", str(figure), timeout=300
    )
    assert "| no DP | ∞ | ∞ |" in proc.stdout
    dp_rows = [line for line in proc.stdout.splitlines() if line.startswith("| z = 0.001 |")]
    assert len(dp_rows) == 1
    epsilon = float(dp_rows[0].split("|")[2])
    assert epsilon > 0
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not target.exists()  # smoke mode never overwrites the published table
