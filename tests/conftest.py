"""Shared fixtures: offline hub, no Flower telemetry, and a tiny synthetic run config."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["FLWR_TELEMETRY_ENABLED"] = "0"

import pytest
import torch

from fedmosaic.config import RunConfig, load_config

# The engine defaults to one torch thread (see engine.threads); tests that call models directly
# get the same, or small-model tests run many times slower on a 2-core machine.
torch.set_num_threads(1)

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


@pytest.fixture(scope="session")
def hapt_dir(tmp_path_factory: pytest.TempPathFactory):
    """The real UCI HAPT ``HAPT`` folder, unpacked once per session from ../shared (skip if absent)."""
    import tarfile
    from pathlib import Path

    shared = Path(__file__).resolve().parents[1].parent / "shared"
    archive = shared / "datasets" / "uci-hapt" / "HAPT-RawData.tar.xz"
    if not archive.is_file():
        pytest.skip(f"real HAPT archive not found at {archive}")
    dest = tmp_path_factory.mktemp("hapt")
    with tarfile.open(archive, "r:xz") as tar:
        tar.extractall(dest, filter="data")
    yield dest / "HAPT"
