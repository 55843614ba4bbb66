"""A SuperNode's side of a Flower run: answer one fedmosaic message from the node's own data.

No Flower I/O happens here: :func:`answer` takes a message's content (a ``RecordDict``), the node's
client states and its node config, and returns the reply content. The per-message ClientApp
(:mod:`fedmosaic.engines.flower_client`) calls it itself, or forwards the message to a long-lived
node worker (:mod:`fedmosaic.engines.node_worker`) that calls the same function with torch
already imported and the node's data already loaded: one code path, two places it runs.

Where the data comes from: the SuperNode's ``--node-config data-dir=...``, a node folder written
by ``prepare-nodes`` (the local engine's exact rows) or the site's raw data, from which the node
builds its own clients with the run config and its ``options``/``name`` node config;
``modalities="image,text"`` narrows what the node's clients hold (see :mod:`.node_data`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import RecordDict

from fedmosaic.algorithms.registry import get_algorithm
from fedmosaic.config import ConfigError, RunConfig, parse_value, validate
from fedmosaic.core.algorithm import Settings
from fedmosaic.core.device import resolve_device
from fedmosaic.core.metrics import preload as preload_scoring
from fedmosaic.core.seeding import Rng
from fedmosaic.engines.flower_client import EVALUATE, QUERY, RUN, STATE, TRAIN
from fedmosaic.engines.flower_records import (
    get_json,
    get_messages,
    get_state,
    put_json,
    put_messages,
    put_state,
    spec_to_json,
)
from fedmosaic.engines.local import configure_threads
from fedmosaic.engines.node_data import (
    NODE_FILE,
    NodeData,
    info_to_json,
    load_node,
    parse_modalities,
    site_node,
)
from fedmosaic.engines.protocol import build_client, settings_from_config
from fedmosaic.models.build import preload as preload_models


def parse_overrides(text: str) -> list[str]:
    """``"rounds=2; seed=1"`` -> ``["rounds=2", "seed=1"]`` (Flower run config values are scalars)."""
    return [part.strip() for part in str(text).split(";") if part.strip()]


def node_data(node_cfg: Mapping[str, Any], cfg: RunConfig) -> NodeData:
    """This SuperNode's clients, from its node config.

    ``data-dir`` is a node folder (``node.json``), or else the site's raw data for the run's data set:
    then the node builds its own clients from it with the run config (``options`` and ``name`` from
    the node config) and caches them as a node folder (see :func:`fedmosaic.engines.node_data.site_node`).
    ``modalities`` narrows what the clients hold either way.
    """
    if "data-dir" not in node_cfg:
        raise ConfigError(
            'node-config data-dir: missing; start the SuperNode with --node-config "data-dir=..."'
        )
    data_dir = Path(str(node_cfg["data-dir"])).expanduser().resolve()
    modalities = parse_modalities(node_cfg.get("modalities"))
    if (data_dir / NODE_FILE).is_file():
        return load_node(str(data_dir), modalities)
    options = {}
    for item in parse_overrides(str(node_cfg.get("options", ""))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"node-config options: expected 'key=value;key=value', got {item!r}")
        options[key.strip()] = parse_value(value.strip())
    folder = site_node(cfg, data_dir, options, str(node_cfg.get("name", data_dir.name)))
    return load_node(str(folder), modalities)


def run_settings(
    content: RecordDict, node_cfg: Mapping[str, Any]
) -> tuple[RunConfig, Settings, int, NodeData]:
    """The run config, settings, round and node data a message asks for."""
    run = get_json(content, RUN)
    cfg = validate(tomllib.loads(run["config"]))
    configure_threads(cfg.engine.threads)
    node = node_data(node_cfg, cfg)
    # The node's own hardware, not the coordinator's: --node-config device=... (default cpu).
    device = resolve_device(str(node_cfg.get("device", "cpu")), key="node-config device")
    # The coordinator's settings: its clients per round travel in the message.
    per_round = int(run.get("clients-per-round", len(node.clients)))
    settings = settings_from_config(cfg, node.info, per_round, device=device)
    return cfg, settings, int(run["round"]), node


def _query(content: RecordDict, state: RecordDict, node_cfg: Mapping[str, Any]) -> RecordDict:
    """Which clients this node hosts (ids, modalities, sizes, task order) and its task description."""
    _, _, _, node = run_settings(content, node_cfg)
    reply = RecordDict()
    put_json(
        reply,
        "node",
        info=info_to_json(node.info),
        clients=[spec_to_json(c.spec, node.order[c.spec.id]) for c in node.clients],
        client_val=sum(len(c.val) for c in node.clients),
    )
    return reply


def _train(content: RecordDict, state: RecordDict, node_cfg: Mapping[str, Any]) -> RecordDict:
    """Fit every planned client hosted here; their new states go to ``state``."""
    cfg, settings, r, node = run_settings(content, node_cfg)
    client = build_client(get_algorithm(cfg.algorithm.name), settings, cfg.privacy)
    answers = {}
    for cid, msg in get_messages(content, TRAIN).items():
        answers[cid], new_state = client.fit(
            msg, get_state(state, STATE, cid), node.client(cid), Rng(cfg.seed, r, cid)
        )
        put_state(state, STATE, cid, new_state)
    reply = RecordDict()
    put_messages(reply, TRAIN, answers)
    return reply


def _evaluate(content: RecordDict, state: RecordDict, node_cfg: Mapping[str, Any]) -> RecordDict:
    """Evaluate every planned client hosted here with its current state."""
    cfg, settings, _, node = run_settings(content, node_cfg)
    client = build_client(get_algorithm(cfg.algorithm.name), settings, cfg.privacy)
    answers = {
        cid: client.evaluate(msg, get_state(state, STATE, cid), node.client(cid))
        for cid, msg in get_messages(content, EVALUATE).items()
    }
    reply = RecordDict()
    put_messages(reply, EVALUATE, answers)
    return reply


HANDLERS = {QUERY: _query, TRAIN: _train, EVALUATE: _evaluate}


def answer(kind: str, content: RecordDict, state: RecordDict, node_cfg: Mapping[str, Any]) -> RecordDict:
    """The reply content to a ``kind`` message; a ``train`` message updates the client states in ``state``."""
    if kind not in HANDLERS:
        raise ValueError(f"unknown message type {kind!r}; expected one of {', '.join(HANDLERS)}")
    return HANDLERS[kind](content, state, node_cfg)


def warm_up(node_cfg: Mapping[str, Any]) -> None:
    """Import what a fit needs and read a prepared node folder now, so the first message is not slower.

    (A raw-data site's folder depends on the run config, which arrives with the first message.)
    """
    import torch  # noqa: F401  (the import is the point: a worker pays it once)

    from fedmosaic.algorithms.registry import ensure_loaded

    ensure_loaded()  # imports the built-in algorithms (and their model code)
    preload_scoring()  # a client that evaluates needs scikit-learn's metrics
    data_dir = Path(str(node_cfg.get("data-dir", ""))).expanduser().resolve()
    info = None  # a raw-data site: its modalities are known with the first message
    if (data_dir / NODE_FILE).is_file():
        info = load_node(str(data_dir), parse_modalities(node_cfg.get("modalities"))).info
    preload_models(info)  # here, not in round 1
