"""The multimodal classifier: one encoder per modality into a shared space, fusion, a head.

Fusion is the mean of the embeddings of the modalities a batch actually holds, so the same model
serves a sample with one modality or with all of them (absent keys, never zero-filled inputs).
"""

from __future__ import annotations

import torch
from torch import nn


class MultimodalClassifier(nn.Module):
    """``encoders[m]`` maps modality m to ``embed_dim``; ``head`` classifies the fused embedding."""

    def __init__(self, encoders: dict[str, nn.Module], embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.head = nn.Sequential(
            nn.LayerNorm(embed_dim),
            nn.Linear(embed_dim, embed_dim),
            nn.ReLU(),
            nn.Linear(embed_dim, num_classes),
        )

    def embed(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-modality embeddings of the modalities present in ``inputs``."""
        unknown = set(inputs) - set(self.encoders)
        if unknown:
            raise KeyError(f"no encoder for modality {sorted(unknown)[0]!r}")
        return {name: self.encoders[name](x) for name, x in inputs.items()}

    def fuse(self, embeddings: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean of the present modalities' embeddings."""
        if not embeddings:
            raise ValueError("a batch must hold at least one modality")
        return torch.stack(list(embeddings.values())).mean(0)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.fuse(self.embed(inputs)))
