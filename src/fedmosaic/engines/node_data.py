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
The file pipeline (:mod:`fedmosaic.engines.files`) uses the same format: ``init-root`` writes one
node folder per client, and keeps the server's parts with :func:`export_views`.

The test set travels with every node folder because personalised algorithms (``local`` ...)
evaluate each client's own model on the test set seen through that client's modalities.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedmosaic.core.errors import NodeDataError
from fedmosaic.core.modality import ClientSpec, Modality
from fedmosaic.core.stream import ServerStreams, Stream
from fedmosaic.core.task import ClientData, Task, TaskInfo, View

if TYPE_CHECKING:
    from fedmosaic.config import RunConfig

FORMAT = 1
NODE_FILE = "node.json"
DATA_FILE = "data.npz"


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


def save_streams(streams: ServerStreams, path: Path) -> None:
    """Write the server's continuous streams (reference evaluation protocol) to the ``.npz`` ``path``."""
    arrays: dict[str, np.ndarray] = {"origin": np.array(streams.origin)}
    for key, stream in (("labelled", streams.labelled), ("test", streams.test)):
        arrays[f"{key}/labels"] = stream.labels
        arrays[f"{key}/bounds"] = stream.bounds
        arrays |= {f"{key}/signal/{m}": s for m, s in stream.signals.items()}
    np.savez(path, **arrays)


def load_streams(path: Path) -> ServerStreams | None:
    """The streams :func:`save_streams` wrote to ``path``; None if there is no such file."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}

    def stream(key: str) -> Stream:
        prefix = f"{key}/signal/"
        signals = {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}
        return Stream(signals, arrays[f"{key}/labels"], arrays[f"{key}/bounds"])

    return ServerStreams(stream("labelled"), stream("test"), str(arrays["origin"]))


def export_views(task: Task, views: dict[str, View], path: Path) -> None:
    """Write ``views`` of ``task`` to the ``.npz`` file ``path``: the store rows they use, nothing else.

    Each view keeps its rows (``<key>/idx``, into the rows written) and its modality mask; labels
    and every modality's store are cut to those rows. What a node folder's ``data.npz`` holds, and
    what the file pipeline's server keeps of the task (its proxy, labelled and test sets).
    """
    rows = np.unique(np.concatenate([v.indices for v in views.values()]))  # sorted: searchsorted maps
    labels = task.labels[rows]
    for view in views.values():  # each view's own labels: client training views may hold noisy ones
        labels[np.searchsorted(rows, view.indices)] = view.labels
    arrays: dict[str, np.ndarray] = {"labels": labels}
    for name, array in task.store.items():
        arrays[f"store/{name}"] = np.ascontiguousarray(array[rows])
    for key, view in views.items():
        arrays[f"{key}/idx"] = np.searchsorted(rows, view.indices).astype(np.int64)
        arrays[f"{key}/mask"] = view.mask
    np.savez(path, **arrays)


def load_views(path: Path, info: TaskInfo) -> dict[str, View]:
    """The views :func:`export_views` wrote to ``path``, keyed as they were, over the rows it kept."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    store = {m.name: arrays[f"store/{m.name}"] for m in info.modalities}
    labels = arrays["labels"]
    keys = [k.removesuffix("/idx") for k in arrays if k.endswith("/idx")]
    return {key: View(info, store, labels, arrays[f"{key}/idx"], arrays[f"{key}/mask"]) for key in keys}


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
    export_views(task, views, folder / DATA_FILE)
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

    A client left with none of them is not hosted; a node left with no client is an error.

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
    views = load_views(path / DATA_FILE, info)
    test = views["test"]
    clients, order = [], {}
    for entry in meta["clients"]:
        cid = entry["id"]
        held = frozenset(entry["modalities"])
        if modalities is not None:
            held &= modalities
        train = views[f"{cid}/train"].restrict(held)
        if len(train) == 0:
            continue  # a client holding only modalities this site does not hold is not hosted here
        held = held & train.modalities
        spec = ClientSpec(cid, held, len(train), info.group(held))
        clients.append(ClientData(spec, train, views[f"{cid}/val"].restrict(held), test.restrict(held)))
        order[cid] = int(entry["order"])
    if not clients:
        raise NodeDataError(
            f"node-config modalities: no client in {path} holds any of {', '.join(sorted(modalities or ()))}"
        )
    return NodeData(info, clients, order)


def site_node(cfg: RunConfig, data_dir: Path, options: dict[str, Any], name: str) -> Path:
    """A node folder built *at the site* from its raw data, cached (returns the folder).

    The run config is applied to the site's own data (``task.data_dir`` = ``data_dir``, data set
    options updated with the node's ``options``): the site's data is split as the config says
    (its clients, and test/proxy/labelled parts that stay unused at the site) and every client is
    hosted here, renamed ``<name>.<id>`` so ids are unique across sites. Raw data never leaves the
    site. Preprocessing is the site's own (a small WordPiece vocabulary trained on local text, local
    normalisation statistics), so the coordinator accepts the node only if its task description
    (modalities, shapes, vocabulary size, classes) equals the run's: use a pretrained tokenizer for
    text. Built once per (folder, config, options) into ``$FEDMOSAIC_NODE_CACHE`` (default
    ``~/.cache/fedmosaic/nodes``): every ClientApp process after the first only reads it.
    """
    from fedmosaic.config import validate
    from fedmosaic.data.tasks import build_task

    tree = cfg.to_toml_dict()
    tree["task"]["data_dir"] = str(data_dir)
    tree["task"]["options"] = {**tree["task"].get("options", {}), **options}
    site_cfg = validate(tree)
    key = json.dumps(
        [str(data_dir), name, site_cfg.seed, tree["task"], tree["clients"], tree["model"]], sort_keys=True
    )
    root = Path(os.environ.get("FEDMOSAIC_NODE_CACHE", Path.home() / ".cache" / "fedmosaic" / "nodes"))
    folder = root / hashlib.sha256(key.encode()).hexdigest()[:16]
    if (folder / NODE_FILE).is_file():
        return folder
    task = build_task(site_cfg)
    for client in task.clients:
        client.spec = ClientSpec(
            f"{name}.{client.spec.id}", client.spec.modalities, client.spec.n_train, client.spec.group
        )
    task._by_id.clear()
    partial = folder.with_name(folder.name + f".tmp{os.getpid()}")
    export_node(task, [c.spec.id for c in task.clients], partial)
    try:
        partial.replace(folder)  # atomic: a concurrent ClientApp process sees all of it or nothing
    except OSError:  # another process of this node finished the same folder first
        if not (folder / NODE_FILE).is_file():
            raise
        shutil.rmtree(partial, ignore_errors=True)
    return folder
