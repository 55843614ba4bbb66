"""make_optimizer: the multi-tensor path on a flat copy, and the same weights as PyTorch's per-tensor loop."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fedmosaic.models.flat_optimizer import FlatOptimizer
from fedmosaic.models.train import make_optimizer


def _train(model: nn.Module, optimizer: torch.optim.Optimizer | FlatOptimizer, steps: int = 25) -> nn.Module:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 3, 12, 12, generator=gen)
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.GroupNorm(4, 8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 10 * 10, 5)
    )


@pytest.mark.parametrize(
    "cfg",
    [
        SimpleNamespace(optimizer="adam", lr=0.003, weight_decay=0.0, momentum=0.0),
        SimpleNamespace(optimizer="adam", lr=0.003, weight_decay=0.01, momentum=0.0),
        SimpleNamespace(optimizer="sgd", lr=0.05, weight_decay=0.001, momentum=0.9),
    ],
    ids=["adam", "adam-weight-decay", "sgd-momentum"],
)
def test_multi_tensor_optimizer_gives_the_per_tensor_weights_bit_for_bit(cfg: SimpleNamespace) -> None:
    start = _model()
    ours = copy.deepcopy(start)
    optimizer = make_optimizer(list(ours.parameters()), cfg)
    assert optimizer.build.keywords["foreach"] is True  # the faster path is the one taken
    cls = optimizer.build.func
    reference = copy.deepcopy(start)
    extra = {"momentum": cfg.momentum} if cfg.optimizer == "sgd" else {}
    loop = cls(reference.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False, **extra)
    _train(ours, optimizer)
    _train(reference, loop)
    moved = any(not torch.equal(a, b) for a, b in zip(start.parameters(), ours.parameters(), strict=True))
    assert moved  # the comparison is about trained weights, not the starting ones
    for a, b in zip(ours.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)
