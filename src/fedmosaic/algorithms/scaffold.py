"""SCAFFOLD (Karimireddy et al., ICML 2020): control variates correct the clients' drift.

The server keeps a control variate ``c`` per trainable parameter, each client its own ``c_i`` (in its
client state, zero until its first round). Modality-aware like FedAvg: a client receives the weights
of its modalities' encoders and the head together with ``c`` for exactly those parameters, and keeps
a variate for every parameter it holds. Each local step uses the corrected gradient
``g - c_i + c`` (a :func:`~fedmosaic.models.train.train_epochs` ``before_step`` hook); after ``K``
steps at learning rate ``lr`` the client takes the paper's option II::

    c_i+ = c_i - c + (x - y_i) / (K * lr)

and uploads its weights ``y_i`` and ``dc/<name> = c_i+ - c_i``. The server moves each part over the
replies carrying it, and ``c`` by the sum of the deltas over the number ``N`` of clients holding it
(the paper's ``|S|/N`` times the mean)::

    x = x + server_lr * (average(y_i) - x)        (FedAvg's weighted, modality-aware average)
    c = c + sum(dc_i) / N

A part no reply carries keeps its weights and its variate. Buffers take FedAvg's plain average.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from pydantic import Field
from torch import nn

from fedmosaic.algorithms.base import (
    EncoderAlgorithm,
    GlobalModelServer,
    ModelSlot,
    weighted_average,
    weighted_train_loss,
)
from fedmosaic.algorithms.registry import register
from fedmosaic.algorithms.robust import aggregation_of
from fedmosaic.core.algorithm import (
    AlgorithmConfig,
    ServerData,
    Settings,
    Uploads,
    sample_clients,
)
from fedmosaic.core.device import to_device
from fedmosaic.core.message import Message, prefixed, split_prefixed
from fedmosaic.core.modality import ClientSpec
from fedmosaic.core.seeding import Rng
from fedmosaic.core.task import ClientData
from fedmosaic.core.validation import ArraySpec, ReplySpec
from fedmosaic.models.params import load_arrays, shared_prefixes, to_arrays
from fedmosaic.models.train import train_epochs

VARIATE = "c/"  # the server's c in a message, a client's c_i in its state, the server's c in its state
DELTA = "dc/"  # a client's c_i+ - c_i in its reply
HOLDERS = "holders/"  # the server state's meta keys of its holder counts
ALL = "*"  # holders key of the parts every client holds (the head)


class ScaffoldConfig(AlgorithmConfig):
    """SCAFFOLD's global (server) learning rate."""

    name: str = "scaffold"
    server_lr: float = Field(1.0, gt=0, description="global step size (1: the weighted average, as FedAvg)")


def _modality_of(name: str) -> str:
    """The modality whose encoder holds parameter ``name``, or ``ALL`` for the shared parts."""
    return name.split(".")[1] if name.startswith("encoders.") else ALL


def update_variates(
    c_i: dict[str, np.ndarray],
    c: dict[str, np.ndarray],
    x: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    steps: int,
    lr: float,
) -> dict[str, np.ndarray]:
    """Option II: ``c_i+ = c_i - c + (x - y) / (steps * lr)`` per name of ``c`` (no step: ``c_i``)."""
    if steps == 0:
        return {n: c_i[n].copy() for n in c}
    return {
        n: (
            c_i[n].astype(np.float64)
            - c[n]
            + (x[n].astype(np.float64) - y[n].astype(np.float64)) / (steps * lr)
        ).astype(c[n].dtype)
        for n in c
    }


