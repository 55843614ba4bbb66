"""FedOpt's server step (FedAdam, FedYogi, FedAdagrad) against numbers worked out by hand on two toy
replies, over two rounds, and its resume from a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedmosaic.algorithms.fedopt import FedOptConfig, FedOptServer
from fedmosaic.config import ConfigError, load_config
from fedmosaic.core.algorithm import ServerData, Settings
from fedmosaic.core.message import Message
from fedmosaic.core.modality import Modality
from fedmosaic.core.seeding import Rng
from fedmosaic.core.settings import ModelConfig, TrainingConfig
from fedmosaic.core.task import TaskInfo

S = np.sqrt


class _Toy(nn.Module):
    """``w`` (both replies carry it), ``u`` (no reply carries it) and a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 2.0]))
        self.u = nn.Parameter(torch.tensor([7.0]))
        self.register_buffer("count", torch.tensor([0.0]))


def _server(optimizer: str) -> FedOptServer:
    info = TaskInfo("toy", (Modality("a", "embedding", (2,)),), 2, ("x", "y"))
    cfg = FedOptConfig(server_optimizer=optimizer, server_lr=0.5, beta1=0.5, beta2=0.5, tau=0.5)
    settings = Settings(info, cfg, TrainingConfig(), ModelConfig(embed_dim=2), 0, 2, 2)
    server = FedOptServer(settings, ServerData(None, None, None))  # type: ignore[arg-type]
    server.model = _Toy()  # the server step only sees named arrays: a toy model keeps them few
    return server


def _replies() -> dict[str, Message]:
    # Weighted by n_train (1 and 3): the average is w = [0, 5], count = 5.
    return {
        "A": Message({"w": np.array([3.0, 2.0], np.float32), "count": np.array([2.0], np.float32)},
                     {"n_train": 1, "train_loss": 1.0}),
        "B": Message({"w": np.array([-1.0, 6.0], np.float32), "count": np.array([6.0], np.float32)},
                     {"n_train": 3, "train_loss": 2.0}),
    }  # fmt: skip


# Worked out by hand with eta = beta1 = beta2 = tau = 0.5 (so v starts at tau^2 = 0.25, m at 0).
# Round 1: delta1 = [0, 5] - [1, 2] = [-1, 3], delta1^2 = [1, 9]; m1 = 0.5 delta1 = [-0.5, 1.5].
#   adagrad v1 = 0.25 + [1, 9]                  = [1.25, 9.25]
#   yogi    v1 = 0.25 - 0.5 [1, 9] sign(0.25 - [1, 9]) = 0.25 + 0.5 [1, 9] = [0.75, 4.75]
#   adam    v1 = 0.5 * 0.25 + 0.5 [1, 9]        = [0.625, 4.625]
#   w1 = [1, 2] + 0.5 m1 / (sqrt(v1) + 0.5) = [1 - 0.25 / (sqrt(v1[0]) + 0.5), 2 + 0.75 / (sqrt(v1[1]) + 0.5)]
V1 = {"adagrad": (1.25, 9.25), "yogi": (0.75, 4.75), "adam": (0.625, 4.625)}


def _w1(optimizer: str) -> np.ndarray:
    a, b = V1[optimizer]
    return np.array([1 - 0.25 / (S(a) + 0.5), 2 + 0.75 / (S(b) + 0.5)])


# Round 2, the same replies: delta2 = [0, 5] - w1; m2 = 0.5 m1 + 0.5 delta2 = [-0.25, 0.75] + delta2 / 2.
#   adagrad v2 = v1 + delta2^2
#   yogi    v2 = v1 - 0.5 delta2^2 sign(v1 - delta2^2): here w1 = [0.8170, 2.2799], so
#           delta2^2 = [0.6675, 7.3989]: [0.75 - 0.5 * 0.6675, 4.75 + 0.5 * 7.3989] (both signs of the rule)
#   adam    v2 = 0.5 v1 + 0.5 delta2^2
#   w2 = w1 + 0.5 m2 / (sqrt(v2) + 0.5)
def _round2(optimizer: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w1 = _w1(optimizer)
    v1 = np.array(V1[optimizer])
    d2 = np.array([0.0, 5.0]) - w1
    m2 = np.array([-0.25, 0.75]) + d2 / 2
    if optimizer == "adagrad":
        v2 = v1 + d2**2
    elif optimizer == "yogi":
        v2 = np.array([0.75 - 0.5 * d2[0] ** 2, 4.75 + 0.5 * d2[1] ** 2])
    else:
        v2 = 0.5 * v1 + 0.5 * d2**2
    return w1 + 0.5 * m2 / (S(v2) + 0.5), m2, v2


@pytest.mark.parametrize("optimizer", ["adam", "yogi", "adagrad"])
def test_fedopt_server_step_by_hand(optimizer: str) -> None:
    server = _server(optimizer)
    train = server.aggregate(1, _replies(), Rng(0, 1, "server"))
    assert train == {"train_loss": pytest.approx(1.75)}  # (1 * 1 + 3 * 2) / 4
    np.testing.assert_allclose(server.model.w.detach().numpy(), _w1(optimizer), rtol=1e-6)
    np.testing.assert_allclose(server.m["w"], [-0.5, 1.5])
    np.testing.assert_allclose(server.v["w"], V1[optimizer])
    assert server.model.count.item() == 5.0 and "count" not in server.m  # a buffer: the plain average
    assert server.model.u.item() == 7.0 and "u" not in server.m and "u" not in server.v  # nobody sent it
    if optimizer == "yogi":  # the hand-worked numbers above: element 0 takes the rule's other sign
        d2 = np.array([0.0, 5.0]) - _w1("yogi")
        assert d2[0] ** 2 < 0.75 and d2[1] ** 2 > 4.75

    checkpoint = server.state()
    server.aggregate(2, _replies(), Rng(0, 2, "server"))
    w2, m2, v2 = _round2(optimizer)
    np.testing.assert_allclose(server.model.w.detach().numpy(), w2, rtol=1e-6)
    # the server computes delta2 from the float32 global weights, the hand numbers from exact w1
    np.testing.assert_allclose(server.m["w"], m2, rtol=1e-6)
    np.testing.assert_allclose(server.v["w"], v2, rtol=1e-6)

    resumed = _server(optimizer)  # from round 1's checkpoint: the same round 2, bit for bit
    resumed.load_state(checkpoint)
    resumed.aggregate(2, _replies(), Rng(0, 2, "server"))
    assert np.array_equal(resumed.model.w.detach().numpy(), server.model.w.detach().numpy())
    assert all(np.array_equal(resumed.v[n], server.v[n]) for n in server.v)


def test_fedopt_config_bounds() -> None:
    for bad in ("server_lr=0", "beta1=1", "beta2=-0.1", "tau=0", 'server_optimizer="sgd"'):
        with pytest.raises(ConfigError, match=rf"^algorithm\.{bad.split('=')[0]}: "):
            load_config(None, ["algorithm.name=fedopt", f"algorithm.{bad}"])
    cfg = FedOptConfig()
    assert (cfg.server_optimizer, cfg.server_lr, cfg.beta1, cfg.beta2, cfg.tau) == (
        "adam",
        0.01,
        0.9,
        0.99,
        1e-3,
    )
