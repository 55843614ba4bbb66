"""Tokenizers: built offline (word level, WordPiece) or loaded from a pretrained text model.

Every text encoder in fedmosaic treats id 0 as padding; the tokenizers made or accepted here all pad
with id 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from fedmosaic.core.errors import ConfigError
from fedmosaic.models.pretrained import load_pretrained

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


def load_tokenizer(source: str | Path) -> PreTrainedTokenizerFast:
    """The tokenizer of a pretrained text model (hub id or local folder), through ``AutoTokenizer``.

    The text encoders treat id 0 as padding, so a tokenizer whose pad id is not 0 is refused with a
    one-line :class:`ConfigError` naming ``model.text_encoder``.
    """
    tokenizer = load_pretrained(AutoTokenizer.from_pretrained, source, "tokenizer")
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ConfigError(f"model.text_encoder: {str(source)!r} has no fast (Rust) tokenizer")
    if tokenizer.pad_token_id != 0:
        raise ConfigError(
            f"model.text_encoder: the tokenizer of {str(source)!r} pads with id "
            f"{tokenizer.pad_token_id}, but fedmosaic's text encoders need pad id 0"
        )
    return tokenizer


def train_wordpiece(texts: Sequence[str], vocab_size: int = 4000) -> PreTrainedTokenizerFast:
    """A lower-casing WordPiece tokenizer trained on ``texts`` (BERT-style splitting and specials).

    Specials are ``[PAD]`` = 0, ``[UNK]`` = 1, ``[CLS]`` = 2, ``[SEP]`` = 3; encoding wraps a text in
    ``[CLS] ... [SEP]`` like a BERT tokenizer, so :func:`tokenize_texts` treats it like a pretrained one.
    """
    if not texts:
        raise ValueError("train_wordpiece: no texts to train on")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"train_wordpiece: vocab_size must exceed {len(SPECIAL_TOKENS)}, got {vocab_size}")
    core = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    core.train_from_iterator(texts, trainer=trainer)
    core.post_processor = processors.BertProcessing(
        ("[SEP]", core.token_to_id("[SEP]")), ("[CLS]", core.token_to_id("[CLS]"))
    )
    core.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )


def tokenize_texts(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], max_tokens: int) -> np.ndarray:
    """Token ids ``(n, max_tokens)`` as int32 with the tokenizer's own specials, truncated, padded with 0."""
    if tokenizer.pad_token_id != 0:
        raise ValueError(f"tokenize_texts: the tokenizer pads with id {tokenizer.pad_token_id}, not 0")
    if max_tokens < 2:
        raise ValueError(f"tokenize_texts: max_tokens must be >= 2, got {max_tokens}")
    if not texts:
        return np.zeros((0, max_tokens), dtype=np.int32)
    ids = tokenizer(
        list(texts), padding="max_length", truncation=True, max_length=max_tokens, return_tensors="np"
    )["input_ids"]
    return ids.astype(np.int32)
