"""FedProx (Li et al., MLSys 2020): FedAvg's protocol with a proximal term mu in the local loss.

The server sends ``mu`` in each round's message (the client half needs nothing from the run's config);
everything else is FedAvg's.
"""

from __future__ import annotations

from pydantic import Field

from fedmosaic.algorithms.base import WEIGHT_UPLOADS, EncoderAlgorithm
from fedmosaic.algorithms.fedavg import FedAvgClient, FedAvgServer
from fedmosaic.algorithms.registry import register
from fedmosaic.core.algorithm import AlgorithmConfig, Settings


class FedProxConfig(AlgorithmConfig):
    """FedProx: ``mu`` weighs the proximal term."""

    name: str = "fedprox"
    mu: float = Field(0.01, ge=0)


class FedProxServer(FedAvgServer):
    """FedAvg's server half; each message also carries ``mu``."""

    settings: Settings[FedProxConfig]

    def client_meta(self) -> dict[str, float]:
        return {"mu": float(self.settings.algorithm.mu)}


@register
class FedProx(EncoderAlgorithm):
    name = "fedprox"
    per_sample_masks = True  # trains through View.batches: absent modalities are absent keys
    Config = FedProxConfig
    Server = FedProxServer
    Client = FedAvgClient
    uploads = WEIGHT_UPLOADS
    summary = "FedAvg with a proximal term mu/2 ||w - w_global||^2"