class ScaffoldClient:
    """Train with the corrected gradient ``g - c_i + c``; return the weights and ``c_i+ - c_i``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.slot = ModelSlot(settings)

    def fit(self, message: Message, state: Message, data: ClientData, rng: Rng) -> tuple[Message, Message]:
        model = self.slot.model
        x, (c,) = split_prefixed(message.arrays, VARIATE)
        load_arrays(model, x)
        # a variate this client has never updated is zero (the paper's initialisation)
        c_i = {n: state.arrays.get(VARIATE + n, np.zeros_like(a)) for n, a in c.items()}
        correction = {
            n: to_device(torch.from_numpy((c[n] - c_i[n]).astype(c[n].dtype)), self.settings.device)
            for n in c
        }
        steps = 0

        def correct(named: dict[str, nn.Parameter]) -> None:
            nonlocal steps
            steps += 1
            for name, delta in correction.items():
                param = named[name]
                # no gradient (an encoder whose modality this batch lacks): the paper's g is 0 there
                param.grad = delta.clone() if param.grad is None else param.grad.add_(delta)

        loss = train_epochs(model, data.train, self.settings.training, rng, before_step=correct)
        y = to_arrays(model, shared_prefixes(model, data.spec.modalities))
        c_new = update_variates(c_i, c, x, y, steps, self.settings.training.lr)
        deltas = {DELTA + n: (c_new[n].astype(np.float64) - c_i[n]).astype(c[n].dtype) for n in c}
        reply = Message({**y, **deltas}, {"n_train": len(data.train), "train_loss": loss})
        new_state = Message({**state.arrays, **{VARIATE + n: v for n, v in c_new.items()}}, dict(state.meta))
        return reply, new_state

    def evaluate(self, message: Message, state: Message, data: ClientData) -> Message:
        return Message()  # the server evaluates the global model


class ScaffoldServer(GlobalModelServer):
    """The global model and ``c``; each sampled client gets its parts of both."""

    settings: Settings[ScaffoldConfig]

    def __init__(self, settings: Settings, data: ServerData) -> None:
        super().__init__(settings, data.test)
        self.c: dict[str, np.ndarray] = {}  # missing name: zero (not yet updated)
        self.holders: dict[str, int] = {}  # modality (or ALL) -> clients holding it: the paper's N

    def _trainable(self) -> dict[str, np.ndarray]:
        state = to_arrays(self.model)
        return {n: state[n] for n, p in self.model.named_parameters() if p.requires_grad}

    def configure(self, round: int, clients: list[ClientSpec], rng: Rng) -> dict[str, Message]:
        self.holders = {ALL: len(clients)}
        for client in clients:
            for m in client.modalities:
                self.holders[m] = self.holders.get(m, 0) + 1
        picked = sample_clients(clients, self.settings.clients_per_round, rng)
        trainable = self._trainable()
        out = {}
        for client in picked:
            weights = to_arrays(self.model, shared_prefixes(self.model, client.modalities))
            variates = {
                VARIATE + n: self.c.get(n, np.zeros_like(trainable[n])) for n in weights if n in trainable
            }
            out[client.id] = Message({**weights, **variates})
        return out

    def reply_spec(self, round: int, client_id: str, sent: Message) -> ReplySpec:
        """The sent weights back (same names, shapes, dtypes), and ``dc/<name>`` for each ``c/<name>``."""
        arrays = {n: ArraySpec.like(a) for n, a in sent.arrays.items() if not n.startswith(VARIATE)}
        arrays.update(
            {
                DELTA + n.removeprefix(VARIATE): ArraySpec.like(a)
                for n, a in sent.arrays.items()
                if n.startswith(VARIATE)
            }
        )
        return ReplySpec(arrays, ("n_train", "train_loss"), ("n_train",))

    def aggregate(self, round: int, replies: dict[str, Message], rng: Rng) -> dict[str, float]:
        weights = {
            k: Message({n: a for n, a in r.arrays.items() if not n.startswith(DELTA)}, r.meta)
            for k, r in replies.items()
        }
        average = weighted_average(weights, rule=aggregation_of(self.settings), device=self.settings.device)
        current = to_arrays(self.model)
        trainable = self._trainable()
        lr = self.settings.algorithm.server_lr
        stepped = {
            n: current[n] + lr * (a - current[n].astype(np.float64)) if n in trainable else a
            for n, a in average.items()
        }  # buffers (batch-norm statistics, counters): the plain average, as FedAvg
        load_arrays(self.model, stepped)
        sums: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(()))
        for reply in replies.values():
            for name, delta in reply.arrays.items():
                if name.startswith(DELTA):
                    sums[name.removeprefix(DELTA)] = sums[name.removeprefix(DELTA)] + delta.astype(np.float64)
        for name, total in sums.items():
            previous = self.c.get(name, np.zeros_like(trainable[name]))
            holders = max(self.holders.get(_modality_of(name), 1), 1)
            self.c[name] = (previous + total / holders).astype(previous.dtype)
        return weighted_train_loss(replies)

    def state(self) -> Message:
        arrays = {**to_arrays(self.model), **prefixed(self.c, VARIATE)}
        return Message(arrays, prefixed(self.holders, HOLDERS))

    def load_state(self, state: Message) -> None:
        weights, (self.c,) = split_prefixed(state.arrays, VARIATE)
        load_arrays(self.model, weights)
        _, (holders,) = split_prefixed(state.meta, HOLDERS)
        self.holders = {m: int(n) for m, n in holders.items()}


@register
class Scaffold(EncoderAlgorithm):
    name = "scaffold"
    per_sample_masks = True  # trains through View.batches: absent modalities are absent keys
    Config = ScaffoldConfig
    Server = ScaffoldServer
    Client = ScaffoldClient
    uploads = Uploads(
        fit_arrays=("encoders.{m}.*", "fusion.*", "head.*", "dc/encoders.{m}.*", "dc/fusion.*", "dc/head.*"),
        fit_meta=("n_train", "train_loss"),
    )
    summary = "SCAFFOLD (Karimireddy et al. 2020): control variates c (server) and c_i (client), option II"
