"""runner.in_processes: the end-of-run reports side by side in forked processes, results in order."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import pytest

from fedmosaic.runner import in_processes


def _where(name: str) -> Path:
    return Path(f"{name}-{os.getpid()}")


def _fails(name: str) -> Path:
    raise ValueError(f"{name} cannot be drawn")


def test_results_in_job_order_from_other_processes() -> None:
    jobs = [partial(_where, n) for n in ("a", "b", "c")]
    got = in_processes(jobs, workers=2)
    assert [p.name.split("-")[0] for p in got] == ["a", "b", "c"]
    assert all(p.name.split("-")[1] != str(os.getpid()) for p in got)


def test_one_worker_or_one_job_runs_here() -> None:
    here = str(os.getpid())
    assert [p.name for p in in_processes([partial(_where, "a"), partial(_where, "b")], 1)] == [
        f"a-{here}",
        f"b-{here}",
    ]
    assert in_processes([partial(_where, "a")], 2) == [Path(f"a-{here}")]


def test_a_job_error_is_raised_here() -> None:
    with pytest.raises(ValueError, match="b cannot be drawn"):
        in_processes([partial(_where, "a"), partial(_fails, "b")], workers=2)
