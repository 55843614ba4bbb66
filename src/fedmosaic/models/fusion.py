"""Fusion blocks of global-vector fusion (gvf), composed from ``torch.nn`` layers.

The model of one gvf client is :class:`GVFModel`:

    x_m --encoder_m (local)--> e_m --adapter_m (shared)--> h_m in R^d        for each held modality m
    missing modality m':  h_m' := fill from the global-vector bank (partner centre of the present one)
    tokens [h_1 .. h_M] --CrossAttentionTransformer--> Z                      (core cross-modal information)
    h = mean of the *real* h_m;  R = GatingMechanism(h, Z) = g * h + (1 - g) * Z
    logits = FusionClassifier(R)

Encoders stay on their client; adapters, the cross-attention transformer, the gate and the classifier
are the shared ("global update") part. The bank holds the paired cluster centres (global vectors),
one ``(k, d)`` buffer per modality, row i of every modality belonging to the same pair.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from fedmosaic.core.device import model_device

FillMode = Literal["attention", "nearest"]


class CrossAttentionTransformer(nn.Module):
    """One block in which every modality token attends to the *other* modality tokens.

    ``nn.MultiheadAttention`` with a mask that hides each token from itself makes it cross-attention
    (with two modalities: image attends to text and text to image); residual + LayerNorm + a
    feed-forward layer as in a transformer block. ``Z`` is the mean of the updated tokens. With one
    token (no partner: the no-global-vectors ablation on a single-modality sample) the block reduces
    to its feed-forward part, because attention has nothing to attend to.
    """

    def __init__(self, dim: int, heads: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` (B, M, d) -> Z (B, d)."""
        m = tokens.shape[1]
        x = tokens
        if m > 1:
            hide_self = torch.eye(m, dtype=torch.bool, device=tokens.device)  # True = may not attend
            attended, _ = self.attention(tokens, tokens, tokens, attn_mask=hide_self, need_weights=False)
            x = self.norm1(tokens + attended)
        x = self.norm2(x + self.ffn(x))
        return x.mean(1)


class GatingMechanism(nn.Module):
    """Forget-gate fusion: ``g = sigmoid(W [h; Z] + b)``, ``R = g * h + (1 - g) * Z`` (element-wise).

    The gate decides, per feature, how much of the client's own representation ``h`` to keep and
    how much of the cross-modal ``Z`` to take in. ``gated=False`` is the ablation: plain
    concatenation, ``R = W_c [h; Z]``.
    """

    def __init__(self, dim: int, gated: bool = True) -> None:
        super().__init__()
        self.gated = gated
        self.linear = nn.Linear(2 * dim, dim)

    def forward(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        both = torch.cat([h, z], dim=-1)
        if not self.gated:
            return self.linear(both)
        g = torch.sigmoid(self.linear(both))
        return g * h + (1 - g) * z


class FusionClassifier(nn.Module):
    """Cross-entropy head on the fused representation R."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, num_classes)
        )

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.net(r)


def fill_from_bank(
    present: torch.Tensor,
    bank_present: torch.Tensor,
    bank_missing: torch.Tensor,
    mode: FillMode = "attention",
    temperature: float = 0.1,
) -> torch.Tensor:
    """Stand-in vectors for a missing modality from the paired global vectors.

    ``nearest``: the partner centre of the present vector's nearest centre (cosine). ``attention``:
    a softmax over cosine similarities to every centre of the present modality, applied to the
    partner centres (differentiable, so the local encoder learns to land near useful centres).
    """
    sim = F.normalize(present, dim=-1) @ F.normalize(bank_present, dim=-1).T
    if mode == "nearest":
        return bank_missing[sim.argmax(1)]
    return torch.softmax(sim / temperature, dim=1) @ bank_missing


class GVFModel(nn.Module):
    """Encoders (local), per-modality adapters into the shared d-space, fusion and classifier (shared).

    The bank is one ``(k, d)`` tensor per modality (:meth:`set_bank`); an empty bank (before the
    first aggregation, or with global vectors switched off) means a missing modality stays missing.
    ``fill_with`` names, per missing modality, the present modality whose nearest centres pick the
    partner (the first present one in task order).
    """

    def __init__(
        self,
        encoders: dict[str, nn.Module],
        embed_dim: int,
        dim: int,
        num_classes: int,
        heads: int = 2,
        gated: bool = True,
        fill: FillMode = "attention",
        fill_temperature: float = 0.1,
    ) -> None:
        super().__init__()
        self.order = tuple(encoders)
        self.encoders = nn.ModuleDict(encoders)
        # The adapter is the projection into the shared space: LayerNorm puts every encoder's output
        # on a common scale first, so the same aggregated Linear suits all clients' local encoders.
        self.adapters = nn.ModuleDict(
            {m: nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, dim)) for m in encoders}
        )
        self.fusion = CrossAttentionTransformer(dim, heads)
        self.gate = GatingMechanism(dim, gated)
        self.classifier = FusionClassifier(dim, num_classes)
        self.fill = fill
        self.fill_temperature = fill_temperature
        self.dim = dim
        # A plain attribute, not buffers: the bank's k changes between rounds and it arrives with
        # every message, so it is no part of the weights (to_arrays/load_arrays never see it).
        self._bank: dict[str, torch.Tensor] = {}

    def bank(self, modality: str) -> torch.Tensor:
        """The global vectors of ``modality`` (``(k, d)``; ``k = 0`` when there are none)."""
        return self._bank.get(modality, torch.zeros(0, self.dim, device=model_device(self)))

    def set_bank(self, vectors: dict[str, torch.Tensor]) -> None:
        """Replace the bank (any ``k``; an empty dict clears it)."""
        device = model_device(self)  # the vectors meet the model's own tensors in forward
        self._bank = {m: v.float().clone().to(device) for m, v in vectors.items() if m in self.encoders}

    def project(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Shared-space vectors ``h_m`` of the modalities present in ``inputs``."""
        unknown = set(inputs) - set(self.encoders)
        if unknown:
            raise KeyError(f"no encoder for modality {sorted(unknown)[0]!r}")
        return {m: self.adapters[m](self.encoders[m](x)) for m, x in inputs.items()}

    def fuse(self, projected: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits from real vectors ``projected``; missing modalities are filled from the bank."""
        if not projected:
            raise ValueError("a batch must hold at least one modality")
        present = [m for m in self.order if m in projected]
        tokens = []
        for m in self.order:
            if m in projected:
                tokens.append(projected[m])
                continue
            source = next((p for p in present if len(self.bank(p)) and len(self.bank(m))), None)
            if source is not None:
                tokens.append(
                    fill_from_bank(
                        projected[source],
                        self.bank(source),
                        self.bank(m),
                        self.fill,
                        self.fill_temperature,
                    )
                )
        z = self.fusion(torch.stack(tokens, dim=1))
        h = torch.stack([projected[m] for m in present]).mean(0)
        return self.classifier(self.gate(h, z))

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fuse(self.project(inputs))
