"""Shared fixtures: offline hub, no Flower telemetry, and a tiny synthetic run config."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["FLWR_TELEMETRY_ENABLED"] = "0"

import pytest

from fedmosaic.config import RunConfig, load_config

TINY_OVERRIDES = [
    "task.options.n_samples=400",
    "task.proxy_size=40",
    "task.labelled_size=40",
    "rounds=2",
    "engine.progress=false",
    "compare=[]",
    "model.embed_dim=16",
    "model.text_hidden=16",
]


@pytest.fixture
def tiny_cfg() -> RunConfig:
    """The default run shrunk to a 400-sample synthetic task, 2 rounds, no baselines (fresh per test)."""
    return load_config(None, list(TINY_OVERRIDES))
