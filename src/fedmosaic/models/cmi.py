"""FedCMI's two-modality classifier: per modality an encoder, a self and an infiltration projector and
a head; a fused head over the self projections (Fan et al., arXiv 2401.00894).

For modality m with encoder output ``z_m``::

    s_m = P_self_m(z_m)                  # m's own knowledge
    i_m = P_inf_m(z_m)                   # knowledge infiltrated from the other modality
    h_m = H_m([s_m, i_m])                # per-modality ("self") head on the concatenation
    f   = F([s_1, s_2])                  # fused head on the concatenated self projections

A sample holding both modalities is predicted by ``f``; a sample holding one modality m (a
single-modality client, or testing on one modality) by ``h_m``: the fused head needs both self
projections and the project never zero-fills an absent modality, while ``h_m`` is trained on every
sample that holds m. Without infiltration (the ablation) the infiltration projectors do not exist and
``h_m = H_m(s_m)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fedmosaic.core.task import TaskInfo
from fedmosaic.models.build import build_encoder


@dataclass
class CMIOutputs:
    """Everything one forward pass computes, for the modalities present in the batch."""

    self_proj: dict[str, torch.Tensor]
    inf_proj: dict[str, torch.Tensor]
    heads: dict[str, torch.Tensor]  # per-modality logits h_m
    fused: torch.Tensor | None  # fused logits, only when both modalities are present


class CMIClassifier(nn.Module):
    """Encoders, self/infiltration projectors (Linear, as the authors' default ``branch_type``) and heads."""

    def __init__(
        self, encoders: dict[str, nn.Module], embed_dim: int, num_classes: int, infiltration: bool = True
    ) -> None:
        super().__init__()
        if len(encoders) != 2:
            raise ValueError(f"FedCMI needs a task with exactly two modalities, got {sorted(encoders)}")
        self.names = tuple(encoders)
        self.infiltration = infiltration
        self.encoders = nn.ModuleDict(encoders)
        self.self_proj = nn.ModuleDict({m: nn.Linear(embed_dim, embed_dim) for m in self.names})
        if infiltration:
            self.inf_proj = nn.ModuleDict({m: nn.Linear(embed_dim, embed_dim) for m in self.names})
        head_in = 2 * embed_dim if infiltration else embed_dim
        self.heads = nn.ModuleDict({m: nn.Linear(head_in, num_classes) for m in self.names})
        self.fused = nn.Linear(2 * embed_dim, num_classes)  # the authors' ConcatFusion

    def head_logits(self, name: str, self_proj: torch.Tensor, inf_proj: torch.Tensor | None) -> torch.Tensor:
        """``H_m([s_m, i_m])`` (``H_m(s_m)`` without infiltration)."""
        x = self_proj if inf_proj is None else torch.cat([self_proj, inf_proj], dim=1)
        return self.heads[name](x)

    def outputs(self, inputs: dict[str, torch.Tensor]) -> CMIOutputs:
        """Projections and logits of every modality present in ``inputs``."""
        unknown = set(inputs) - set(self.names)
        if unknown:
            raise KeyError(f"no encoder for modality {sorted(unknown)[0]!r}")
        if not inputs:
            raise ValueError("a batch must hold at least one modality")
        present = [m for m in self.names if m in inputs]
        s, i, h = {}, {}, {}
        for m in present:
            z = self.encoders[m](inputs[m])
            s[m] = self.self_proj[m](z)
            if self.infiltration:
                i[m] = self.inf_proj[m](z)
            h[m] = self.head_logits(m, s[m], i.get(m))
        fused = self.fused(torch.cat([s[m] for m in self.names], dim=1)) if len(present) == 2 else None
        return CMIOutputs(s, i, h, fused)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Fused logits when both modalities are present, else the present modality's head."""
        out = self.outputs(inputs)
        if out.fused is not None:
            return out.fused
        return next(iter(out.heads.values()))


def build_cmi_classifier(info: TaskInfo, cfg: object, infiltration: bool = True) -> CMIClassifier:
    """A :class:`CMIClassifier` with :func:`build_encoder`'s encoder for each modality of ``info``."""
    encoders = {m.name: build_encoder(m, cfg) for m in info.modalities}
    return CMIClassifier(encoders, cfg.embed_dim, info.num_classes, infiltration)  # type: ignore[attr-defined]


def part_prefixes(model: CMIClassifier, modalities: frozenset[str]) -> tuple[str, ...]:
    """Parameter-name prefixes a client holding ``modalities`` trains (and exchanges).

    Each held modality's encoder, projectors and head; the fused head only with both modalities
    (a single-modality client never computes it, so its copy would only dilute the average).
    """
    kinds = (
        ("encoders", "self_proj", "inf_proj", "heads")
        if model.infiltration
        else ("encoders", "self_proj", "heads")
    )
    out = tuple(f"{k}.{m}." for m in model.names if m in modalities for k in kinds)
    return out + (("fused.",) if all(m in modalities for m in model.names) else ())
