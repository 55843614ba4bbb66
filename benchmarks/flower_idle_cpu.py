"""What the faster polls cost while nothing runs: CPU seconds per second of an idle federation.

A SuperLink and 3 SuperNodes (with their SuperExecs) on 127.0.0.1, no run, once at Flower's default
pace (``flower-supernode``, SuperExec every 1 s) and once at fedmosaic's (``python -m
fedmosaic.engines.supernode``, idle poll 0.2 s; SuperExec every 0.1 s). Prints; writes nothing.

    python benchmarks/flower_idle_cpu.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from fedmosaic.engines.flower_local import local_federation
from flower_overhead import cpu_seconds

SETTLE_S, WINDOW_S, START_S = 20.0, 40.0, 240.0


def idle_rate(fast: bool) -> float:
    """CPU seconds per wall second of the federation's processes over ``WINDOW_S``, once started."""
    os.environ["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = "0.1" if fast else "1.0"
    root = Path(tempfile.mkdtemp())
    with local_federation(root / "federation", fast_poll=fast) as fed:
        for k in range(3):
            fed.start_supernode(f"node_{k}", root, worker=False)  # no run: its data is never read
        deadline = time.monotonic() + START_S
        while sum("SuperExec" in fed.log(f"node_{k}") for k in range(3)) < 3:
            if time.monotonic() > deadline:
                raise SystemExit("the SuperNodes did not start")
            time.sleep(1)
        time.sleep(SETTLE_S)
        pids = [p.pid for p in fed.processes.values()]
        cpu, t0 = cpu_seconds(pids), time.perf_counter()
        time.sleep(WINDOW_S)
        return (cpu_seconds(pids) - cpu) / (time.perf_counter() - t0)


def main() -> None:
    for fast in (False, True):
        pace = "fedmosaic's polls" if fast else "Flower's default polls"
        print(f"{pace}: {idle_rate(fast):.3f} CPU s per s (idle SuperLink + 3 SuperNodes)", flush=True)


if __name__ == "__main__":
    main()
