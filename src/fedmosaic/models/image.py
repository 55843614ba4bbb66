"""Image encoders: a small CNN (the fast default) and torchvision's MobileNetV3-small."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Three conv blocks and global pooling; enough for the synthetic task, fast on a CPU.

    GroupNorm rather than BatchNorm: running batch statistics averaged across clients with different
    data (and batch compositions) make the evaluated model unstable (Hsieh et al., ICML 2020).
    """

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1),
            nn.GroupNorm(8, 16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.GroupNorm(8, 32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.GroupNorm(8, 64),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.proj = nn.Linear(64, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(x).flatten(1))


class MobileNetEncoder(nn.Module):
    """torchvision MobileNetV3-small features + a linear projection to ``embed_dim``.

    ``pretrained`` loads ImageNet weights through torchvision (a download on first use: only on a
    machine with internet access).
    """

    def __init__(self, in_channels: int, embed_dim: int, pretrained: bool = False) -> None:
        super().__init__()
        from torchvision.models import MobileNet_V3_Small_Weights, mobilenet_v3_small

        if in_channels != 3:
            raise ValueError(f"model.image_encoder: mobilenet_v3_small needs 3 channels, got {in_channels}")
        weights = MobileNet_V3_Small_Weights.DEFAULT if pretrained else None
        net = mobilenet_v3_small(weights=weights)
        self.features = net.features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.proj = nn.Linear(net.classifier[0].in_features, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(self.features(x)).flatten(1))
