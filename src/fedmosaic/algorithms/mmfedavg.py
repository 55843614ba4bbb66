"""mmFedAvg (Zhao et al., "Multimodal Federated Learning on IoT Data", IoTDI 2022) and mmFedProx:
the baselines of FedMEKT, with the same split LSTM autoencoder and the same linear evaluation.

Each sampled client receives the global encoder/decoder weights of the modalities it holds, trains
cross-modal reconstruction on its unlabelled windows, and returns those weights. The server averages
each modality's encoder and decoder over the clients holding it, weighting a multimodal client
``mm_weight`` times a unimodal one (the reference code's default 100; its clients otherwise count
equally, whatever their sample counts). mmFedProx adds FedProx's ``mu/2 ||w - w_global||^2``.
"""

from __future__ import annotations

import torch
from pydantic import Field

from fedmosaic.algorithms.autoencoder_base import (
    AutoencoderAlgorithm,
    AutoencoderConfig,
    LinearEvalServer,
    build_autoencoder,
    prefixes,
    train_reconstruction,
)
from fedmosaic.algorithms.base import weighted_average, weighted_train_loss
from fedmosaic.algorithms.registry import register
from fedmosaic.algorithms.robust import aggregation_of
from fedmosaic.core.algorithm import ServerData, Settings, Uploads, sample_clients
from fedmosaic.core.device import to_device
from fedmosaic.core.message import Message
from fedmosaic.core.modality import ClientSpec
from fedmosaic.core.seeding import Rng
from fedmosaic.core.task import ClientData
from fedmosaic.core.validation import ReplySpec
from fedmosaic.models.autoencoder import SplitAutoencoder
from fedmosaic.models.params import load_arrays, to_arrays

# mmFedAvg's and mmFedProx's uploads: the held modalities' encoder and decoder weights.
UPLOADS = Uploads(
    fit_arrays=("encoders.{m}.*", "decoders.{m}.*"), fit_meta=("n_train", "train_loss", "multimodal")
)


class MMFedAvgConfig(AutoencoderConfig):
    """mmFedAvg's aggregation weight for multimodal clients."""

    name: str = "mmfedavg"
    mm_weight: float = Field(
        100.0, gt=0, description="weight of a multimodal client relative to a unimodal one"
    )


class MMFedProxConfig(MMFedAvgConfig):
    """mmFedProx adds the proximal coefficient (the reference's muy = 0.001)."""

    name: str = "mmfedprox"
    mu: float = Field(0.001, ge=0, description="FedProx proximal coefficient")


class MMFedAvgClient:
    """Load the global parts of my modalities, train reconstruction, send the same parts back."""

    def __init__(self, settings: Settings[MMFedAvgConfig]) -> None:
        self.settings = settings
        self._model: SplitAutoencoder | None = None

    def fit(self, message: Message, state: Message, data: ClientData, rng: Rng) -> tuple[Message, Message]:
        if self._model is None:  # built once per process; every call overwrites the parts it uses
            self._model = build_autoencoder(self.settings)
        model, held = self._model, data.spec.modalities
        load_arrays(model, message.arrays)
        reverse = bool(self.settings.algorithm.reverse_target)
        mu = float(message.meta.get("mu", 0.0))  # mmFedProx's server sends its mu with the weights
        params = dict(model.named_parameters())
        reference = {
            n: to_device(torch.from_numpy(a.copy()), self.settings.device)
            for n, a in message.arrays.items()
            if n in params
        }

        def loss_fn(inputs: dict[str, torch.Tensor], step: int) -> torch.Tensor:
            loss = model.reconstruction_loss(inputs, reverse)
            if mu > 0:
                loss = loss + 0.5 * mu * sum(((params[n] - r) ** 2).sum() for n, r in reference.items())
            return loss

        loss = train_reconstruction(model, data.train, held, self.settings, rng, loss_fn)
        reply = Message(
            to_arrays(model, prefixes(held)),
            {"n_train": len(data.train), "train_loss": loss, "multimodal": len(held) > 1},
        )
        return reply, state

    def evaluate(self, message: Message, state: Message, data: ClientData) -> Message:
        return Message()  # the server evaluates the global encoder


class MMFedAvgServer(LinearEvalServer):
    """Per-modality weight averaging over holders, multimodal clients weighted ``mm_weight``."""

    settings: Settings[MMFedAvgConfig]

    def __init__(self, settings: Settings[MMFedAvgConfig], data: ServerData) -> None:
        super().__init__(settings, data)

    def configure(self, round: int, clients: list[ClientSpec], rng: Rng) -> dict[str, Message]:
        picked = sample_clients(clients, self.settings.clients_per_round, rng)
        meta = self.client_meta()
        return {c.id: Message(to_arrays(self.model, prefixes(c.modalities)), dict(meta)) for c in picked}

    def client_meta(self) -> dict[str, float]:
        """What the client needs besides the weights (mmFedAvg: nothing; mmFedProx adds ``mu``)."""
        return {}

    def aggregate(self, round: int, replies: dict[str, Message], rng: Rng) -> dict[str, float]:
        mm_weight = float(self.settings.algorithm.mm_weight)
        weights = weighted_average(
            replies,
            lambda r: mm_weight if r.meta.get("multimodal") else 1.0,
            aggregation_of(self.settings),
            device=self.settings.device,
        )
        load_arrays(self.model, weights)
        return weighted_train_loss(replies)

    def reply_spec(self, round: int, client_id: str, sent: Message) -> ReplySpec:
        """The sent encoder/decoder weights back, same names, shapes and dtypes."""
        return ReplySpec.echo(sent, meta=("n_train", "train_loss", "multimodal"))


@register
class MMFedAvg(AutoencoderAlgorithm):
    name = "mmfedavg"
    Config = MMFedAvgConfig
    Server = MMFedAvgServer
    Client = MMFedAvgClient
    uploads = UPLOADS
    summary = "mmFedAvg: split LSTM autoencoder weights averaged per modality, linear evaluation"


class MMFedProxServer(MMFedAvgServer):
    """mmFedAvg's server half; each message also carries ``mu``."""

    settings: Settings[MMFedProxConfig]

    def client_meta(self) -> dict[str, float]:
        return {"mu": float(self.settings.algorithm.mu)}


@register
class MMFedProx(AutoencoderAlgorithm):
    name = "mmfedprox"
    Config = MMFedProxConfig
    Server = MMFedProxServer
    Client = MMFedAvgClient
    uploads = UPLOADS
    summary = "mmFedProx: mmFedAvg with a proximal term toward the global weights"
