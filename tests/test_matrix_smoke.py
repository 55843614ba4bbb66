"""The benchmark matrix in smoke mode (tiny synthetic tasks, one seed), and its aggregation."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark_runs import ROOT, run_benchmark

sys.path.insert(0, str(ROOT / "benchmarks"))

import matrix_report as report


def _matrix(tmp: Path, *extra: str, output: str = "B.md") -> subprocess.CompletedProcess:
    paths = ["--results", str(tmp / "results"), "--rows", str(tmp / "rows.csv")]
    paths += ["--figures", str(tmp / "figures"), "--output", str(tmp / output)]
    return run_benchmark("matrix.py", "--smoke", *paths, *extra, check=False)


def test_matrix_smoke_writes_rows_figures_and_section(tmp_path: Path) -> None:
    proc = _matrix(tmp_path)
    assert proc.returncode == 0, proc.stderr
    runs = sorted(p.relative_to(tmp_path / "results") for p in (tmp_path / "results").rglob("*.json"))
    assert len(runs) == 6  # smoke-mix: 4 algorithms, smoke-drop-0.3: fedavg and local
    record = json.loads((tmp_path / "results" / "smoke-mix" / "fedcmi-seed0.json").read_text())
    assert record["summary"]["algorithm"] == "fedcmi" and record["cpu_s"] > 0
    assert record["peak_rss_is_per_run"] is True
    section = (tmp_path / "B.md").read_text()
    assert "<!-- matrix:begin -->" in section and "<!-- matrix:end -->" in section
    for name in ("fedavg", "fedprox", "local", "fedcmi", "majority class (test set)"):
        assert f"| {name} |" in section
    for text in ("test subset image+text", "client group text", "MB up / round", "peak RSS MiB"):
        assert text in section
    assert "`python benchmarks/matrix.py --smoke --tasks smoke-mix --algorithms fedcmi`" in section
    assert "Not run on this task (CPU budget): fedprox, fedcmi." in section  # smoke-drop-0.3
    for png in ("matrix_f1_vs_bytes.png", "matrix_overall_f1.png"):
        data = (tmp_path / "figures" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{png})" in section
    with (tmp_path / "rows.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    algorithms = {r["algorithm"] for r in rows if r["task"] == "smoke-mix"}
    assert algorithms == {"fedavg", "fedprox", "local", "fedcmi", "majority class"}
    local_bytes = [r for r in rows if r["algorithm"] == "local" and r["metric"] == "total_mb"]
    assert local_bytes and all(float(r["mean"]) == 0 for r in local_bytes)  # local sends nothing
    fedavg_bytes = [r for r in rows if r["algorithm"] == "fedavg" and r["metric"] == "total_mb"]
    assert fedavg_bytes and all(float(r["mean"]) > 0 for r in fedavg_bytes)

    # --resume reruns nothing that is stored, and gives the same section.
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "results").rglob("*.json")}
    resumed = _matrix(tmp_path, "--resume", output="D.md")
    assert resumed.returncode == 0, resumed.stderr
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "results").rglob("*.json")} == stamps
    assert (tmp_path / "D.md").read_text() == section

    # The committed CSV alone regenerates the same section: no run JSON needed.
    for path in (tmp_path / "results").rglob("*.json"):
        path.unlink()
    again = _matrix(tmp_path, "--from-results", output="C.md")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "C.md").read_text() == section


def test_matrix_rejects_an_unknown_task(tmp_path: Path) -> None:
    proc = _matrix(tmp_path, "--tasks", "nope")
    assert proc.returncode != 0
    assert "--tasks: unknown task 'nope'" in proc.stderr
    assert not (tmp_path / "B.md").exists()


def _record(task: str, algorithm: str, seed: int, f1: float, up: int) -> dict:
    final = {k: {"accuracy": f1, "macro_f1": f1, "weighted_f1": f1} for k in ("test/a", "overall")}
    summary = {
        "final": final,
        "bytes_up": up,
        "bytes_down": 2 * up,
        "rounds": 2,
        "seconds_per_round": 1.0,
        "peak_rss_mb": 100.0 + seed,
        "clients": 10,
        "data": {"test": 50, "client_train": 400},
    }
    majority = {"accuracy": 0.5, "macro_f1": 0.25, "weighted_f1": 0.3}
    return {
        "task": task,
        "algorithm": algorithm,
        "seed": seed,
        "cpu_s": 4.0,
        "peak_rss_is_per_run": True,
        "majority": majority,
        "summary": summary,
    }


def test_aggregate_gives_mean_and_std_over_seeds(tmp_path: Path) -> None:
    for seed, f1 in ((0, 0.4), (1, 0.6)):
        path = tmp_path / "t" / f"fedavg-seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_record("t", "fedavg", seed, f1, 1_000_000)))
    assert report.complete_runs(tmp_path, {"t": ("fedavg", "local")}, [0, 1]) == [("t", "fedavg")]
    assert report.complete_runs(tmp_path, {"t": ("fedavg",)}, [0, 1, 2]) == []  # seed 2 missing
    rows = report.aggregate(tmp_path, [("t", "fedavg")], [0, 1])
    table = report.Table(rows, ["t"])
    f1 = table.get("t", "fedavg", "overall", "macro_f1")
    assert f1["mean"] == pytest.approx(0.5) and f1["std"] == pytest.approx(0.1)
    assert f1["seeds"] == "0 1"
    assert table.get("t", "fedavg", "cost", "total_mb")["mean"] == pytest.approx(3.0)
    assert table.get("t", "fedavg", "cost", "mb_up_per_round")["mean"] == pytest.approx(0.5)
    assert table.get("t", "fedavg", "cost", "cpu_s_per_round")["mean"] == pytest.approx(2.0)
    assert table.get("t", report.MAJORITY, "test", "macro_f1")["mean"] == pytest.approx(0.25)

    report.write_rows(tmp_path / "rows.csv", rows)
    back = report.read_rows(tmp_path / "rows.csv")
    assert {(r["key"], r["metric"]): r["mean"] for r in back} == pytest.approx(
        {(r["key"], r["metric"]): r["mean"] for r in rows}
    )


def test_merge_replaces_only_the_rerun_rows() -> None:
    old = [
        {"task": "t", "algorithm": "fedavg", "key": "overall", "metric": "macro_f1", "mean": 0.1},
        {"task": "t", "algorithm": "local", "key": "overall", "metric": "macro_f1", "mean": 0.2},
    ]
    fresh = [{"task": "t", "algorithm": "fedavg", "key": "overall", "metric": "macro_f1", "mean": 0.9}]
    merged = report.merge(old, fresh)
    assert sorted((r["algorithm"], r["mean"]) for r in merged) == [("fedavg", 0.9), ("local", 0.2)]
