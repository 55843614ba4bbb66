"""The Flower engine: any fedmosaic Algorithm across machines on Flower's Deployment Engine.

``server_app`` (a Flower ``ServerApp``) runs the algorithm's server half on the coordinator;
``client_app`` (a Flower ``ClientApp``, :mod:`fedmosaic.engines.flower_client`) runs its client half
on every SuperNode, in a long-lived node worker when one runs beside the SuperNode
(:mod:`fedmosaic.engines.node_worker`), else in the ClientApp process itself
(:mod:`fedmosaic.engines.flower_node`). Flower carries the messages (SuperLink, SuperNodes,
``flwr run``); fedmosaic's only channel of its own is the worker's local Unix socket.

Rounds follow the local engine exactly (both are a :class:`fedmosaic.Federation`: the same
round protocol, checkpoints and summary), with one difference: instead of calling ``client.fit``
in-process, the plan is grouped by the SuperNode that hosts each client and sent as one Flower
message per node
(:mod:`fedmosaic.engines.flower_records` does the Message <-> RecordDict mapping). A client's
persistent state lives on its node: in Flower's ``Context.state``, or with node config ``state-dir``
on the node's disk (:mod:`fedmosaic.engines.node_states`), where it outlives a restart.

Where the data comes from:

- the server's proxy, labelled and test sets: the run config (``task.*``) on the coordinator;
- each node's clients: the SuperNode's ``--node-config data-dir=...``, a node folder written by
  ``prepare-nodes`` (the local engine's exact rows) or the site's raw data, from which the node
  builds its own clients with the run config and its ``options``/``name`` node config;
  ``modalities="image,text"`` narrows what the node's clients hold (see :mod:`.node_data`).
- each node's device: ``--node-config device=...`` (``cpu`` when absent, ``auto``, ``cuda``,
  ``cuda:N``, ``mps``), the node's own hardware; the coordinator's server half uses the run
  config's ``engine.device``.

Run config (``[tool.flwr.app.config]``, overridable with ``flwr run --run-config``):
``config`` (a fedmosaic TOML on the coordinator, "" = the embedded default), ``set`` (overrides
separated by ``;``), ``out`` (the results folder), ``min-nodes``, ``node-wait-s`` (bounded wait
for ``min-nodes`` before round 1), ``reply-timeout-s`` (bounded wait for a round's replies),
``on-node-failure`` (``"drop"``: a node that dies, fails or misses the timeout mid-round is left
out of that round, its clients recorded as ``dropped`` and the node in ``lost_nodes``; the round
goes on with the replies that arrived and the node is asked again next round if the SuperLink
still lists it. ``"fail"``: the run stops), ``poll-s``, ``resume`` (``true``: continue the run in
``out`` after its last committed round, :mod:`fedmosaic.engines.flower_resume`), ``rounds`` (with
``resume = true``: extend the run to this many rounds; 0, the default: the run's own).

Plug-ins: the run config travels in every message and a node validates it like any process
(:func:`fedmosaic.config.validate`), so it imports the config's ``plugins`` modules and its own
installed entry points first. Each must be importable on every node: installed there, or on its
``PYTHONPATH`` (``set = "plugins=['my_module']"`` names one for the whole run).

``python -m fedmosaic.engines.flower app DIR`` writes the Flower app folder ``flwr run`` takes;
``python -m fedmosaic.engines.flower prepare-nodes`` writes node folders from a run config.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
from flwr.app import Context, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedmosaic.algorithms.registry import get_algorithm
from fedmosaic.config import ConfigError, RunConfig, load_config
from fedmosaic.core.errors import FlowerRunError
from fedmosaic.core.message import Message as FMessage
from fedmosaic.core.modality import ClientSpec
from fedmosaic.core.task import Task
from fedmosaic.engines import flower_pull
from fedmosaic.engines.federation import Federation
from fedmosaic.engines.flower_client import (  # noqa: F401  (the ClientApp, importable from here as before)
    EVALUATE,
    QUERY,
    RUN,
    STATE,
    TRAIN,
    client_app,
    handle_evaluate,
    handle_query,
    handle_train,
)
from fedmosaic.engines.flower_exchange import Exchange, wait_for_nodes
from fedmosaic.engines.flower_records import get_json, get_messages, put_json, put_messages, spec_from_json
from fedmosaic.engines.flower_resume import check_start, extend_rounds, load_run, start_folder
from fedmosaic.engines.folder_lock import FolderLock
from fedmosaic.engines.local import configure_threads
from fedmosaic.engines.node_data import export_node, info_to_json
from fedmosaic.engines.protocol import Exchanged, check_fit
from fedmosaic.engines.run_folder import RunFolder, read_jsonl

NODE_FAILURE = ("drop", "fail")  # run config on-node-failure: go on without a lost node, or stop the run
log = logging.getLogger("fedmosaic.flower")
DEFAULT_RUN_CONFIG: dict[str, Any] = {
    "config": "",
    "set": "",
    "out": "",
    "min-nodes": 1,
    "node-wait-s": 60.0,
    "reply-timeout-s": 600.0,
    "on-node-failure": "drop",
    "poll-s": 0.05,
    "resume": False,
    "rounds": 0,
}


# --------------------------------------------------------------------------------------------- server


def federated_algorithm(cfg: RunConfig) -> type:
    """The configured algorithm, refusing one that needs pooled client data (a federation has none)."""
    algorithm = get_algorithm(cfg.algorithm.name)
    if algorithm.needs_pooled_data:
        raise ConfigError(
            f"algorithm.name: {cfg.algorithm.name!r} trains on pooled client data, which a "
            "federation never has; run it with the local engine"
        )
    return algorithm


class _ServerTask:
    """What the summary needs from the task when clients live on other machines."""

    def __init__(self, task: Task, client_train: int, client_val: int) -> None:
        self.info, self._task = task.info, task
        self.proxy, self.labelled, self.test = task.proxy, task.labelled, task.test
        self.streams = task.streams  # the server's recordings (the autoencoder family's evaluation)
        self._client = {"client_train": client_train, "client_val": client_val}

    def data_summary(self) -> dict[str, object]:
        summary = self._task.data_summary()
        summary.update(self._client)  # the nodes' clients, not the coordinator's own split
        return summary


class FlowerTransport:
    """Carries a round's messages to the clients on SuperNodes: one Flower message per node.

    Rounds, checkpoints, ``metrics.jsonl``, ``timings.jsonl`` and ``summary.json`` are
    :class:`fedmosaic.Federation`'s, as on the local engine; only the delivery differs. Client
    states stay on the nodes (``run``: the run key and resumed-after round they are kept under).
    """

    def __init__(
        self,
        cfg: RunConfig,
        exchange: Exchange,
        node_of: dict[str, int],
        clients_per_round: int,
        run: dict[str, Any] | None = None,
    ) -> None:
        self.exchange, self.node_of = exchange, node_of
        self.lost: dict[int, str] = {}  # nodes lost in the current round -> why
        # What a node needs to build its client half travels with every message (Flower's rule).
        self.run_record = {
            "config": tomli_w.dumps(cfg.to_toml_dict()),
            "clients-per-round": clients_per_round,
            **(run or {}),
        }

    def _send(self, kind: str, r: int, plan: dict[str, FMessage]) -> tuple[dict[str, FMessage], list[str]]:
        """Send each node the messages of the clients it hosts; the replies in plan order and the
        planned clients whose reply never came (only under ``on-node-failure = "drop"``)."""
        tolerate = self.exchange.tolerate
        # A node the SuperLink no longer lists (it missed its heartbeats) is not even asked.
        online = set(self.exchange.grid.get_node_ids()) if tolerate else set(self.node_of.values())
        per_node: dict[int, dict[str, FMessage]] = {}
        for cid, message in plan.items():
            node = self.node_of[cid]
            if node not in online:
                self.lost[node] = f"node {node} is offline (the SuperLink no longer lists it)"
                continue
            per_node.setdefault(node, {})[cid] = message
        contents: dict[int, RecordDict] = {}
        for node, messages in per_node.items():
            contents[node] = RecordDict()
            put_json(contents[node], RUN, round=r, **self.run_record)
            put_messages(contents[node], kind, messages)
        replies: dict[str, FMessage] = {}
        for content in self.exchange(kind, contents, f"round-{r}").values():
            replies.update(get_messages(content, kind))
        self.lost.update(self.exchange.failed)
        missing = [cid for cid in plan if cid not in replies]
        if missing and not tolerate:
            raise FlowerRunError(f"no {kind} reply for client(s) {missing} in round {r}")
        # the local engine's order: aggregation is order-exact
        return {cid: replies[cid] for cid in plan if cid in replies}, missing

    def fit(self, round: int, plan: dict[str, FMessage]) -> Exchanged:
        """The round's fit messages to the nodes hosting the planned clients."""
        self.lost = {}
        return self._send(TRAIN, round, plan)

    def evaluate(self, round: int, plan: dict[str, FMessage]) -> Exchanged:
        """The evaluation messages, likewise."""
        return self._send(EVALUATE, round, plan)

    def annotate(self, row: dict[str, Any]) -> None:
        """The nodes lost this round, and why."""
        if self.lost:
            row["lost_nodes"] = {str(node): reason for node, reason in sorted(self.lost.items())}

    def close(self) -> None:
        """Nothing to release: the grid belongs to the ServerApp."""


