"""The file pipeline's tree: built once by ``init-root``, then read by every step.

``init-root`` is the only step that loads the data set: it splits it once and writes every part
where it belongs (each client's data into ``client_k/``, the server's sets into ``server/``) and
publishes what every site needs beside its own folder (:data:`PUBLISHED`). Nothing is written
before the data set is built and fits the algorithm, so a bad config leaves no half tree.

The root (``k`` = a client id)::

    R/config.toml                     the run's config                                     [published]
    R/server/task.json                task description, number of clients, the run's id   [published]
    R/server/server.json              the clients' specs (modalities, sample counts), the data summary
    R/server/data.npz                 the server's data: proxy, labelled and test sets (node_data format)
    R/server/streams.npz              its continuous recordings if the data set has them (reference protocol)
    R/server/state_rNNNNN_<step>.safetensors   the server's state (the one progress.json names)
    R/progress.json                   round, the step that is due, planned clients, bytes so far
    R/metrics.jsonl timings.jsonl summary.json report.md plots/   a run folder's outputs
    R/client_k/node.json, data.npz    the client's own data: a node folder holding one client
    R/client_k/model.safetensors      the client's persistent state (its own model)
    R/client_k/inbox.{safetensors,json}        the server's message and its envelope (run, round)
    R/client_k/outbox.{safetensors,json}       the client's reply and the round it answers
    R/client_k/eval_inbox.*, eval_outbox.*     the evaluation exchange, likewise
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, NamedTuple

from fedmosaic.algorithms.registry import get_algorithm
from fedmosaic.config import RunConfig
from fedmosaic.core.checkpoint import atomic_write_json
from fedmosaic.core.device import resolve_device
from fedmosaic.core.errors import PipelineError
from fedmosaic.core.modality import ClientSpec
from fedmosaic.core.task import TaskInfo
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.node_data import export_node, export_views, info_from_json, info_to_json, save_streams
from fedmosaic.engines.protocol import check_fit
from fedmosaic.engines.run_folder import RunFolder

FORMAT = 1
PUBLISHED = ("config.toml", "server/task.json")  # what every site needs beside its own client_k/


class Published(NamedTuple):
    """``server/task.json``: what every site knows of the run."""

    run_id: str  # envelopes name it: mail from another pipeline never counts
    info: TaskInfo
    n_clients: int


def build_tree(root: Path, cfg: RunConfig) -> None:
    """Split the data set into the clients' folders and ``server/``; mark round 1 as due to be planned.

    The caller holds the root's lock.
    """
    if (root / "progress.json").exists() or (root / "server" / "task.json").exists():
        raise PipelineError(f"--root: {root} already holds a pipeline; pick another folder")
    if cfg.engine.dropout:
        raise PipelineError(
            "engine.dropout: simulated reply loss is the local engine's; in the file pipeline a "
            "reply is lost when it does not come back (close the round with --min-clients)"
        )
    algorithm = get_algorithm(cfg.algorithm.name)
    resolve_device(cfg.engine.device)
    # Before anything is written: bad data or an algorithm that does not fit it leaves no tree.
    task = build_task(cfg, check=check_fit(cfg, baselines=False))
    RunFolder(root).write_config(cfg.to_toml_dict())  # the same TOML writer as run folders
    for client in task.clients:
        export_node(task, [client.spec.id], root / client.spec.id)
    server = root / "server"
    server.mkdir(parents=True, exist_ok=True)
    views = {"proxy": task.proxy, "labelled": task.labelled, "test": task.test}
    if algorithm.needs_pooled_data:
        # The centralized upper bound trains on every client's data by definition: its server
        # is the one party that holds it all (no client takes part in its rounds).
        views["pooled"] = task.pooled_train()
    export_views(task, views, server / "data.npz")
    if task.streams is not None:
        save_streams(task.streams, server / "streams.npz")
    specs = [_spec_to_json(c.spec) for c in task.clients]  # task order: sampling and aggregation
    atomic_write_json(server / "server.json", {"clients": specs, "data": task.data_summary()})
    published = {
        "format": FORMAT,
        # Envelopes name it: mail from another pipeline (an old root, a neighbour's) never counts.
        "run": uuid.uuid4().hex,
        "info": info_to_json(task.info),
        "clients": len(task.clients),
    }
    atomic_write_json(server / "task.json", published)
    atomic_write_json(root / "progress.json", {"round": 1, "due": "plan"})


def check_tree(root: Path) -> None:
    """Refuse a folder that is no pipeline, an old one, or a site's copy without the published files."""
    published = root / "server" / "task.json"
    if not (root / "config.toml").is_file():
        raise PipelineError(f"--root: {root} holds no pipeline; run: fedmosaic init-root --root {root}")
    if not published.is_file() and (root / "progress.json").is_file():
        raise PipelineError(
            f"--root: {root} was built by an older fedmosaic (no server/task.json: every step "
            "rebuilt the data set); build it again with fedmosaic init-root"
        )
    if not published.is_file():
        raise PipelineError(
            f"--root: {published} is missing; a site's folder needs the server's published files "
            f"({', '.join(PUBLISHED)}) beside its client folder"
        )


def read_published(root: Path) -> Published:
    """``server/task.json`` (after :func:`check_tree`), refusing another format."""
    path = root / "server" / "task.json"
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise PipelineError(f"--root: {path} has format {meta.get('format')}, need {FORMAT}")
    return Published(meta["run"], info_from_json(meta["info"]), int(meta["clients"]))


def read_specs(root: Path) -> list[ClientSpec]:
    """Every client's spec, in task order (the server's: a site does not hold them)."""
    path = root / "server" / "server.json"
    if not path.is_file():
        raise PipelineError(f"--root: {path} is missing; the server's steps need the server's files")
    return [_spec_from_json(s) for s in json.loads(path.read_text())["clients"]]


def _spec_to_json(spec: ClientSpec) -> dict[str, Any]:
    return {
        "id": spec.id,
        "modalities": sorted(spec.modalities),
        "n_train": spec.n_train,
        "group": spec.group,
    }


def _spec_from_json(data: dict[str, Any]) -> ClientSpec:
    return ClientSpec(data["id"], frozenset(data["modalities"]), int(data["n_train"]), str(data["group"]))
