"""The gvf benchmark in smoke mode, so it never rots (the full run is not part of the tests)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from benchmark_runs import run_benchmark


def _bench(*args: str) -> subprocess.CompletedProcess:
    return run_benchmark("gvf.py", "--smoke", *args, timeout=300, check=False)


def test_gvf_benchmark_smoke(tmp_path: Path) -> None:
    target = tmp_path / "BENCHMARKS.md"
    work = tmp_path / "work"
    # split the run: units into a work folder (no table), then a collection that runs nothing
    part = _bench("--workdir", str(work), "--run-only", "--output", str(target))
    assert part.returncode == 0, part.stderr
    assert "| gvf |" not in part.stdout and (work / "synthetic-main-s0" / "summary.json").is_file()
    proc = _bench("--workdir", str(work), "--collect", "--output", str(target))
    assert proc.returncode == 0, proc.stderr
    assert "--workdir DIR --collect" in proc.stdout
    again = _bench("--workdir", str(tmp_path / "empty"), "--collect", "--output", str(target))
    assert again.returncode == 0 and "| gvf |" not in again.stdout  # nothing finished: no rows
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


def test_gvf_diagnose_smoke() -> None:
    proc = run_benchmark("gvf_diagnose.py", "--smoke", timeout=600)
    out = proc.stdout
    assert "1. learning curve" in out and "  2: {" in out  # the evaluated round has group accuracies
    assert "retrieval same" in out and "probe own" in out
    assert "own+fill" in out  # single-modality clients are probed with their filled slot
    assert out.count(" | ") >= 10 and "4. test accuracy with the bank | without" in out


def test_gvf_curves_smoke(tmp_path: Path) -> None:
    work, target = tmp_path / "work", tmp_path / "BENCHMARKS.md"
    proc = run_benchmark(
        "gvf_curves.py", "--smoke", "--workdir", str(work), "--output", str(target), timeout=300
    )
    out = proc.stdout
    assert "| image | gvf |" in out and "| image+text | fedavg |" in out
    row = r"^\| image \| local \| [\d.]+ ± [\d.]+ \| [\d.]+ \(\d+\) \| [+-]\d+\.\d \|$"
    assert re.search(row, out, re.M)  # gvf's difference to local-only, signed
    assert not target.exists()  # smoke mode never overwrites the published section
    assert (work / "gvf_curves.png").stat().st_size > 10_000  # the figure was drawn (into the work folder)
    metrics = (work / "synthetic-s0" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 2 and all('"eval"' in line for line in metrics)  # every round evaluated