def flower_federation(
    cfg: RunConfig,
    task: Task,
    folder: RunFolder,
    exchange: Exchange,
    specs: list[ClientSpec],
    node_of: dict[str, int],
    client_val: int,
    run: dict[str, Any] | None = None,
) -> Federation:
    """The coordinator's :class:`fedmosaic.Federation`: the server half here, clients on the nodes
    (``run``: what every message says about the run, :func:`fedmosaic.engines.flower_resume.start_folder`)."""
    federated_algorithm(cfg)
    per_round = cfg.clients.per_round or len(specs)
    transport = FlowerTransport(cfg, exchange, node_of, per_round, run)
    server_task = _ServerTask(task, sum(s.n_train for s in specs), client_val)
    task_view: Any = server_task  # what Federation reads of a task; the clients are on the nodes
    return Federation.from_config(cfg, task_view, folder=folder.path, transport=transport, specs=specs)


def find_nodes(
    exchange: Exchange, minimum: int, timeout_s: float, cfg: RunConfig, run: dict[str, Any] | None = None
) -> dict[int, RecordDict]:
    """The answers of at least ``minimum`` SuperNodes to "which clients do you host?", within ``timeout_s``.

    A node the SuperLink still lists although it is gone (it missed its heartbeats: a SuperNode that
    crashed or was restarted, whose new self registers beside it) answers Flower's NODE_UNAVAILABLE;
    it is left out and the wait goes on for another. Any other failure to answer stops the run: a
    node that cannot say what it hosts would leave its clients out of the run unnoticed.
    """
    deadline = time.monotonic() + timeout_s
    config = tomli_w.dumps(cfg.to_toml_dict())
    answers: dict[int, RecordDict] = {}
    gone: set[int] = set()
    while len(answers) < minimum:
        listed = wait_for_nodes(exchange.grid, minimum, max(0.0, deadline - time.monotonic()), exclude=gone)
        contents = {}
        for node in (n for n in listed if n not in answers):
            contents[node] = RecordDict()
            put_json(contents[node], RUN, round=0, config=config, **(run or {}))
        answers.update(exchange(QUERY, contents, "query", tolerate=False, skip_gone=True))
        gone |= exchange.gone
    return answers


