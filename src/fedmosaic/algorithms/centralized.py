"""Centralized upper bound: all clients' training data pooled (with their modality masks) on the
server, one model trained on it. Not federated; it shows what federation could at best reach."""

from __future__ import annotations

from fedmosaic.algorithms.base import EncoderAlgorithm, GlobalModelServer
from fedmosaic.algorithms.registry import register
from fedmosaic.core.algorithm import AlgorithmConfig, ServerData, Settings
from fedmosaic.core.message import Message
from fedmosaic.core.modality import ClientSpec
from fedmosaic.core.seeding import Rng
from fedmosaic.core.task import ClientData
from fedmosaic.models.train import train_epochs


class CentralizedConfig(AlgorithmConfig):
    """No hyperparameters beyond the training block (``local_epochs`` epochs per round)."""

    name: str = "centralized"


class CentralizedServer(GlobalModelServer):
    """Trains on the pooled data each round; no client takes part."""

    def __init__(self, settings: Settings, data: ServerData) -> None:
        if data.pooled_train is None:
            raise ValueError("centralized needs the pooled training data (needs_pooled_data)")
        super().__init__(settings, data.test)
        self.pooled = data.pooled_train

    def configure(self, round: int, clients: list[ClientSpec], rng: Rng) -> dict[str, Message]:
        return {}

    def aggregate(self, round: int, replies: dict[str, Message], rng: Rng) -> dict[str, float]:
        return {"train_loss": train_epochs(self.model, self.pooled, self.settings.training, rng)}


class CentralizedClient:
    """Never called: the server holds the pooled data."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def fit(self, message: Message, state: Message, data: ClientData, rng: Rng) -> tuple[Message, Message]:
        raise RuntimeError("centralized has no client half")

    def evaluate(self, message: Message, state: Message, data: ClientData) -> Message:
        raise RuntimeError("centralized has no client half")


@register
class Centralized(EncoderAlgorithm):
    name = "centralized"
    per_sample_masks = True  # trains through View.batches: absent modalities are absent keys
    Config = CentralizedConfig
    Server = CentralizedServer
    Client = CentralizedClient
    needs_pooled_data = True
    uploads = None  # not federated: the training data itself is pooled, no client message exists to audit
    summary = "all client training data pooled on one machine (upper bound)"
