"""Local-only baseline: each client trains its own model on its own data; nothing is shared.

Sampled clients train each round (the same schedule as the federated methods); at evaluation every
client tests its own model on the test set through the modalities it holds, and the server only
averages those numbers (by test subset, by client group, overall).
"""

from __future__ import annotations

from fedmosaic.algorithms.base import SELF_EVALUATION, EncoderAlgorithm, ModelSlot, weighted_train_loss
from fedmosaic.algorithms.registry import register
from fedmosaic.core.algorithm import AlgorithmConfig, ServerData, Settings, Uploads, sample_clients
from fedmosaic.core.message import Message
from fedmosaic.core.metrics import aggregate_client_evaluations, flatten_eval
from fedmosaic.core.modality import ClientSpec
from fedmosaic.core.seeding import Rng
from fedmosaic.core.task import ClientData
from fedmosaic.core.validation import ReplySpec
from fedmosaic.models.params import load_arrays, shared_prefixes, to_arrays
from fedmosaic.models.train import evaluate_subsets, train_epochs


class LocalConfig(AlgorithmConfig):
    """No hyperparameters beyond the training block."""

    name: str = "local"


class LocalClient:
    """My model lives in my state; the messages carry no arrays either way."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.slot = ModelSlot(settings)

    def _own_model(self, state: Message):
        model = self.slot.fresh()
        load_arrays(model, state.arrays)
        return model

    def fit(self, message: Message, state: Message, data: ClientData, rng: Rng) -> tuple[Message, Message]:
        model = self._own_model(state)
        loss = train_epochs(model, data.train, self.settings.training, rng)
        new_state = Message(to_arrays(model, shared_prefixes(model, data.spec.modalities)))
        return Message(meta={"n_train": len(data.train), "train_loss": loss}), new_state

    def evaluate(self, message: Message, state: Message, data: ClientData) -> Message:
        results = evaluate_subsets(
            self._own_model(state), data.test, self.settings.info, data.spec.modalities
        )
        return Message(meta=flatten_eval(results))


class LocalServer:
    """Schedules local training and averages the clients' self-evaluations."""

    def __init__(self, settings: Settings, data: ServerData) -> None:
        self.settings = settings

    def configure(self, round: int, clients: list[ClientSpec], rng: Rng) -> dict[str, Message]:
        return {c.id: Message() for c in sample_clients(clients, self.settings.clients_per_round, rng)}

    def aggregate(self, round: int, replies: dict[str, Message], rng: Rng) -> dict[str, float]:
        return weighted_train_loss(replies)

    def reply_spec(self, round: int, client_id: str, sent: Message) -> ReplySpec:
        """No arrays (nothing is shared), only the training statistics."""
        return ReplySpec(meta=("n_train", "train_loss"), finite_meta=("n_train",))

    def configure_evaluate(self, round: int, clients: list[ClientSpec]) -> dict[str, Message]:
        return {c.id: Message() for c in clients}

    def evaluate(
        self, round: int, clients: list[ClientSpec], replies: dict[str, Message]
    ) -> dict[str, dict[str, float]]:
        return aggregate_client_evaluations(replies, {c.id: c for c in clients})

    def state(self) -> Message:
        return Message()

    def load_state(self, state: Message) -> None:
        pass


@register
class Local(EncoderAlgorithm):
    name = "local"
    per_sample_masks = True  # trains through View.batches: absent modalities are absent keys
    Config = LocalConfig
    Server = LocalServer
    Client = LocalClient
    personalised = True
    uploads = Uploads(fit_meta=("n_train", "train_loss"), evaluate_meta=SELF_EVALUATION)
    summary = "each client trains alone (lower bound)"
