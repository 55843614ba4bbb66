"""Flower: a SuperNode that dies mid-round.

The coordinator waits a bounded time for a round's replies (run config ``reply-timeout-s``); under
``on-node-failure = "drop"`` (the default) a node that fails, is reported offline or misses the
timeout is left out of the round, its clients recorded as ``dropped`` and the node in
``lost_nodes``, and the round goes on with the replies that arrived. The integration test kills one
of three SuperNodes (by PID, with its descendants) while round 2 runs and checks the run completes
every round. Everything binds 127.0.0.1; every wait is bounded; every process is stopped by PID in
``finally`` (:func:`fedmosaic.engines.flower_local.local_federation`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from conftest import TINY_OVERRIDES
from fedmosaic.engines.flower import Exchange, FlowerRunError, prepare_nodes, write_app
from fedmosaic.engines.flower_local import alive, descendants, local_federation
from fedmosaic.engines.node_data import load_node
from fedmosaic.engines.run_folder import read_jsonl

KILL_WAIT_S = 600.0  # bounded wait for round 1 to finish before the kill (a loaded 2-core machine)
RUN_TIMEOUT_S = 900.0
# What a node gets to answer a round: generous, because a healthy node on a machine this loaded can
# need minutes. The dead node is usually found sooner: once it misses its heartbeats (2 x 30 s) the
# SuperLink answers its pending message with a "node unavailable" error and drops it from the node
# list, so later rounds do not ask it at all.
REPLY_TIMEOUT_S = 300.0
# One client per node keeps the run short (each node still starts a ClientApp process per message).
SETS = [*TINY_OVERRIDES, "rounds=3", "output.plots=false", 'clients.mix="image:1,text:1,image+text:1"']


# ----------------------------------------------------------------------------- Exchange, no network


@dataclass
class _Reply:
    source: str
    content: object = None
    reason: str = ""
    code: int = 2  # Flower's ErrorCode.CLIENT_APP_RAISED_EXCEPTION

    @property
    def metadata(self):
        return type("Metadata", (), {"reply_to_message_id": self.source})()

    def has_error(self) -> bool:
        return bool(self.reason)

    @property
    def error(self):
        return type("Error", (), {"reason": self.reason, "code": self.code})()


@dataclass
class _Grid:
    """Node 1 answers, node 2 fails (its ClientApp raised / the SuperLink reports it offline),
    node 3 never answers."""

    pulls: int = 0
    pushed: list = field(default_factory=list)

    def push_messages(self, messages):
        self.pushed = [f"m{m.metadata.dst_node_id}" for m in messages]
        return self.pushed

    def pull_messages(self, ids):
        self.pulls += 1
        out = []
        if "m1" in ids:
            out.append(_Reply("m1", content="weights"))
        if "m2" in ids:
            out.append(_Reply("m2", reason="Node Unavailable"))
        return out

    def get_node_ids(self):
        return [1, 2, 3]


def test_exchange_goes_on_without_failed_and_silent_nodes_within_the_timeout(monkeypatch) -> None:
    from flwr.app import RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    # A flwr Message can only be made inside a run; the ServerApp process sets these.
    monkeypatch.setattr(TaskIdentity, "_run_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1, raising=False)

    grid = _Grid()
    exchange = Exchange(grid, timeout_s=0.3, poll_s=0.01, tolerate=True)  # type: ignore[arg-type]
    start = time.monotonic()
    replies = exchange("train", {1: RecordDict(), 2: RecordDict(), 3: RecordDict()}, "round-1")
    assert time.monotonic() - start < 5  # bounded by timeout_s, not by the silent node
    assert replies == {1: "weights"}
    assert set(exchange.failed) == {2, 3}
    assert "Node Unavailable" in exchange.failed[2]
    assert "reply-timeout-s=0.3" in exchange.failed[3]

    strict = Exchange(_Grid(), timeout_s=0.3, poll_s=0.01)  # type: ignore[arg-type]
    with pytest.raises(FlowerRunError, match="failed on train"):
        strict("train", {1: RecordDict(), 2: RecordDict()}, "round-1")
    with pytest.raises(FlowerRunError, match="reply-timeout-s: node"):
        strict("train", {1: RecordDict(), 3: RecordDict()}, "round-1")
    # the query asks strictly even when rounds tolerate: a node that cannot say what it hosts is an error
    with pytest.raises(FlowerRunError, match="failed on query"):
        exchange("query", {2: RecordDict()}, "query", tolerate=False)


@dataclass
class _RestartedNodeGrid:
    """Node 1 answers; node 2 is listed but gone (a SuperNode that was restarted: Flower answers
    NODE_UNAVAILABLE until it drops it); node 3, its new self, registers after the first query."""

    failing: int = 5  # Flower's ErrorCode.NODE_UNAVAILABLE
    successor: bool = True
    queried: list = field(default_factory=list)

    def get_node_ids(self):
        return [1, 2, 3] if self.queried and self.successor else [1, 2]

    def push_messages(self, messages):
        self.queried.append(sorted(m.metadata.dst_node_id for m in messages))
        return [f"m{m.metadata.dst_node_id}" for m in messages]

    def pull_messages(self, ids):
        bad = _Reply("m2", reason="Node Unavailable", code=self.failing)
        return [bad if i == "m2" else _Reply(i, content=f"answer of {i}") for i in ids]


def test_the_query_skips_a_node_that_is_gone_and_waits_for_another(monkeypatch) -> None:
    from flwr.supercore.task_identity import TaskIdentity

    from fedmosaic.config import load_config
    from fedmosaic.engines.flower import find_nodes

    monkeypatch.setattr(TaskIdentity, "_run_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1, raising=False)
    cfg = load_config(None, SETS)
    grid = _RestartedNodeGrid()
    answers = find_nodes(Exchange(grid, 5.0, 0.01), 2, 10.0, cfg)  # type: ignore[arg-type]
    assert answers == {1: "answer of m1", 3: "answer of m3"}
    assert grid.queried == [[1, 2], [3]]  # node 1 is not asked twice, node 2 not again
    with pytest.raises(FlowerRunError, match=r"min-nodes: 1 SuperNode\(s\) connected after 0 s, 2 needed"):
        find_nodes(Exchange(_RestartedNodeGrid(successor=False), 5.0, 0.01), 2, 0.3, cfg)  # type: ignore[arg-type]
    with pytest.raises(FlowerRunError, match="node 2 failed on query"):  # its ClientApp raised: stop
        find_nodes(Exchange(_RestartedNodeGrid(failing=2), 5.0, 0.01), 2, 10.0, cfg)  # type: ignore[arg-type]


class _InProcessNodes:
    """An Exchange stand-in: node 0 trains its clients in this process, node 1 fails, node 2 is
    offline (the SuperLink no longer lists it)."""

    tolerate = True

    def __init__(self, cfg, task) -> None:
        from fedmosaic.algorithms.registry import get_algorithm
        from fedmosaic.engines.protocol import build_client, settings_from_config

        self.cfg, self.task, self.failed = cfg, task, {}
        settings = settings_from_config(cfg, task.info, len(task.specs))
        self.client = build_client(get_algorithm(cfg.algorithm.name), settings)
        self.states: dict = {}
        self.asked: list[set[int]] = []
        self.grid = type("Grid", (), {"get_node_ids": lambda _: [0, 1]})()

    def __call__(self, kind, contents, group, tolerate=None):
        from flwr.app import RecordDict

        from fedmosaic.core.message import Message
        from fedmosaic.core.seeding import Rng
        from fedmosaic.engines.flower_records import get_messages, put_messages

        self.asked.append(set(contents))
        self.failed = {1: "node 1 failed on train: boom"} if 1 in contents else {}
        replies = {}
        if 0 in contents:
            r = int(group.split("-")[1])
            replies[0], answers = RecordDict(), {}
            for cid, message in get_messages(contents[0], kind).items():
                state = self.states.get(cid, Message())
                answers[cid], self.states[cid] = self.client.fit(
                    message, state, self.task.client(cid), Rng(self.cfg.seed, r, cid)
                )
            put_messages(replies[0], kind, answers)
        return replies


def test_flower_federation_aggregates_what_arrived_and_records_lost_nodes(tmp_path: Path) -> None:
    from fedmosaic.config import load_config
    from fedmosaic.data.tasks import build_task
    from fedmosaic.engines.flower import flower_federation
    from fedmosaic.engines.run_folder import RunFolder

    cfg = load_config(None, [*TINY_OVERRIDES, "output.plots=false"])
    task = build_task(cfg)
    ids = [c.spec.id for c in task.clients]
    node_of = {cid: k % 3 for k, cid in enumerate(ids)}  # three nodes
    exchange = _InProcessNodes(cfg, task)
    fed = flower_federation(cfg, task, RunFolder(tmp_path), exchange, task.specs, node_of, 0)  # type: ignore[arg-type]
    summary = fed.run()
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["round"] for r in rows] == [1, 2] and summary["rounds"] == 2
    lost_clients = sorted(cid for cid in ids if node_of[cid] != 0)
    for row in rows:
        assert row["dropped"] == lost_clients
        assert row["lost_nodes"] == {"1": "node 1 failed on train: boom", "2": row["lost_nodes"]["2"]}
        assert "offline" in row["lost_nodes"]["2"]
        assert row["train"]["train_loss"] > 0  # aggregated from node 0's clients
        assert row["bytes_up"] > 0
    assert all(asked == {0, 1} for asked in exchange.asked)  # the offline node was never asked

    exchange.tolerate = False  # on-node-failure = "fail": the same failure stops the run
    strict = flower_federation(
        cfg,
        task,
        RunFolder(tmp_path / "strict"),
        exchange,  # type: ignore[arg-type]
        task.specs,
        node_of,
        0,
    )
    with pytest.raises(FlowerRunError, match="no train reply for client"):
        strict.run()


# ----------------------------------------------------------------------------- a real federation


def kill_node(proc) -> list[int]:
    """SIGKILL a SuperNode and everything it started (a machine that dies); the PIDs killed."""
    pids = [*descendants(proc.pid), proc.pid]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return pids


def wait_rows(metrics: Path, n: int, timeout_s: float, fed) -> list[dict]:
    """Bounded wait until ``metrics`` holds ``n`` rows (fails early if the SuperLink died)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            rows = read_jsonl(metrics) if metrics.exists() else []
        except ValueError:  # a row being written right now
            rows = []
        if len(rows) >= n:
            return rows
        assert fed.processes["superlink"].poll() is None, fed.log("superlink")[-2000:]
        time.sleep(0.1)
    raise TimeoutError(f"{metrics} did not reach {n} rows within {timeout_s:.0f} s")


