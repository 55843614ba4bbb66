"""Text encoder: a small BERT built from a transformers config (random init, no download)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel


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
        weights = mask.unsqueeze(-1).float()
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.proj(pooled)
