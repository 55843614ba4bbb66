"""models.pooling: the same bits as torch's max pools, forward and backward, ties included."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedmosaic.models.pooling import HalvingMaxPool, halving_max_pool


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.int32)


def _inputs(shape: tuple[int, ...], seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(shape, generator=g)
    return [
        noise,  # no ties
        (noise * 2).round().relu(),  # ReLU zeros and small integers: ties in most windows
        torch.zeros(shape),  # every window a four-way tie
        -noise.abs(),  # every maximum negative
    ]


@pytest.mark.parametrize(
    "shape", [(4, 3, 8, 8), (2, 5, 7, 9), (1, 1, 2, 2), (3, 16, 24, 24), (4, 6, 16), (2, 3, 9), (1, 1, 2)]
)
def test_values_and_gradients_bit_identical_to_torch(shape: tuple[int, ...]) -> None:
    reference = nn.MaxPool2d(2) if len(shape) == 4 else nn.MaxPool1d(2)
    for seed, base in enumerate(_inputs(shape, 0)):
        a, b = base.clone().requires_grad_(), base.clone().requires_grad_()
        want, got = reference(a), HalvingMaxPool()(b)
        assert got.shape == want.shape
        assert torch.equal(got, want)  # == treats 0.0 and -0.0 as equal: the one case bits may differ
        assert torch.equal(_bits(got[got != 0]), _bits(want[want != 0]))
        upstream = torch.randn(want.shape, generator=torch.Generator().manual_seed(seed))
        want.backward(upstream)
        got.backward(upstream)
        assert torch.equal(_bits(b.grad), _bits(a.grad)), f"gradient differs for input {seed}"


def test_first_maximum_of_a_window_takes_the_gradient() -> None:
    # every window a tie: torch routes the gradient to the window's first element, row by row
    x = torch.ones(1, 1, 2, 4, requires_grad=True)
    halving_max_pool(x).sum().backward()
    assert x.grad.tolist() == [[[[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]]
    # a strictly larger later element takes it
    y = torch.tensor([[[[1.0, 1.0], [1.0, 2.0]]]], requires_grad=True)
    halving_max_pool(y).sum().backward()
    assert y.grad.tolist() == [[[[0.0, 0.0], [0.0, 1.0]]]]


def test_without_gradient_and_in_a_model() -> None:
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(_bits(halving_max_pool(x)), _bits(nn.functional.max_pool2d(x, 2)))
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), HalvingMaxPool())
    assert model.state_dict().keys() == {"0.weight", "0.bias"}  # no parameters of its own


def test_too_small_input_fails_as_torch_does() -> None:
    with pytest.raises(RuntimeError):
        halving_max_pool(torch.randn(1, 1, 1, 4))
    with pytest.raises(RuntimeError):
        halving_max_pool(torch.randn(1, 1, 1))


def test_nan_windows_route_the_gradient_as_torch_does() -> None:
    x = torch.randn(2, 3, 6, 8)
    x[0, 0, 0, 1] = x[0, 1, 1, 0] = x[0, 1, 1, 1] = x[1, 2, 0, 0] = float("nan")
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    want, got = nn.functional.max_pool2d(a, 2), halving_max_pool(b)
    assert torch.equal(want.isnan(), got.isnan())
    assert torch.equal(want.nan_to_num(), got.nan_to_num())
    upstream = torch.randn(want.shape)
    want.backward(upstream)
    got.backward(upstream)
    assert torch.equal(_bits(b.grad), _bits(a.grad))
