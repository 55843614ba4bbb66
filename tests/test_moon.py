"""MOON: the model-contrastive loss on hand-made vectors, and the previous local model kept in the
client state (and used: from the second round the term changes the training)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmosaic.algorithms.moon import MoonClient, MoonConfig, MoonServer, model_contrastive_loss
from fedmosaic.config import ConfigError, load_config
from fedmosaic.core.algorithm import ServerData
from fedmosaic.core.message import Message
from fedmosaic.core.seeding import Rng
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.protocol import settings_from_config
from fedmosaic.testing import tiny_config


def test_model_contrastive_loss_by_hand() -> None:
    z = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    z_glob = torch.tensor([[2.0, 0.0], [1.0, 0.0]])
    z_prev = torch.tensor([[0.0, 3.0], [-1.0, -1.0]])
    # sample 1: cos(z, z_glob) = 1, cos(z, z_prev) = 0; tau = 0.5: -log(e^2 / (e^2 + e^0)) = log(1 + e^-2)
    # sample 2: cos = 1/sqrt(2) and -1: -log(e^(2/sqrt 2) / (e^(2/sqrt 2) + e^-2)) = log(1 + e^(-2 - sqrt 2))
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-2 - math.sqrt(2)))) / 2
    assert model_contrastive_loss(z, z_glob, z_prev, 0.5).item() == pytest.approx(expected, rel=1e-6)
    # z as close to the previous model as to the global one: log 2, whatever the temperature
    same = model_contrastive_loss(z, z_glob, z_glob, 0.1).item()
    assert same == pytest.approx(math.log(2), rel=1e-6)
    # scale-free (cosine): scaling z_glob changes nothing
    assert model_contrastive_loss(z, 5 * z_glob, z_prev, 0.5).item() == pytest.approx(expected, rel=1e-6)


def test_previous_local_model_is_kept_in_the_client_state() -> None:
    cfg = tiny_config("moon")
    task = build_task(cfg)
    settings = settings_from_config(cfg, task.info, len(task.clients))
    server = MoonServer(settings, ServerData(None, None, None))  # type: ignore[arg-type]  # for configure
    data = next(c for c in task.clients if len(c.spec.modalities) > 1)
    sent = server.configure(1, [data.spec], Rng(cfg.seed, 1, "server"))[data.spec.id]
    assert (sent.meta["mu"], sent.meta["tau"]) == (1.0, 0.5)  # what the client needs travels in the message

    client = MoonClient(settings)
    reply, state = client.fit(sent, Message(), data, Rng(cfg.seed, 1, data.spec.id))
    encoders = {n for n in reply.arrays if n.startswith("encoders.")}
    assert set(state.arrays) == encoders  # the trained encoders of its modalities, nothing else
    assert {n.split(".")[1] for n in encoders} == set(data.spec.modalities)
    assert all(np.array_equal(state.arrays[n], reply.arrays[n]) for n in encoders)

    # Round 2 from the same global weights: with the previous model the term is active (mu > 0),
    # so training differs from mu = 0 (plain FedAvg), which ignores the state.
    with_term, _ = client.fit(sent, state, data, Rng(cfg.seed, 2, data.spec.id))
    plain = Message(sent.arrays, {**sent.meta, "mu": 0.0})
    without, _ = client.fit(plain, state, data, Rng(cfg.seed, 2, data.spec.id))
    first_round, _ = client.fit(sent, Message(), data, Rng(cfg.seed, 2, data.spec.id))
    assert with_term.meta["train_loss"] != without.meta["train_loss"]
    assert first_round.meta["train_loss"] == without.meta["train_loss"]  # no previous model: no term


def test_moon_config_bounds() -> None:
    for bad in ("mu=-1", "tau=0"):
        with pytest.raises(ConfigError, match=rf"^algorithm\.{bad.split('=')[0]}: "):
            load_config(None, ["algorithm.name=moon", f"algorithm.{bad}"])
    assert (MoonConfig().mu, MoonConfig().tau) == (1.0, 0.5)
