"""The gvf benchmark in smoke mode, so it never rots (the full run is not part of the tests)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from benchmark_runs import run_benchmark


def _bench(*args: str) -> subprocess.CompletedProcess:
    return run_benchmark("gvf.py", "--smoke", *args, timeout=300, check=False)


def test_gvf_benchmark_smoke(tmp_path: Path) -> None:
    target, results = tmp_path / "BENCHMARKS.md", tmp_path / "results"
    proc = _bench("--results", str(results), "--output", str(target))
    assert proc.returncode == 0, proc.stderr
    stored = json.loads((results / "gvf.json").read_text())
    assert {r["row"] for r in stored["runs"]} == {
        "synthetic: local",
        "synthetic: fedavg",
        "synthetic: gvf",
        "synthetic: gvf, random pairing",
    }
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
    # the stored results alone give the same section (nothing is run)
    again = _bench("--results", str(results), "--output", str(target), "--from-results")
    assert again.returncode == 0, again.stderr
    assert "| gvf |" in again.stdout and proc.stdout.endswith(again.stdout)


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
        "gvf_curves.py", "--smoke", "--results", str(work), "--output", str(target), timeout=300
    )
    out = proc.stdout
    assert "| image | gvf |" in out and "| image+text | fedavg |" in out
    row = r"^\| image \| local \| [\d.]+ ± [\d.]+ \| [\d.]+ \(\d+\) \| [+-]\d+\.\d \|$"
    assert re.search(row, out, re.M)  # gvf's difference to local-only, signed
    assert not target.exists()  # smoke mode never overwrites the published section
    assert (work / "gvf_curves.png").stat().st_size > 10_000  # the figure was drawn (into the work folder)
    stored = json.loads((work / "gvf-curves.json").read_text())
    curves = stored["runs"][0]["numbers"]["curves"]
    assert [r for r, _ in curves["image"]] == [1, 2]  # every round evaluated
