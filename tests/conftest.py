"""Shared fixtures: offline hub, no Flower telemetry, and a tiny synthetic run config."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["FLWR_TELEMETRY_ENABLED"] = "0"

import pytest
import torch

from fedmosaic.config import RunConfig, load_config

# The engine defaults to one torch thread (see engine.threads); tests that call models directly
# get the same, or small-model tests run many times slower on a 2-core machine.
torch.set_num_threads(1)


def wait_until(predicate: Callable[[], object], timeout_s: float, step_s: float = 0.1) -> bool:
    """Whether ``predicate()`` became true within ``timeout_s`` (polled every ``step_s``): a bounded wait."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return False


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


# Sentences for the tiny BERT's WordPiece vocabulary (test_encoders and test_frozen tokenize them).
TINY_BERT_CORPUS = [
    "a red square on a blue background",
    "The quick brown fox jumps over the lazy dog.",
    "two cats sleep on the warm window sill",
    "Pack my box with five dozen liquor jugs!",
    "a photo of a green circle",
    "a green circle in the middle of the picture",
    "an old man walks his dog in the park",
    "children play football on the beach",
    "a bowl of fruit on a wooden table",
]


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random BERT saved like a hub model: config, weights and a WordPiece tokenizer."""
    from transformers import BertConfig, BertModel

    from fedmosaic.data.text import train_wordpiece

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = train_wordpiece(TINY_BERT_CORPUS * 3, vocab_size=200)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
