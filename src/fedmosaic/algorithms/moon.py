"""MOON (Li, He and Song, CVPR 2021): model-contrastive federated learning.

FedAvg's protocol and aggregation; the local loss adds ``mu`` times a contrastive term that pulls
each sample's representation towards the global model's and away from the client's previous local
model's. Here the representation is each modality's embedding (the encoder's output, what fusion
takes), so for every modality ``m`` a batch holds::

    l_m = -log( exp(cos(z, z_glob) / tau) / (exp(cos(z, z_glob) / tau) + exp(cos(z, z_prev) / tau)) )
    loss = cross_entropy + mu * mean_m mean_batch l_m

``z`` from the model being trained, ``z_glob`` from the round's global weights, ``z_prev`` from the
encoders this client ended its previous round with (kept in its client state). The mean over
modalities keeps ``mu``'s scale the same for one-modality and multimodal clients. In a client's
first round there is no previous model: MOON's reference code then uses the global model, which
makes ``z_prev = z_glob`` and the term's gradient zero, so the term is left out.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from fedmosaic.algorithms.base import WEIGHT_UPLOADS, EncoderAlgorithm, ModelSlot
from fedmosaic.algorithms.fedavg import FedAvgServer
from fedmosaic.algorithms.registry import register
from fedmosaic.core.algorithm import AlgorithmConfig, Settings
from fedmosaic.core.message import Message
from fedmosaic.core.seeding import Rng
from fedmosaic.core.task import ClientData
from fedmosaic.models.params import encoder_prefix, load_arrays, shared_prefixes, to_arrays
from fedmosaic.models.train import train_epochs


class MoonConfig(AlgorithmConfig):
    """MOON's weight of the contrastive term and its temperature."""

    name: str = "moon"
    mu: float = Field(1.0, ge=0, description="weight of the model-contrastive term (0: FedAvg)")
    tau: float = Field(0.5, gt=0, description="temperature of the contrastive term")


def model_contrastive_loss(
    z: torch.Tensor, z_glob: torch.Tensor, z_prev: torch.Tensor, tau: float
) -> torch.Tensor:
    """MOON's loss, averaged over the batch: ``z`` against ``z_glob`` (positive) and ``z_prev`` (negative).

    All three are ``(batch, dim)``; similarity is cosine, as in the paper.
    """
    positive = nn.functional.cosine_similarity(z, z_glob, dim=1) / tau
    negative = nn.functional.cosine_similarity(z, z_prev, dim=1) / tau
    logits = torch.stack([positive, negative], dim=1)
    # cross-entropy with the positive pair as class 0 is -log(e^pos / (e^pos + e^neg)), computed stably
    return nn.functional.cross_entropy(logits, torch.zeros(len(z), dtype=torch.long, device=z.device))


class MoonServer(FedAvgServer):
    """FedAvg's server half; each message also carries ``mu`` and ``tau``."""

    settings: Settings[MoonConfig]

    def client_meta(self) -> dict[str, float]:
        return {"mu": float(self.settings.algorithm.mu), "tau": float(self.settings.algorithm.tau)}


class MoonClient:
    """Train with the contrastive term; keep the trained encoders as the next round's previous model."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.slot = ModelSlot(settings)
        self.global_slot = ModelSlot(settings)  # frozen references, built once per process like the model
        self.previous_slot = ModelSlot(settings)

    def fit(self, message: Message, state: Message, data: ClientData, rng: Rng) -> tuple[Message, Message]:
        model = self.slot.model
        load_arrays(model, message.arrays)
        mu, tau = float(message.meta["mu"]), float(message.meta["tau"])
        loss_fn = None
        if mu > 0 and state.arrays:
            reference = self.global_slot.model
            load_arrays(reference, message.arrays)
            previous = self.previous_slot.model
            load_arrays(previous, state.arrays)
            reference.eval()  # references: no dropout, batch norm on its running statistics
            previous.eval()

            def loss_fn(
                net: nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor
            ) -> torch.Tensor:
                z = net.embed(inputs)
                loss = nn.functional.cross_entropy(net.classify(z), labels)
                with torch.no_grad():
                    z_glob, z_prev = reference.embed(inputs), previous.embed(inputs)
                terms = [model_contrastive_loss(z[m], z_glob[m], z_prev[m], tau) for m in z]
                return loss + mu * torch.stack(terms).mean()

        loss = train_epochs(model, data.train, self.settings.training, rng, loss_fn=loss_fn)
        reply = Message(
            to_arrays(model, shared_prefixes(model, data.spec.modalities)),
            {"n_train": len(data.train), "train_loss": loss},
        )
        # the previous local model: only the encoders of my modalities give z_prev
        kept = tuple(encoder_prefix(m) for m in sorted(data.spec.modalities))
        return reply, Message(to_arrays(model, kept), dict(state.meta))

    def evaluate(self, message: Message, state: Message, data: ClientData) -> Message:
        return Message()  # the server evaluates the global model


@register
class Moon(EncoderAlgorithm):
    name = "moon"
    per_sample_masks = True  # trains through View.batches: absent modalities are absent keys
    Config = MoonConfig
    Server = MoonServer
    Client = MoonClient
    uploads = WEIGHT_UPLOADS  # FedAvg's uploads: the contrastive term and the previous model stay local
    summary = "MOON (Li et al. 2021): FedAvg + model-contrastive loss on each modality's embedding (mu, tau)"
