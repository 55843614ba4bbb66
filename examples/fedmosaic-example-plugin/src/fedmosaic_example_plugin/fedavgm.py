"""FedAvgM: FedAvg with server momentum (Hsu, Qi and Brown 2019, arXiv 1909.06335).

The clients are FedAvg's. The server treats the difference between its global weights and the
clients' weighted average as a pseudo-gradient and takes a momentum step with it::

    delta = w_global - w_avg
    v     = beta * v + delta
    w_global -= server_lr * v

With ``beta = 0`` and ``server_lr = 1`` this is FedAvg exactly. The velocity ``v`` is the server's
state: it is checkpointed with the weights (``state``/``load_state``), so a resumed run goes on
with the same momentum.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from fedmosaic.algorithms.base import weighted_average, weighted_train_loss
from fedmosaic.algorithms.fedavg import FedAvg, FedAvgClient, FedAvgServer
from fedmosaic.algorithms.registry import register
from fedmosaic.algorithms.robust import aggregation_of
from fedmosaic.core.algorithm import Algorithm, AlgorithmConfig, ServerData, Settings
from fedmosaic.core.message import Message, prefixed, split_prefixed
from fedmosaic.core.seeding import Rng
from fedmosaic.models.params import load_arrays, to_arrays

VELOCITY = "velocity/"  # prefix of the velocity arrays in the server's state


class FedAvgMConfig(AlgorithmConfig):
    """FedAvgM's server learning rate and momentum."""

    name: str = "fedavgm"
    server_lr: float = Field(1.0, gt=0, description="server learning rate (1 and beta = 0: FedAvg)")
    beta: float = Field(0.9, ge=0, lt=1, description="server momentum")


def momentum_step(
    current: dict[str, np.ndarray],
    average: dict[str, np.ndarray],
    velocity: dict[str, np.ndarray],
    server_lr: float,
    beta: float,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One server step for the arrays in ``average``: ``(new weights, new velocity)`` in float64.

    ``current`` holds the global weights, ``velocity`` the previous velocity (a missing name is 0).
    """
    new_weights: dict[str, np.ndarray] = {}
    new_velocity: dict[str, np.ndarray] = {}
    for name, avg in average.items():
        w = current[name].astype(np.float64)
        v = beta * velocity.get(name, 0.0) + (w - avg)
        new_velocity[name] = v
        new_weights[name] = w - server_lr * v
    return new_weights, new_velocity


class FedAvgMServer(FedAvgServer):
    """FedAvg's server half (configure, evaluate, ``reply_spec``: the sent weights echoed) with a
    momentum step in ``aggregate``."""

    settings: Settings[FedAvgMConfig]

    def __init__(self, settings: Settings, data: ServerData) -> None:
        super().__init__(settings, data)
        self.velocity: dict[str, np.ndarray] = {}

    def aggregate(self, round: int, replies: dict[str, Message], rng: Rng) -> dict[str, float]:
        # The same average FedAvg takes (per name over the replies carrying it, the run's
        # aggregation rule); a part no reply carries keeps its weights and its velocity.
        average = weighted_average(replies, rule=aggregation_of(self.settings))
        trainable = {name for name, _ in self.model.named_parameters()}
        # Buffers (batch-norm statistics and counters) take the plain average, as in FedAvg: they
        # are not gradients, and a momentum step could push a running variance below zero.
        stepped = {n: a for n, a in average.items() if n in trainable}
        cfg = self.settings.algorithm
        weights, velocity = momentum_step(
            to_arrays(self.model), stepped, self.velocity, cfg.server_lr, cfg.beta
        )
        self.velocity.update(velocity)
        load_arrays(self.model, {**average, **weights})
        return weighted_train_loss(replies)

    def state(self) -> Message:
        return Message({**to_arrays(self.model), **prefixed(self.velocity, VELOCITY)})

    def load_state(self, state: Message) -> None:
        weights, (self.velocity,) = split_prefixed(state.arrays, VELOCITY)
        load_arrays(self.model, weights)


@register
class FedAvgM(Algorithm):
    name = "fedavgm"
    Config = FedAvgMConfig
    Server = FedAvgMServer
    Client = FedAvgClient
    uploads = FedAvg.uploads  # the same client half: the same names leave a client (check_algorithm checks)
    summary = "FedAvg with server momentum (Hsu et al. 2019): server_lr, beta"
