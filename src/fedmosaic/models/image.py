"""Image encoders: a small CNN (the fast default) and torchvision's MobileNetV3 (small or large)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedmosaic.core.errors import ConfigError
from fedmosaic.models.pooling import HalvingMaxPool


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
            HalvingMaxPool(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.GroupNorm(8, 32),
            nn.ReLU(),
            HalvingMaxPool(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.GroupNorm(8, 64),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.proj = nn.Linear(64, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(x).flatten(1))


_MOBILENETS = {
    "small": ("mobilenet_v3_small", "MobileNet_V3_Small_Weights"),
    "large": ("mobilenet_v3_large", "MobileNet_V3_Large_Weights"),
}


def mobilenet_weights(variant: str) -> Any:
    """torchvision's default ImageNet weights enum of MobileNetV3 ``variant`` ("small" or "large")."""
    import torchvision.models as tvm  # lazy: torchvision takes ~1.5 s to import

    if variant not in _MOBILENETS:
        raise ValueError(
            f"model.image_encoder: MobileNetV3 variant must be 'small' or 'large', got {variant!r}"
        )
    return getattr(tvm, _MOBILENETS[variant][1]).DEFAULT


class MobileNetEncoder(nn.Module):
    """torchvision MobileNetV3 (small or large) features, global pooling, a projection to ``embed_dim``.

    Inputs are images in [0, 1] (how the task feeds uint8 stores); they are normalised with the
    ImageNet mean/std of the torchvision weights in both modes, so random and pretrained backbones see
    the same input scale. One-channel images are repeated to three (the backbone's stem needs RGB).
    ``pretrained`` loads ImageNet weights through torchvision: a download on first use, so only on a
    machine with internet access or with the file already in torch's hub cache.
    """

    def __init__(
        self, in_channels: int, embed_dim: int, pretrained: bool = False, variant: str = "small"
    ) -> None:
        super().__init__()
        import torchvision.models as tvm

        weights_enum = mobilenet_weights(variant)
        if in_channels not in (1, 3):
            raise ValueError(
                f"model.image_encoder: mobilenet_v3_{variant} takes 1- or 3-channel images, got {in_channels}"
            )
        builder_name = _MOBILENETS[variant][0]
        self.variant = variant
        self.in_channels = in_channels
        self.weights_name = str(weights_enum)  # e.g. "MobileNet_V3_Large_Weights.IMAGENET1K_V2"
        net = _build(getattr(tvm, builder_name), weights_enum if pretrained else None, builder_name)
        self.features = net.features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = int(net.classifier[0].in_features)  # 576 (small) / 960 (large)
        self.proj = nn.Linear(self.feature_dim, embed_dim)
        preset = weights_enum.transforms()
        # Not persistent: constants, not weights, so they stay out of state_dict and Messages.
        self.register_buffer("mean", torch.tensor(preset.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(preset.std).view(1, 3, 1, 1), persistent=False)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's globally pooled features, ``(B, feature_dim)``, before the projection."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.pool(self.features((x - self.mean) / self.std)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pooled(x))


def _build(builder: Callable[..., nn.Module], weights: Any, name: str) -> nn.Module:
    """``builder(weights=...)``; a failed weight download becomes one line naming ``model.pretrained``."""
    try:
        return builder(weights=weights)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a truncated file a RuntimeError
        reason = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        raise ConfigError(
            f"model.pretrained: cannot get the ImageNet weights of {name} ({reason}); "
            f"put the file from {weights.url} into {hub} or set model.pretrained = false"
        ) from None
