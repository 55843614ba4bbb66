"""Sensor-window encoders over float ``(B, C, T)``: a 1-D CNN (the default) and an LSTM.

Inputs are windows already standardised per channel by the task builder (training statistics only).
"""

from __future__ import annotations

import torch
from torch import nn

from fedmosaic.models.pooling import HalvingMaxPool

MIN_WINDOW = 8  # shortest window the CNN is meant for (two halvings leave >= 2 steps to pool over)


def _block(c_in: int, c_out: int, kernel: int) -> list[nn.Module]:
    # GroupNorm, not BatchNorm: batch statistics averaged across clients with different data make
    # the federated model unstable (the same reason as SmallCNN's).
    return [nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.GroupNorm(8, c_out), nn.ReLU()]


class Conv1dEncoder(nn.Module):
    """Three Conv1d + GroupNorm + ReLU blocks (two max-pool halvings), global average pooling, projection.

    Global pooling makes it independent of the window length: any ``T >= 8`` works.
    """

    def __init__(self, channels: int, embed_dim: int, width: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_block(channels, width // 2, 5),
            HalvingMaxPool(),
            *_block(width // 2, width, 5),
            HalvingMaxPool(),
            *_block(width, width, 3),
            nn.AdaptiveAvgPool1d(1),
        )
        self.proj = nn.Linear(width, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < MIN_WINDOW:
            raise ValueError(f"Conv1dEncoder: windows need >= {MIN_WINDOW} time steps, got {x.shape[-1]}")
        return self.proj(self.features(x).flatten(1))


class LSTMEncoder(nn.Module):
    """A one-layer LSTM over time; its last hidden state is projected to ``embed_dim``."""

    def __init__(self, channels: int, embed_dim: int, hidden: int = 32) -> None:
        super().__init__()
        self.lstm = nn.LSTM(channels, hidden, batch_first=True)
        self.proj = nn.Linear(hidden, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h_n, _) = self.lstm(x.transpose(1, 2))  # (B, C, T) -> (B, T, C): time is the sequence axis
        return self.proj(h_n[-1])
