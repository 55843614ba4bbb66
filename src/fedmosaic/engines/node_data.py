"""A site's own data as a SuperNode reads it: a *node folder* holding one or more clients.

Layout of a node folder::

    node.json    format version, the task description (modalities, classes) and the clients it holds
    data.npz     the store rows these clients use (train, val and the shared test set), labels,
                 and per-client row indices and modality masks

A node folder is prepared once from a run config (``python -m fedmosaic.engines.flower
prepare-nodes``): the data set is loaded, tokenised and standardised exactly as the local engine
does, and each client's rows are written to the folder of the node that hosts it. The SuperNode then
reads only its own folder; the modalities it holds can be narrowed further from its node config.
Because the rows are the local engine's rows, a Flower run reproduces a local run bit for bit.

The test set travels with every node folder because personalised algorithms (``local`` ...)
evaluate each client's own model on the test set seen through that client's modalities.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from fedmosaic.core.modality import ClientSpec, Modality
from fedmosaic.core.task import ClientData, Task, TaskInfo, View

FORMAT = 1
NODE_FILE = "node.json"
DATA_FILE = "data.npz"


class NodeDataError(ValueError):
    """A node folder is missing, malformed, or cannot provide the requested modalities."""


@dataclass
class NodeData:
    """What one SuperNode holds: the task description and its clients (in task order)."""

    info: TaskInfo
    clients: list[ClientData]
    order: dict[str, int]  # client id -> position in the original task (the server sorts by it)

    def client(self, client_id: str) -> ClientData:
        for c in self.clients:
            if c.spec.id == client_id:
                return c
        raise KeyError(f"this node holds no client {client_id!r}")


def info_to_json(info: TaskInfo) -> dict[str, Any]:
    """A task description as JSON data (what the server checks a node against)."""
    return {
        "name": info.name,
        "num_classes": info.num_classes,
        "class_names": list(info.class_names),
        "modalities": [
            {"name": m.name, "kind": m.kind, "shape": list(m.shape), "vocab_size": m.vocab_size}
            for m in info.modalities
        ],
    }


def info_from_json(data: dict[str, Any]) -> TaskInfo:
    modalities = tuple(
        Modality(m["name"], m["kind"], tuple(m["shape"]), m.get("vocab_size")) for m in data["modalities"]
    )
    return TaskInfo(data["name"], modalities, int(data["num_classes"]), tuple(data["class_names"]))


def export_node(task: Task, client_ids: Iterable[str], folder: Path) -> Path:
    """Write the clients ``client_ids`` of ``task`` (and the test set) into the node folder ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = list(client_ids)
    position = {c.spec.id: k for k, c in enumerate(task.clients)}
    views: dict[str, View] = {"test": task.test}
    for cid in ids:
        data = task.client(cid)
        views[f"{cid}/train"] = data.train
        views[f"{cid}/val"] = data.val
    # Only the rows these clients (and the test set) use: a site's folder holds its own data.
    rows = np.unique(np.concatenate([v.indices for v in views.values()]))
    local = {int(g): i for i, g in enumerate(rows.tolist())}
    arrays: dict[str, np.ndarray] = {"labels": task.labels[rows]}
    for name, array in task.store.items():
        arrays[f"store/{name}"] = np.ascontiguousarray(array[rows])
    for key, view in views.items():
        arrays[f"{key}/idx"] = np.array([local[int(i)] for i in view.indices], dtype=np.int64)
        arrays[f"{key}/mask"] = view.mask
    np.savez(folder / DATA_FILE, **arrays)
    clients = [
        {
            "id": cid,
            "order": position[cid],
            "modalities": sorted(task.client(cid).spec.modalities),
        }
        for cid in ids
    ]
    meta = {"format": FORMAT, "info": info_to_json(task.info), "clients": clients}
    (folder / NODE_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return folder


def parse_modalities(value: object) -> frozenset[str] | None:
    """``"image,text"`` (or ``image+text``) from a node config; empty or missing = no restriction."""
    if value is None:
        return None
    names = [p.strip() for p in str(value).replace("+", ",").split(",")]
    names = [n for n in names if n]
    return frozenset(names) or None


@lru_cache(maxsize=4)
def load_node(folder: str, modalities: frozenset[str] | None = None) -> NodeData:
    """Read a node folder; ``modalities`` narrows what every client holds (node config ``modalities``).

    Cached per process: a ClientApp process may serve several messages of one run.
    """
    path = Path(folder)
    meta_path = path / NODE_FILE
    if not meta_path.is_file():
        raise NodeDataError(
            f"node-config data-dir: {path} is not a node folder (no {NODE_FILE}); prepare it with "
            "python -m fedmosaic.engines.flower prepare-nodes"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise NodeDataError(
            f"node-config data-dir: {meta_path} has format {meta.get('format')}, need {FORMAT}"
        )
    info = info_from_json(meta["info"])
    if modalities is not None and not modalities <= set(info.modality_names):
        unknown = sorted(modalities - set(info.modality_names))
        raise NodeDataError(
            f"node-config modalities: {', '.join(unknown)} not in the task's {', '.join(info.modality_names)}"
        )
    with np.load(path / DATA_FILE, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    store = {m.name: arrays[f"store/{m.name}"] for m in info.modalities}
    labels = arrays["labels"]

    def view(key: str) -> View:
        return View(info, store, labels, arrays[f"{key}/idx"], arrays[f"{key}/mask"])

    test = view("test")
    clients, order = [], {}
    for entry in meta["clients"]:
        cid = entry["id"]
        held = frozenset(entry["modalities"])
        if modalities is not None:
            held &= modalities
        train = view(f"{cid}/train").restrict(held)
        if len(train) == 0:
            raise NodeDataError(
                f"node-config modalities: client {cid} holds {', '.join(sorted(entry['modalities']))}, "
                f"none of which is in {', '.join(sorted(modalities or ()))}"
            )
        held = held & train.modalities
        spec = ClientSpec(cid, held, len(train), info.group(held))
        clients.append(ClientData(spec, train, view(f"{cid}/val").restrict(held), test.restrict(held)))
        order[cid] = int(entry["order"])
    return NodeData(info, clients, order)
