"""FedOpt: FedAvg's clients with an adaptive server optimiser (Reddi et al., ICLR 2021, Algorithm 2).

The clients are FedAvg's (each trains the parts of its modalities and returns them). The server
averages the replies as FedAvg does (per name over the clients carrying it, weighted by ``n_train``,
under the run's aggregation rule), treats ``delta = average - w`` as a pseudo-gradient and applies
FedAdam, FedYogi or FedAdagrad to each trainable parameter, element-wise::

    m = beta1 * m + (1 - beta1) * delta
    v = v + delta**2                                            (adagrad)
    v = v - (1 - beta2) * delta**2 * sign(v - delta**2)         (yogi)
    v = beta2 * v + (1 - beta2) * delta**2                      (adam)
    w = w + server_lr * m / (sqrt(v) + tau)

As in the paper there is no bias correction, ``m`` starts at 0 and ``v`` at ``tau**2`` (the
paper's ``v_{-1} >= tau^2``). The moments are per parameter name, kept in the server's state (so a
checkpoint resumes bit-exact). A part no reply carries (a modality nobody sampled holds) keeps its
weights and its moments. Buffers (batch-norm statistics and counters) take FedAvg's plain average:
they are not gradients, and an adaptive step could push a running variance below zero.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from fedmosaic.algorithms.base import WEIGHT_UPLOADS, EncoderAlgorithm, weighted_average, weighted_train_loss
from fedmosaic.algorithms.fedavg import FedAvgClient, FedAvgServer
from fedmosaic.algorithms.registry import register
from fedmosaic.algorithms.robust import aggregation_of
from fedmosaic.core.algorithm import AlgorithmConfig, ServerData, Settings
from fedmosaic.core.message import Message, prefixed, split_prefixed
from fedmosaic.core.seeding import Rng
from fedmosaic.models.params import load_arrays, to_arrays

FIRST_MOMENT = "opt/m/"  # prefixes of the moment arrays in the server's state
SECOND_MOMENT = "opt/v/"


class FedOptConfig(AlgorithmConfig):
    """The server optimiser and its hyperparameters (the paper's eta, beta1, beta2, tau)."""

    name: str = "fedopt"
    server_optimizer: Literal["adam", "yogi", "adagrad"] = Field(
        "adam", description="FedAdam, FedYogi or FedAdagrad"
    )
    server_lr: float = Field(0.01, gt=0, description="server learning rate (the paper's eta)")
    beta1: float = Field(0.9, ge=0, lt=1, description="first-moment decay")
    beta2: float = Field(0.99, ge=0, lt=1, description="second-moment decay (adam, yogi; unused by adagrad)")
    tau: float = Field(1e-3, gt=0, description="degree of adaptivity: added to sqrt(v); v starts at tau**2")


def server_opt_step(
    current: dict[str, np.ndarray],
    average: dict[str, np.ndarray],
    m: dict[str, np.ndarray],
    v: dict[str, np.ndarray],
    cfg: FedOptConfig,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One server step for the arrays in ``average``: ``(new weights, new m, new v)``, in float64.

    ``current``: the global weights; ``m``, ``v``: the previous moments (a missing name starts at
    ``0`` and ``tau**2``). Names not in ``average`` are not returned, so they keep everything.
    """
    weights: dict[str, np.ndarray] = {}
    new_m: dict[str, np.ndarray] = {}
    new_v: dict[str, np.ndarray] = {}
    for name, avg in average.items():
        w = current[name].astype(np.float64)
        delta = np.asarray(avg, np.float64) - w
        m_prev = m.get(name, np.zeros_like(w))
        v_prev = v.get(name, np.full_like(w, cfg.tau**2))
        square = delta * delta
        m_next = cfg.beta1 * m_prev + (1 - cfg.beta1) * delta
        if cfg.server_optimizer == "adagrad":
            v_next = v_prev + square
        elif cfg.server_optimizer == "yogi":
            v_next = v_prev - (1 - cfg.beta2) * square * np.sign(v_prev - square)
        else:
            v_next = cfg.beta2 * v_prev + (1 - cfg.beta2) * square
        new_m[name], new_v[name] = m_next, v_next
        weights[name] = w + cfg.server_lr * m_next / (np.sqrt(v_next) + cfg.tau)
    return weights, new_m, new_v


class FedOptServer(FedAvgServer):
    """FedAvg's server half (configure, evaluate, ``reply_spec``: the sent weights echoed) with an
    adaptive optimiser step in ``aggregate``."""

    settings: Settings[FedOptConfig]

    def __init__(self, settings: Settings, data: ServerData) -> None:
        super().__init__(settings, data)
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def aggregate(self, round: int, replies: dict[str, Message], rng: Rng) -> dict[str, float]:
        # The same average FedAvg takes; a part no reply carries is absent from it and so keeps
        # its weights and its moments.
        average = weighted_average(replies, rule=aggregation_of(self.settings), device=self.settings.device)
        trainable = {name for name, _ in self.model.named_parameters()}
        stepped = {n: a for n, a in average.items() if n in trainable}
        weights, m, v = server_opt_step(
            to_arrays(self.model), stepped, self.m, self.v, self.settings.algorithm
        )
        self.m.update(m)
        self.v.update(v)
        load_arrays(self.model, {**average, **weights})
        return weighted_train_loss(replies)

    def state(self) -> Message:
        m, v = prefixed(self.m, FIRST_MOMENT), prefixed(self.v, SECOND_MOMENT)
        return Message({**to_arrays(self.model), **m, **v})

    def load_state(self, state: Message) -> None:
        weights, (self.m, self.v) = split_prefixed(state.arrays, FIRST_MOMENT, SECOND_MOMENT)
        load_arrays(self.model, weights)


@register
class FedOpt(EncoderAlgorithm):
    name = "fedopt"
    per_sample_masks = True  # trains through View.batches: absent modalities are absent keys
    Config = FedOptConfig
    Server = FedOptServer
    Client = FedAvgClient
    uploads = WEIGHT_UPLOADS  # FedAvg's client half: the same names leave a client
    summary = "FedAvg clients, adaptive server optimiser (Reddi et al. 2021): adam | yogi | adagrad"
