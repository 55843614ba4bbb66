"""Resuming a Flower run with real processes on 127.0.0.1: kill the ServerApp, the SuperLink or a
SuperNode mid-round, restart what died, submit the run again with ``resume = true`` and compare
``metrics.jsonl`` byte for byte with an uninterrupted run's (the local engine's, which Flower's
equals: tests/test_flower.py).

The algorithm is scaffold: every client keeps a control variate in its state, so a state that was
not restored (or a stale one from the interrupted round) changes the numbers
(tests/test_flower_resume.py shows that in-process). Each SuperNode keeps its clients' states in a
folder of its own (node config ``state-dir``); the kill waits until a node has written round 2's
states, so the resumed round 2 must ignore them. Every process is started by
:mod:`fedmosaic.engines.flower_local` and stopped by PID; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from fedmosaic.config import load_config
from fedmosaic.engines.flower import prepare_nodes, write_app
from fedmosaic.engines.flower_local import LocalFederation, alive, descendants, local_federation
from fedmosaic.engines.run_folder import read_jsonl
from test_flower_resume import SETS, uninterrupted_metrics


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return prepare_nodes(load_config(None, SETS), tmp_path_factory.mktemp("nodes"), 2)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return uninterrupted_metrics(tmp_path_factory.mktemp("local"))


WAIT_S = 600.0  # bounded waits for a round on a loaded 2-core machine
RUN_TIMEOUT_S = 900.0
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3 * WAIT_S + 2 * RUN_TIMEOUT_S)]


def start_node(fed: LocalFederation, k: int, nodes: list[Path], states: Path, worker: bool = True):
    return fed.start_supernode(f"node_{k}", nodes[k], state_dir=states / f"node_{k}", worker=worker)


def kill(pid: int) -> list[int]:
    """SIGKILL ``pid`` and everything below it (a machine or process that dies); wait until gone."""
    pids = [*descendants(pid), pid]
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while [p for p in pids if alive(p)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)], "killed processes still alive after 30 s"
    return pids


def leftovers(root: Path) -> list[int]:
    """Processes still running with this test's Flower home (an orphan no PID list reached)."""
    marker = f"FLWR_HOME={root / 'flower' / 'flwr-home'}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0") and alive(int(environ.parent.name)):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def server_app_pid(fed: LocalFederation) -> int:
    """The running ServerApp process (SuperExec, below the SuperLink, starts one per run)."""
    for pid in descendants(fed.processes["superlink"].pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"flwr-serverapp" in cmdline:
            return pid
    raise AssertionError("no flwr-serverapp process below the SuperLink")


def wait_for(what: str, check, timeout_s: float, fed: LocalFederation):
    """Bounded wait until ``check()`` is truthy (fails early when the SuperLink died)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := check():
            return found
        assert fed.processes["superlink"].poll() is None, fed.log("superlink")[-2000:]
        time.sleep(0.05)
    raise TimeoutError(f"{what} within {timeout_s:.0f} s")


def start_run_and_wait_for_round_2_states(fed: LocalFederation, nodes: list[Path], root: Path):
    """Start two SuperNodes (and workers), submit the run into ``root/out`` and return once a node has
    written a client's round-2 state (mid-round 2): the SuperNode processes and the app folder."""
    states = root / "states"
    started = [start_node(fed, k, nodes, states) for k in range(2)]
    fed.wait_workers()
    app = write_app(root / "app")
    fed.submit(app, {"set": ";".join(SETS), "out": str(root / "out"), "min-nodes": 2})
    wait_for("a round-2 client state", lambda: list(states.glob("*/*/*/r00002.safetensors")), WAIT_S, fed)
    return started, app


def resume_and_compare(fed: LocalFederation, app: Path, out: Path, reference: bytes, **rc) -> None:
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["round"] for r in rows] == [1], "the kill did not land in round 2"
    run_id = fed.submit(app, {"out": str(out), "resume": True, "min-nodes": 2, **rc})
    status = fed.wait_run(run_id, RUN_TIMEOUT_S)
    assert status == "finished:completed", f"{status}\n{fed.log('superlink')[-3000:]}"
    assert (out / "metrics.jsonl").read_bytes() == reference
    assert [t["round"] for t in read_jsonl(out / "timings.jsonl")] == [1, 2, 3]


def test_serverapp_killed_mid_round_and_a_supernode_restarted_resume_exactly(
    nodes, reference, tmp_path: Path
) -> None:
    states, out = tmp_path / "states", tmp_path / "out"
    with local_federation(tmp_path / "flower") as fed:
        started, app = start_run_and_wait_for_round_2_states(fed, nodes, tmp_path)
        kill(server_app_pid(fed))
        # node_1 restarts too (SuperNode and worker): nothing of its clients is left in memory
        kill(fed.processes["node_1-worker"].pid)
        kill(started[1].pid)
        start_node(fed, 1, nodes, states)
        fed.wait_workers()
        resume_and_compare(fed, app, out, reference)
    assert not [pid for pid in fed.stopped if alive(pid)]
    assert not leftovers(tmp_path)


def test_superlink_killed_mid_round_resumes_exactly(nodes, reference, tmp_path: Path) -> None:
    states, out = tmp_path / "states", tmp_path / "out"
    with local_federation(tmp_path / "flower") as fed:
        started, app = start_run_and_wait_for_round_2_states(fed, nodes, tmp_path)
        kill(fed.processes["superlink"].pid)  # with its SuperExec and the ServerApp
        # A SuperNode whose SuperLink went away retries, then ends by itself ("SuperNode terminated
        # gracefully" in flwr 1.41.0), leaving a ClientApp it had started behind: the sites restart
        # theirs (killed here at once, with everything they started). Node workers keep running.
        for proc in started:
            kill(proc.pid)
        fed.start_superlink()  # same port, in-memory state: it knows no node any more
        for k in range(2):
            start_node(fed, k, nodes, states, worker=False)
        resume_and_compare(fed, app, out, reference)
    assert not [pid for pid in fed.stopped if alive(pid)]
    assert not leftovers(tmp_path)
