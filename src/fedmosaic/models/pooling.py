"""Max pooling that halves the last dimensions: torch's numbers, at a fraction of its CPU time.

The encoders halve their feature maps with a max pool of kernel 2 and stride 2 (``SmallCNN``
over height and width, ``Conv1dEncoder`` over time). On a CPU, torch 2.13's kernel for that pool
on NCHW tensors is a scalar loop: in a profile of the default run's rounds it was the most
expensive single operator, ahead of the convolutions (about 18 % of a local-baseline round). The
same maxima taken as ``torch.maximum`` of strided views run vectorised, and the gradient still goes
through torch's own pooling backward, fed with the indices torch would have chosen (on a tie, the
window's first maximum in row order; the last NaN, if any). So gradients are bit-identical to
``nn.MaxPool2d(2)`` / ``nn.MaxPool1d(2)``, and so are the values but for one case: a window whose
maximum is a 0.0 and a -0.0 may give either sign, which no later sum or product can tell apart
(``tests/test_pooling.py`` checks both on inputs full of ties). Every published number stands.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable


def later_wins(later: torch.Tensor, earlier: torch.Tensor) -> torch.Tensor:
    """Where torch's pooling loop would take ``later`` over the maximum so far, ``earlier``."""
    return (later > earlier) | later.isnan()


class _HalvingMaxPool(torch.autograd.Function):
    """Max pool of an ``(N, C, H, W)`` tensor over ``(rows, 2)`` windows, stride = kernel, floor mode."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rows: int) -> torch.Tensor:  # type: ignore[override]
        h, w = x.shape[-2] // rows, x.shape[-1] // 2
        width = x.shape[-1]

        def pair(dy: int) -> tuple[torch.Tensor, torch.Tensor]:
            return x[..., dy : h * rows : rows, 0 : 2 * w : 2], x[..., dy : h * rows : rows, 1 : 2 * w : 2]

        left, right = pair(0)
        out = torch.maximum(left, right)
        low = None
        if rows == 2:
            left2, right2 = pair(1)
            second = torch.maximum(left2, right2)
            if ctx.needs_input_grad[0]:
                low = later_wins(second, out)
            out = torch.maximum(out, second)
        ctx.rows = rows
        if ctx.needs_input_grad[0]:
            # torch's indices (the position in the input's (H, W) plane), by torch's rule: scanning a
            # window row by row, a later value replaces the maximum so far when greater or NaN
            column = later_wins(right, left)
            if low is not None:
                column = (low & later_wins(right2, left2)) | (~low & column)  # torch.where is slower here
            base = (torch.arange(h, device=x.device) * (rows * width)).unsqueeze(1)
            index = (base + torch.arange(w, device=x.device) * 2) + column
            if low is not None:
                index = index.add_(low, alpha=width)
            ctx.save_for_backward(x, index)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        x, index = ctx.saved_tensors
        kernel = [ctx.rows, 2]
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, kernel, kernel, [0, 0], [1, 1], False, index
        ), None


def halving_max_pool(x: torch.Tensor) -> torch.Tensor:
    """``max_pool1d(x, 2)`` of an ``(N, C, L)`` tensor or ``max_pool2d(x, 2)`` of an ``(N, C, H, W)`` one."""
    if x.dim() == 3:
        if x.shape[-1] < 2 or not (x.requires_grad and torch.is_grad_enabled()):
            return nn.functional.max_pool1d(x, 2)  # fast without indices (or torch's error for L < 2)
        return _HalvingMaxPool.apply(x.unsqueeze(-2), 1).squeeze(-2)
    if x.dim() != 4 or min(x.shape[-2:]) < 2:
        return nn.functional.max_pool2d(x, 2)  # torch's own result, or its error
    return _HalvingMaxPool.apply(x, 2)


class HalvingMaxPool(nn.Module):
    """``nn.MaxPool1d(2)`` or ``nn.MaxPool2d(2)`` (by the input's rank) with the same numbers, faster."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return halving_max_pool(x)
