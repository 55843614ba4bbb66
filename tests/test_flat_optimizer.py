"""models.flat_optimizer: bit for bit the weights of torch's own optimizer, per parameter."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial

import pytest
import torch
from torch import nn

from fedmosaic.models import flat_optimizer
from fedmosaic.models.flat_optimizer import FlatOptimizer

ADAM = partial(torch.optim.Adam, lr=3e-3, foreach=True)
ADAM_DECAY = partial(torch.optim.Adam, lr=1e-2, weight_decay=1e-3, foreach=True)
SGD = partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=1e-4, foreach=True)
PLAIN_SGD = partial(torch.optim.SGD, lr=0.05, foreach=True)


class Net(nn.Module):
    """Two branches and a head: a step may use either branch, both, or neither."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.ReLU(), nn.Flatten())
        self.b = nn.Sequential(nn.Linear(5, 17), nn.GELU(), nn.Linear(17, 8 * 16))
        self.head = nn.Linear(8 * 16, 4)

    def forward(self, x: torch.Tensor, z: torch.Tensor, use: str) -> torch.Tensor:
        h = torch.zeros(x.shape[0], 8 * 16)
        if "a" in use:
            h = h + self.a(x)
        if "b" in use:
            h = h + self.b(z)
        return self.head(h)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.int64 if t.dtype == torch.float64 else torch.int32)


def _train_both(
    build: Callable, uses: list[str], model: nn.Module | None = None
) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    ref = model if model is not None else Net()
    flat = copy.deepcopy(ref)
    opt_ref, opt_flat = build(list(ref.parameters())), FlatOptimizer(list(flat.parameters()), build)
    g = torch.Generator().manual_seed(1)
    for use in uses:
        x, z, y = (
            torch.randn(6, 3, 4, 4, generator=g),
            torch.randn(6, 5, generator=g),
            torch.randint(4, (6,), generator=g),
        )
        for net, opt in ((ref, opt_ref), (flat, opt_flat)):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(net(x.to(net.head.weight.dtype), z, use), y).backward()
            opt.step()
        for (name, p), q in zip(ref.named_parameters(), flat.parameters(), strict=True):
            assert torch.equal(_bits(p), _bits(q)), f"{name} differs after a step using {use!r}"
    return ref, flat


@pytest.mark.parametrize(
    "build", [ADAM, ADAM_DECAY, SGD, PLAIN_SGD], ids=["adam", "adam-wd", "sgd", "sgd-plain"]
)
def test_every_parameter_with_a_gradient_every_step(build: Callable) -> None:
    _train_both(build, ["ab"] * 40)


@pytest.mark.parametrize("build", [ADAM, SGD], ids=["adam", "sgd"])
def test_a_branch_never_used_gets_no_state_and_no_step(build: Callable) -> None:
    ref, flat = _train_both(build, ["a"] * 20)
    assert torch.equal(ref.b[0].weight, flat.b[0].weight)  # untouched in both


@pytest.mark.parametrize("build", [ADAM, SGD], ids=["adam", "sgd"])
@pytest.mark.parametrize(
    "uses", [["ab"] * 8 + ["a"] * 5 + ["ab"] * 8, ["a"] * 6 + ["ab"] * 10, ["b", "", "ab", "a"] * 5]
)
def test_the_set_of_parameters_with_gradients_changes(build: Callable, uses: list[str]) -> None:
    _train_both(build, uses)


def test_several_dtypes_step_per_parameter() -> None:
    def params() -> list[nn.Parameter]:
        torch.manual_seed(0)
        return [nn.Parameter(torch.randn(7)), nn.Parameter(torch.randn(3, dtype=torch.float64))]

    ref, flat = params(), params()
    opt_ref, opt_flat = ADAM(ref), FlatOptimizer(flat, ADAM)
    for step in range(5):
        for ps, opt in ((ref, opt_ref), (flat, opt_flat)):
            opt.zero_grad()
            ((ps[0] * (step + 1)).square().sum() + ps[1].sin().sum()).backward()
            opt.step()
    assert opt_flat._flat_optimizer is None  # per parameter from the start
    assert all(torch.equal(_bits(a), _bits(b)) for a, b in zip(ref, flat, strict=True))


def test_zero_grad_keeping_the_tensors() -> None:
    model = Net()
    opt = FlatOptimizer(list(model.parameters()), ADAM)
    model(torch.randn(2, 3, 4, 4), torch.randn(2, 5), "ab").sum().backward()
    grad = model.head.weight.grad
    opt.zero_grad(set_to_none=False)
    assert model.head.weight.grad is grad and not grad.any()
    opt.zero_grad()
    assert model.head.weight.grad is None


def test_a_model_over_the_flat_limit_steps_per_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    model = Net()
    for limit, flat in ((100, False), (1 << 22, True)):
        monkeypatch.setattr(flat_optimizer, "FLAT_MAX", limit)
        opt = FlatOptimizer(list(model.parameters()), ADAM)
        model(torch.randn(2, 3, 4, 4), torch.randn(2, 5), "ab").sum().backward()
        opt.step()
        assert (opt._flat_optimizer is not None, opt._per_parameter is None) == (flat, flat)