@pytest.mark.slow  # ~4-7 min on a loaded 2-core machine: three rounds, a ClientApp process per message
@pytest.mark.timeout(KILL_WAIT_S + RUN_TIMEOUT_S + 120)  # every wait inside is bounded too
def test_a_supernode_killed_mid_round_is_dropped_and_the_run_completes(tmp_path: Path) -> None:
    from fedmosaic.config import load_config

    sets = SETS
    folders = prepare_nodes(load_config(None, sets), tmp_path / "nodes", 3)
    victim_clients = sorted(c.spec.id for c in load_node(str(folders[2])).clients)
    out = tmp_path / "run"
    with local_federation(tmp_path / "flower") as fed:
        nodes = [fed.start_supernode(f"node_{k}", folder) for k, folder in enumerate(folders)]
        run_id = fed.submit(
            write_app(tmp_path / "app"),
            {"set": ";".join(sets), "out": str(out), "min-nodes": 3, "reply-timeout-s": REPLY_TIMEOUT_S},
        )
        wait_rows(out / "metrics.jsonl", 1, KILL_WAIT_S, fed)
        killed = kill_node(nodes[2])  # round 2 has started: its plan goes out right after row 1
        assert len(read_jsonl(out / "metrics.jsonl")) == 1  # killed mid-round, not between runs
        status = fed.wait_run(run_id, RUN_TIMEOUT_S)
        assert status == "finished:completed", f"{status}\n{fed.log('superlink')[-3000:]}"
        assert not [pid for pid in killed if alive(pid)]
    assert not [pid for pid in fed.stopped if alive(pid)]

    rows = read_jsonl(out / "metrics.jsonl")
    seconds = [t["seconds"] for t in read_jsonl(out / "timings.jsonl")]
    for row, s in zip(rows, seconds, strict=False):  # shown by pytest -rP
        print(f"round {row['round']}: {s:.0f} s, dropped {row.get('dropped')}, lost {row.get('lost_nodes')}")
    assert [r["round"] for r in rows] == [1, 2, 3]  # every round ran
    assert "dropped" not in rows[0] and "lost_nodes" not in rows[0]
    lost = set()
    for row in rows[1:]:  # the round the node died in and every round after it
        assert row["dropped"] == victim_clients, row
        assert len(row["lost_nodes"]) == 1, row["lost_nodes"]
        lost |= set(row["lost_nodes"])
        assert "skipped" not in row and row["train"]  # aggregated from the replies that arrived
        assert set(row["clients"]) - set(victim_clients)  # survivors were planned ...
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 3
    assert summary["engine"]["nodes"] == 3
    assert summary["engine"]["lost_nodes"] == sorted(lost)  # ... the dead node is on record
    assert summary["final"]  # the global model was evaluated after the loss
