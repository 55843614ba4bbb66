"""Tokenizers built offline (no hub download): a word-level vocabulary wrapped as a HF fast tokenizer."""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")  # [PAD] is id 0: the text encoders rely on it


def word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A lower-casing, whitespace-splitting word-level tokenizer over ``words``."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab.setdefault(word.lower(), len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )


def encode(tokenizer: PreTrainedTokenizerFast, texts: list[str], max_tokens: int) -> np.ndarray:
    """Token ids ``(n, max_tokens)`` as int32, ``[CLS]`` first, truncated and padded with id 0."""
    cls_id = tokenizer.cls_token_id
    out = np.zeros((len(texts), max_tokens), dtype=np.int32)
    for i, ids in enumerate(tokenizer(texts, add_special_tokens=False)["input_ids"]):
        row = [cls_id, *ids][:max_tokens]
        out[i, : len(row)] = row
    return out
