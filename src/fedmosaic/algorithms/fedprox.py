"""FedProx (Li et al., MLSys 2020): FedAvg's protocol with a proximal term mu in the local loss.

The client half reads ``mu`` from this config; everything else is FedAvg's.
"""

from __future__ import annotations

from pydantic import Field

from fedmosaic.algorithms.fedavg import FedAvgClient, FedAvgServer
from fedmosaic.algorithms.registry import register
from fedmosaic.core.algorithm import Algorithm, AlgorithmConfig


class FedProxConfig(AlgorithmConfig):
    """FedProx: ``mu`` weighs the proximal term."""

    name: str = "fedprox"
    mu: float = Field(0.01, ge=0)


@register
class FedProx(Algorithm):
    name = "fedprox"
    Config = FedProxConfig
    Server = FedAvgServer
    Client = FedAvgClient
    summary = "FedAvg with a proximal term mu/2 ||w - w_global||^2"
