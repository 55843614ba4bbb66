"""The store's arrays made ready for the models: text tokenised, sensor and audio channels standardised.

Both learn only from the clients' samples (the vocabulary of a WordPiece trained here, the
per-channel mean and std), never from the server's or test samples, which must not shape them.
The frozen-encoder mode then replaces pretrained modalities by cached embeddings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fedmosaic.core.modality import Modality
from fedmosaic.data.registry import LoadedData

if TYPE_CHECKING:
    from fedmosaic.config import RunConfig

# Per-channel standardisation applies to these kinds (images are bytes, text ids, embeddings as given).
STANDARDISED_KINDS = ("timeseries", "audio")


def prepare_store(
    cfg: RunConfig, loaded: LoadedData, client_idx: np.ndarray
) -> tuple[tuple[Modality, ...], dict[str, np.ndarray]]:
    """Tokenise text, standardise sensor/audio channels (client statistics only), freeze if asked."""
    modalities = list(loaded.modalities)
    store = dict(loaded.store)
    stats: dict[str, dict[str, list[float]]] = {}
    for j, mod in enumerate(modalities):
        if mod.name in loaded.texts:
            store[mod.name], vocab = _tokenise(cfg, loaded.texts[mod.name], client_idx, mod.shape[0])
            modalities[j] = Modality(mod.name, mod.kind, mod.shape, vocab_size=vocab)
        elif mod.kind in STANDARDISED_KINDS:
            store[mod.name], stats[mod.name] = _standardise(store[mod.name], client_idx)
    loaded.extras["normalisation"] = stats
    if cfg.model.freeze_encoders:
        from fedmosaic.models.frozen import freeze_store

        frozen, store, report = freeze_store(tuple(modalities), store, cfg.model, cfg.seed)
        loaded.extras["frozen_encoders"] = report
        return tuple(frozen), store
    return tuple(modalities), store


def _tokenise(
    cfg: RunConfig, texts: list[str], client_idx: np.ndarray, max_tokens: int
) -> tuple[np.ndarray, int]:
    from fedmosaic.data.text import load_tokenizer, tokenize_texts, train_wordpiece
    from fedmosaic.models.encoders import has_encoder

    if has_encoder("text", cfg.model.text_encoder):
        # tiny or a plug-in's encoder: no tokenizer of its own, so the task learns a vocabulary,
        # from client texts only: test captions must not shape it.
        tokenizer = train_wordpiece([texts[i] for i in client_idx])
    else:
        tokenizer = load_tokenizer(cfg.model.text_encoder)
    return tokenize_texts(tokenizer, texts, max_tokens), len(tokenizer)


def _standardise(array: np.ndarray, client_idx: np.ndarray) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Per-channel (axis 1) mean/std over the clients' samples, applied to every sample."""
    sample = array[client_idx]
    axes = tuple(i for i in range(sample.ndim) if i != 1)
    mean = sample.mean(axis=axes, dtype=np.float64)
    std = sample.std(axis=axes, dtype=np.float64)
    std = np.where(std > 1e-8, std, 1.0)  # a constant channel carries no information; keep it at 0
    shape = (1, -1) + (1,) * (array.ndim - 2)
    out = ((array - mean.reshape(shape)) / std.reshape(shape)).astype(np.float32)
    return out, {"mean": mean.tolist(), "std": std.tolist()}