def query_nodes(answers: dict[int, RecordDict], task: Task) -> tuple[list[ClientSpec], dict[str, int], int]:
    """What the nodes answered to the query (:func:`find_nodes`), checked against the server's task.

    Returns the client specs in task order (the order the local engine uses, so client sampling and
    aggregation match it), the node hosting each client, and the clients' total validation samples.
    """
    expected = info_to_json(task.info)
    found: list[tuple[int, str, ClientSpec]] = []
    node_of: dict[str, int] = {}
    client_val = 0
    for node, content in sorted(answers.items()):
        answer = get_json(content, "node")
        if answer["info"] != expected:
            raise FlowerRunError(
                f"node {node}: its data describes {json.dumps(answer['info'])}, but the run config's task "
                f"is {json.dumps(expected)}; prepare its node folder from the same run config"
            )
        for entry in answer["clients"]:
            if entry["id"] in node_of:
                raise FlowerRunError(
                    f"client {entry['id']} is hosted by nodes {node_of[entry['id']]} and {node}"
                )
            node_of[entry["id"]] = node
            found.append((int(entry["order"]), entry["id"], spec_from_json(entry)))
        client_val += int(answer["client_val"])
    if not found:
        raise FlowerRunError("no SuperNode hosts any client (check each node's --node-config data-dir)")
    return [spec for _, _, spec in sorted(found)], node_of, client_val


def run_server(grid: Grid, run_config: dict[str, Any]) -> dict[str, Any]:
    """The ServerApp's work: wait for nodes, learn their clients, run every round, write the outputs."""
    rc = {**DEFAULT_RUN_CONFIG, **run_config}
    cfg, folder, resume = load_run(rc)  # resume = true: the folder's own config
    configure_threads(cfg.engine.threads)
    federated_algorithm(cfg)  # fail before waiting for nodes
    with FolderLock(folder.path, "out"):
        return _serve(grid, rc, cfg, folder, resume)


