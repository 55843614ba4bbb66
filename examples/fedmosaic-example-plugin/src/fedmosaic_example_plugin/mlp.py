"""An encoder for ``embedding`` modalities (``model.embedding_encoder = "mlp"``): a two-layer MLP.

fedmosaic's own ``projection`` is one LayerNorm + Linear; this one adds a hidden layer of
``2 * model.embed_dim`` units, so the features may interact before fusion.
"""

from __future__ import annotations

from torch import nn

from fedmosaic.core.modality import Modality
from fedmosaic.core.settings import ModelConfig
from fedmosaic.models.encoders import register_encoder


@register_encoder("embedding", "mlp")
def mlp(modality: Modality, cfg: ModelConfig) -> nn.Module:
    """Linear -> ReLU -> Linear from the modality's ``(dim,)`` features to ``cfg.embed_dim``."""
    hidden = 2 * cfg.embed_dim
    return nn.Sequential(
        nn.Linear(modality.shape[0], hidden),
        nn.ReLU(),
        nn.Linear(hidden, cfg.embed_dim),
    )
