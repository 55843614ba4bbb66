"""The multimodal classifier: one encoder per modality into a shared space, fusion, a head.

The same model serves a sample with one modality or with all of them: an absent modality is an
absent key (or a ``False`` in the per-sample ``present`` mask), never a zero-filled input, and every
fusion masks it out (``model.fusion``):

* ``mean``: the mean of the present modalities' embeddings (no parameters);
* ``concat``: the embeddings concatenated in the task's modality order and projected back to
  ``embed_dim``. A concatenation needs a value in every slot, so an absent modality's slot holds a
  *learned* per-modality "absent" vector (like a mask token), never zeros standing in for data:
  zeros are a possible embedding, and the network could not tell "absent" from "embedded as 0";
* ``attention``: a learned query attends over the present embeddings (each plus a learned
  modality-type vector, so the weights can depend on which modality it is), with a key padding
  mask that gives an absent modality weight exactly zero.

Fusion parameters live under ``fusion.`` (none for ``mean``), shared by every client like the head.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Fusion = Literal["mean", "concat", "attention"]


def _present_rows(present: dict[str, torch.Tensor] | None, name: str) -> torch.Tensor | None:
    """``(batch,)`` bool: which samples hold modality ``name``; ``None``: all of them (no mask)."""
    if present is None or name not in present:
        return None
    return present[name].to(torch.bool)


class ConcatFusion(nn.Module):
    """Concatenate one slot per modality (learned "absent" vector where missing), project to ``dim``."""

    def __init__(self, modalities: tuple[str, ...], dim: int) -> None:
        super().__init__()
        self.modalities = modalities
        # small random init (not zeros): an "absent" slot must be distinguishable from any modality
        self.absent = nn.ParameterDict({m: nn.Parameter(0.02 * torch.randn(dim)) for m in modalities})
        self.project = nn.Linear(len(modalities) * dim, dim)

    def forward(
        self, embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None
    ) -> torch.Tensor:
        batch = next(iter(embeddings.values())).shape[0]
        slots = []
        for m in self.modalities:
            absent = self.absent[m].expand(batch, -1)
            if m not in embeddings:
                slots.append(absent)
                continue
            rows = _present_rows(present, m)
            # where(), not a product with the mask: an absent sample's tensor (even NaN) never leaks
            slots.append(embeddings[m] if rows is None else torch.where(rows[:, None], embeddings[m], absent))
        return self.project(torch.cat(slots, dim=1))


class AttentionFusion(nn.Module):
    """Attention pooling: a learned query over the present modality embeddings (key padding mask)."""

    def __init__(self, modalities: tuple[str, ...], dim: int, heads: int = 1) -> None:
        super().__init__()
        self.modalities = modalities
        self.query = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.kind = nn.Parameter(0.02 * torch.randn(len(modalities), dim))  # modality-type vectors
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None
    ) -> torch.Tensor:
        reference = next(iter(embeddings.values()))
        batch, dim = reference.shape
        tokens, padding = [], []
        for i, m in enumerate(self.modalities):
            rows = _present_rows(present, m)
            if m not in embeddings:
                rows = torch.zeros(batch, dtype=torch.bool, device=reference.device)
                value = reference.new_zeros(batch, dim)  # a placeholder the mask gives weight 0
            else:
                value = embeddings[m]
                rows = torch.ones(batch, dtype=torch.bool, device=value.device) if rows is None else rows
                # an absent sample's tensor is replaced before attention (0 * NaN would still be NaN)
                value = torch.where(rows[:, None], value, torch.zeros_like(value))
            tokens.append(value + self.kind[i])
            padding.append(~rows)
        keys = torch.stack(tokens, dim=1)  # (B, M, d)
        mask = torch.stack(padding, dim=1)  # (B, M), True = absent: never attended to
        pooled, _ = self.attention(self.query.expand(batch, -1, -1), keys, keys, key_padding_mask=mask)
        return self.norm(pooled[:, 0])


class MultimodalClassifier(nn.Module):
    """``encoders[m]`` maps modality m to ``embed_dim``; ``fusion`` combines them; ``head`` classifies."""

    def __init__(
        self, encoders: dict[str, nn.Module], embed_dim: int, num_classes: int, fusion: Fusion = "mean"
    ) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.head = nn.Sequential(
            nn.LayerNorm(embed_dim),
            nn.Linear(embed_dim, embed_dim),
            nn.ReLU(),
            nn.Linear(embed_dim, num_classes),
        )
        self.fusion_kind: Fusion = fusion
        # built after the head, so "mean" (no fusion parameters) draws the same initial weights as before
        names = tuple(encoders)
        if fusion == "concat":
            self.fusion = ConcatFusion(names, embed_dim)
        elif fusion == "attention":
            self.fusion = AttentionFusion(names, embed_dim)
        elif fusion != "mean":
            raise ValueError(f"model.fusion: unknown fusion {fusion!r} (mean, concat or attention)")

    def embed(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-modality embeddings of the modalities present in ``inputs``."""
        unknown = set(inputs) - set(self.encoders)
        if unknown:
            raise KeyError(f"no encoder for modality {sorted(unknown)[0]!r}")
        return {name: self.encoders[name](x) for name, x in inputs.items()}

    def fuse(
        self, embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """One ``(batch, embed_dim)`` vector per sample from the present modalities' embeddings.

        ``present[m]``: an optional ``(batch,)`` bool mask of the samples that hold ``m`` (a key
        missing from ``embeddings`` is absent for every sample). Every sample needs one modality.
        """
        if not embeddings:
            raise ValueError("a batch must hold at least one modality")
        if present is not None:
            counts = sum(
                present.get(m, torch.ones(len(e), dtype=torch.bool, device=e.device)).long()
                for m, e in embeddings.items()
            )
            if bool((counts == 0).any()):
                raise ValueError("every sample must hold at least one modality")
        if self.fusion_kind != "mean":
            return self.fusion(embeddings, present)
        if present is None:
            return torch.stack(list(embeddings.values())).mean(0)  # the original computation, bit for bit
        total = sum(
            torch.where(present[m].to(torch.bool)[:, None], e, torch.zeros_like(e)) if m in present else e
            for m, e in embeddings.items()
        )
        return total / counts[:, None].to(total.dtype)

    def classify(
        self, embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Logits from per-modality embeddings (what :meth:`forward` does after :meth:`embed`)."""
        return self.head(self.fuse(embeddings, present))

    def forward(
        self, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Logits for ``inputs``; ``present`` optionally masks samples' modalities (see :meth:`fuse`)."""
        return self.classify(self.embed(inputs), present)
