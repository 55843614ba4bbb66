"""torch's Adam or SGD stepping one flat copy of the parameters instead of each parameter.

torch's multi-tensor (``foreach``) optimizers still walk the parameter list in Python and dispatch
one tensor at a time: for the default model's 59 tensors (109,000 numbers) a step of Adam took 1.8
ms of a 19 ms training step. The same optimizer given one tensor holding every parameter, and one
holding every gradient, takes 0.8 ms with the copies in and out. Its arithmetic is element-wise, the
same operations in the same order on every number, so the weights come out bit-identical
(``tests/test_flat_optimizer.py`` checks Adam and SGD over many steps and in every fallback below).

Where one flat tensor cannot stand in, the step is torch's own, per parameter, with the state torch
would have had:

- torch skips a parameter without a gradient (no state, no step count: a client's encoder of a
  modality it lacks). The flat copy holds the parameters that had gradients at the first step; at
  the first step with another set, the flat state is split into per-parameter state and the
  optimizer goes on per parameter for the rest of its life.
- parameters of several dtypes or devices, or a sparse gradient: per parameter from the start.

Only on a CPU, and only up to :data:`FLAT_MAX` numbers: a GPU's foreach kernels already take many
tensors per launch, and for a large model the copies in and out would cost more memory traffic than
the per-tensor walk they save.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Build = Callable[[list[torch.Tensor]], torch.optim.Optimizer]
FLAT_MAX = 1 << 22  # numbers (16 MiB of float32): above it, per parameter


class FlatOptimizer:
    """``zero_grad`` and ``step`` of ``build(params)``, run on one flat tensor while the gradients allow."""

    def __init__(self, params: list[torch.nn.Parameter], build: Build) -> None:
        self.params = list(params)
        self.build = build
        self._members: tuple[int, ...] = ()
        self._flat: torch.Tensor | None = None
        self._views: list[torch.Tensor] = []
        self._flat_optimizer: torch.optim.Optimizer | None = None
        self._per_parameter: torch.optim.Optimizer | None = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients (as ``Optimizer.zero_grad``)."""
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.detach_().zero_()

    def step(self) -> None:
        """One optimizer step on the parameters that have gradients."""
        if self._per_parameter is not None:
            self._per_parameter.step()
            return
        members = tuple(i for i, p in enumerate(self.params) if p.grad is not None)
        if self._flat_optimizer is None:
            if not members:
                return  # torch would do nothing, and create no state
            if not self._flattenable(members):
                self._per_parameter = self.build(self.params)
                self._per_parameter.step()
                return
            self._start(members)
        elif members != self._members:
            self._split()
            self._per_parameter.step()  # type: ignore[union-attr]
            return
        chosen = [self.params[i] for i in self._members]
        flat = self._flat
        assert flat is not None and self._flat_optimizer is not None
        with torch.no_grad():
            torch.cat([p.reshape(-1) for p in chosen], out=flat)  # as they are now, however they got so
            flat.grad = torch.cat([p.grad.reshape(-1) for p in chosen])  # type: ignore[union-attr]
            self._flat_optimizer.step()
            torch._foreach_copy_(chosen, self._views)

    def _flattenable(self, members: tuple[int, ...]) -> bool:
        chosen = [self.params[i] for i in members]
        first = chosen[0]
        return (
            first.device.type == "cpu"
            and not first.is_complex()
            and sum(p.numel() for p in chosen) <= FLAT_MAX
            and all(
                p.dtype == first.dtype and p.device == first.device and not p.grad.is_sparse  # type: ignore[union-attr]
                for p in chosen
            )
        )

    def _start(self, members: tuple[int, ...]) -> None:
        chosen = [self.params[i] for i in members]
        self._members = members
        self._flat = torch.cat([p.detach().reshape(-1) for p in chosen])
        sizes = [p.numel() for p in chosen]
        self._views = [v.view(p.shape) for v, p in zip(self._flat.split(sizes), chosen, strict=True)]
        self._flat_optimizer = self.build([self._flat])

    def _split(self) -> None:
        """Go on per parameter, each starting from its part of the flat state."""
        assert self._flat is not None and self._flat_optimizer is not None
        self._per_parameter = self.build(self.params)
        flat_state = self._flat_optimizer.state.get(self._flat, {})
        offset = 0
        for i in self._members:
            p = self.params[i]
            part: dict[str, object] = {}
            for key, value in flat_state.items():
                if isinstance(value, torch.Tensor) and value.shape == self._flat.shape:
                    part[key] = value[offset : offset + p.numel()].view(p.shape).clone()
                elif isinstance(value, torch.Tensor):
                    part[key] = value.clone()  # Adam's step count: one per parameter
                else:
                    part[key] = value
            self._per_parameter.state[p] = part
            offset += p.numel()
        self._flat_optimizer = None
