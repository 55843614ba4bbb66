"""FedAvg for clients holding different modalities (McMahan et al. 2017, multimodal variant).

Each modality's encoder is averaged over the clients that hold that modality; the fusion/head parts
over all sampled clients; weights are the clients' training-sample counts. FedProx (Li et al. 2020)
is the same protocol with a proximal term ``mu/2 ||w - w_global||^2`` in the local loss.
"""

from __future__ import annotations

import torch

from fedmosaic.algorithms.base import (
    WEIGHT_UPLOADS,
    EncoderAlgorithm,
    GlobalModelServer,
    ModelSlot,
    weighted_average,
    weighted_train_loss,
)
from fedmosaic.algorithms.registry import register
from fedmosaic.algorithms.robust import aggregation_of
from fedmosaic.core.algorithm import AlgorithmConfig, ServerData, Settings, sample_clients
from fedmosaic.core.message import Message
from fedmosaic.core.modality import ClientSpec
from fedmosaic.core.seeding import Rng
from fedmosaic.core.task import ClientData
from fedmosaic.models.params import load_arrays, shared_prefixes, to_arrays
from fedmosaic.models.train import train_epochs


class FedAvgConfig(AlgorithmConfig):
    """FedAvg has no hyperparameters of its own beyond the training block."""

    name: str = "fedavg"


class FedAvgClient:
    """Load the global parts for my modalities, train locally, send the same parts back."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.slot = ModelSlot(settings)

    def fit(self, message: Message, state: Message, data: ClientData, rng: Rng) -> tuple[Message, Message]:
        model = self.slot.model
        load_arrays(model, message.arrays)
        mu = float(message.meta.get("mu", 0.0))  # FedProx's server sends its mu with the weights
        proximal = None
        if mu > 0:
            params = dict(model.named_parameters())
            proximal = (mu, {n: torch.from_numpy(a.copy()) for n, a in message.arrays.items() if n in params})
        loss = train_epochs(model, data.train, self.settings.training, rng, proximal=proximal)
        reply = Message(
            to_arrays(model, shared_prefixes(model, data.spec.modalities)),
            {"n_train": len(data.train), "train_loss": loss},
        )
        return reply, state

    def evaluate(self, message: Message, state: Message, data: ClientData) -> Message:
        return Message()  # the server evaluates the global model


class FedAvgServer(GlobalModelServer):
    """Send each sampled client the parts it can train; average each part over its holders."""

    def __init__(self, settings: Settings, data: ServerData) -> None:
        super().__init__(settings, data.test)

    def configure(self, round: int, clients: list[ClientSpec], rng: Rng) -> dict[str, Message]:
        picked = sample_clients(clients, self.settings.clients_per_round, rng)
        meta = self.client_meta()
        return {
            c.id: Message(to_arrays(self.model, shared_prefixes(self.model, c.modalities)), dict(meta))
            for c in picked
        }

    def client_meta(self) -> dict[str, float]:
        """What the client needs besides the weights (FedAvg: nothing; FedProx adds ``mu``)."""
        return {}

    def aggregate(self, round: int, replies: dict[str, Message], rng: Rng) -> dict[str, float]:
        load_arrays(
            self.model,
            weighted_average(replies, rule=aggregation_of(self.settings), device=self.settings.device),
        )
        return weighted_train_loss(replies)


@register
class FedAvg(EncoderAlgorithm):
    name = "fedavg"
    per_sample_masks = True  # trains through View.batches: absent modalities are absent keys
    Config = FedAvgConfig
    Server = FedAvgServer
    Client = FedAvgClient
    uploads = WEIGHT_UPLOADS
    summary = "modality-aware FedAvg: each encoder averaged over its holders, the head over all"
