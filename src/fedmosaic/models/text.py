"""Text encoders over token ids (pad id 0): a tiny random BERT and any pretrained AutoModel.

Both pool the last hidden states by a masked mean over the non-pad tokens (what sentence-transformers
does for MiniLM) and project the pooled vector to ``embed_dim``.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn

from fedmosaic.models.pretrained import load_pretrained


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, L, H) over the positions where ``mask`` (B, L) is non-zero.

    An all-pad row pools to zeros instead of NaN (the clamp), so a sample without text cannot
    poison a batch.
    """
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class BertEncoder(nn.Module):
    """BERT over token ids (pad id 0), masked mean pooling, linear projection to ``embed_dim``."""

    def __init__(
        self,
        vocab_size: int,
        max_tokens: int,
        embed_dim: int,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 2,
    ) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel  # lazy: transformers takes ~3 s to import

        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=2 * hidden,
            max_position_embeddings=max(max_tokens, 8),
            pad_token_id=0,
        )
        self.bert = BertModel(config, add_pooling_layer=False)
        self.proj = nn.Linear(hidden, embed_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != 0).long()
        hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        return self.proj(masked_mean(hidden, mask))


def _drop_unused_pooler(backbone: nn.Module) -> None:
    """Remove a BERT-style pooler (dense + tanh on [CLS]): mean pooling never uses it, and its
    untrained weights would otherwise travel in every weight-sharing message.

    Only for models built to run without one (their class takes ``add_pooling_layer``), so setting
    it to None is exactly ``add_pooling_layer=False``.
    """
    if (
        getattr(backbone, "pooler", None) is not None
        and "add_pooling_layer" in inspect.signature(type(backbone).__init__).parameters
    ):
        backbone.pooler = None


class PretrainedTextEncoder(nn.Module):
    """A Hugging Face encoder (hub id or local folder) + masked mean pooling + a projection.

    ``pretrained=False`` builds the same architecture from its config with random weights (tests,
    ablations). :meth:`pooled` gives the backbone's pooled features without the projection (what
    the frozen-encoder cache stores); ``feature_dim`` is their size (384 for MiniLM-L6).
    """

    def __init__(self, source: str | Path, embed_dim: int, pretrained: bool = True) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel  # lazy, as above

        if pretrained:
            self.backbone = load_pretrained(AutoModel.from_pretrained, source, "model")
        else:
            config = load_pretrained(AutoConfig.from_pretrained, source, "model config")
            self.backbone = AutoModel.from_config(config)
        _drop_unused_pooler(self.backbone)
        self.source = str(source)
        self.vocab_size = int(self.backbone.config.vocab_size)
        self.feature_dim = int(self.backbone.config.hidden_size)
        self.proj = nn.Linear(self.feature_dim, embed_dim)

    def pooled(self, ids: torch.Tensor) -> torch.Tensor:
        """Masked mean of the backbone's last hidden states, ``(B, feature_dim)``."""
        ids = ids.long()
        mask = (ids != 0).long()
        # Drop trailing columns that are padding in every row: with the attention mask they change
        # nothing, and a store padded to max_tokens is mostly padding (a large saving per batch).
        used = torch.nonzero(mask.any(0))
        width = int(used.max()) + 1 if len(used) else 1
        ids, mask = ids[:, :width], mask[:, :width]
        hidden = self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        return masked_mean(hidden, mask)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pooled(ids))