def _serve(grid: Grid, rc: dict[str, Any], cfg: RunConfig, folder: RunFolder, resume: bool) -> dict[str, Any]:
    """:func:`run_server` once the results folder is locked."""
    from fedmosaic.data.tasks import build_task
    from fedmosaic.reporting.report import write_run_report

    check_start(folder, resume)
    if rc["on-node-failure"] not in NODE_FAILURE:  # before anything is written
        raise ConfigError(f"on-node-failure: {rc['on-node-failure']!r} is not one of {NODE_FAILURE}")
    cfg = extend_rounds(folder, cfg, rc["rounds"], resume)  # resume with rounds = N: more rounds
    # The coordinator's proxy, labelled and test sets (and the task description); the algorithm's fit
    # to the data is checked first, before anything is written or any node is waited for.
    task = build_task(cfg, check=check_fit(cfg, baselines=False))
    run = start_folder(folder, cfg, resume)  # the run key the nodes keep client states under
    drop = rc["on-node-failure"] == "drop"
    exchange = Exchange(grid, float(rc["reply-timeout-s"]), float(rc["poll-s"]), tolerate=drop)
    answers = find_nodes(exchange, int(rc["min-nodes"]), float(rc["node-wait-s"]), cfg, run)
    specs, node_of, client_val = query_nodes(answers, task)
    summary = flower_federation(cfg, task, folder, exchange, specs, node_of, client_val, run).run()
    summary["engine"] = {"name": "flower", "nodes": len(set(node_of.values()))}
    if lost := {n for row in read_jsonl(folder.metrics) for n in row.get("lost_nodes", {})}:
        summary["engine"]["lost_nodes"] = sorted(lost, key=int)  # nodes that failed in some round
    folder.write_summary(summary)
    write_run_report(folder.path, plots=cfg.output.plots)
    return summary


server_app = ServerApp()


@server_app.main()
def _server_main(grid: Grid, context: Context) -> None:
    flower_pull.shorten_backoff()  # a reply's objects reach the SuperLink just after its head
    run_server(grid, dict(context.run_config))


# ----------------------------------------------------------------------------------- app folder, CLI

APP_PYPROJECT = {
    "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
    "project": {
        "name": "fedmosaic-flower",
        "version": "0.1.0",
        "description": "fedmosaic on Flower's Deployment Engine",
        "license": "Apache-2.0",
        # fedmosaic and flwr are installed beside the SuperLink and SuperNodes; nothing is installed at
        # run time (SuperLink: --disable-runtime-dependency-installation).
        "dependencies": [],
    },
    "tool": {
        "flwr": {
            "app": {
                "publisher": "fedmosaic",
                "components": {
                    "serverapp": "fedmosaic.engines.flower:server_app",
                    "clientapp": "fedmosaic.engines.flower_client:client_app",
                },
                "config": DEFAULT_RUN_CONFIG,
            }
        }
    },
}


def write_app(folder: Path) -> Path:
    """Write the Flower app folder ``flwr run`` takes (a pyproject.toml naming the two apps).

    A separate, one-file app keeps the FAB that ``flwr run`` uploads tiny: the code itself is the
    installed fedmosaic package on every machine.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(tomli_w.dumps(APP_PYPROJECT))
    return folder


def prepare_nodes(cfg: RunConfig, out: Path, nodes: int) -> list[Path]:
    """Build the task of ``cfg`` and write its clients into ``nodes`` node folders (contiguous blocks)."""
    from fedmosaic.data.tasks import build_task

    task = build_task(cfg, check=check_fit(cfg, baselines=False))
    ids = [c.spec.id for c in task.clients]
    if not 1 <= nodes <= len(ids):
        raise ConfigError(f"--nodes: {nodes} must be between 1 and the {len(ids)} clients")
    blocks = np.array_split(np.arange(len(ids)), nodes)
    return [
        export_node(task, [ids[i] for i in block], Path(out) / f"node_{k}") for k, block in enumerate(blocks)
    ]


def main(argv: list[str] | None = None) -> None:
    """``python -m fedmosaic.engines.flower {app,prepare-nodes}``."""
    parser = argparse.ArgumentParser(
        prog="python -m fedmosaic.engines.flower", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    app = sub.add_parser("app", help="write the Flower app folder that `flwr run` takes")
    app.add_argument("folder", type=Path)
    prep = sub.add_parser("prepare-nodes", help="write node folders (one per SuperNode) from a run config")
    prep.add_argument("--config", "-c", type=Path, default=None, help="fedmosaic TOML (default: embedded)")
    prep.add_argument("--set", "-s", action="append", default=[], dest="overrides", help="KEY=VALUE")
    prep.add_argument(
        "--plugin", "-p", action="append", default=[], dest="plugins", help="plug-in module (repeatable)"
    )
    prep.add_argument("--nodes", type=int, required=True, help="how many node folders")
    prep.add_argument("--out", "-o", type=Path, required=True, help="where node_0, node_1, ... go")
    args = parser.parse_args(argv)
    if args.command == "app":
        print(write_app(args.folder))
        return
    try:
        folders = prepare_nodes(load_config(args.config, args.overrides, args.plugins), args.out, args.nodes)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    for folder in folders:
        meta = json.loads((folder / "node.json").read_text())
        print(folder, " ".join(c["id"] for c in meta["clients"]))


if __name__ == "__main__":
    main()
