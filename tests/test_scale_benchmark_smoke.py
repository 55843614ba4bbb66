"""The scale benchmark: its task keeps the work of a round fixed as clients grow; smoke mode runs."""

from __future__ import annotations

import sys
from pathlib import Path

from benchmark_runs import ROOT, run_benchmark
from fedmosaic.config import load_config
from fedmosaic.data.tasks import build_task

sys.path.insert(0, str(ROOT / "benchmarks"))

import scale


def test_scale_task_fixes_samples_per_client_and_the_test_set() -> None:
    for n in (10, 40):
        task = build_task(load_config(None, scale.overrides(n, 0, 2)))
        assert len(task.clients) == n
        assert len(task.test) == scale.TEST_SIZE
        sizes = {len(c.train) + len(c.val) for c in task.clients}
        assert sizes == {scale.SAMPLES_PER_CLIENT}
        assert {c.spec.group for c in task.clients} == {"image+text"}


def test_scale_benchmark_smoke(tmp_path: Path) -> None:
    target = tmp_path / "BENCHMARKS.md"
    proc = run_benchmark("scale.py", "--smoke", "--output", str(target), timeout=600)
    out = proc.stdout
    assert "| 10 |" in out and "| 30 |" in out
    assert "30 vs 10 clients, CPU seconds per round:" in out
    assert "Peak resident memory with 30 clients:" in out
    # issue 20: the clients share the model instances, so live torch memory does not grow with them
    assert "Live torch memory with 30 vs 10 clients: 2 -> 2 models" in out
    assert "`python benchmarks/scale.py --smoke`" in out
    assert not target.exists()  # smoke mode never writes the published table
