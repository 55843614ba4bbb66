"""Frozen-encoder mode: pretrained encoders run once, their embeddings are cached, only heads train.

With ``model.freeze_encoders = true`` every modality whose encoder is pretrained (text with
``model.text_encoder`` set to a model; image with ``model.pretrained = true`` and a MobileNetV3) is
replaced by an ``"embedding"`` modality: the backbone's pooled features (MiniLM: the masked mean of
its last hidden states, 384-d; MobileNetV3: globally pooled features, 576-d small / 960-d large),
computed once over the whole store, in eval mode, without the projection. The federation then trains
only ``build_encoder``'s small LayerNorm + Linear projection on top of them.

Computing every party's embeddings here, in one process, is a simulation shortcut and not a leak:
in a real deployment each site runs the same public, frozen encoder over its own samples, which
yields exactly these numbers; only the projection and what the algorithm shares ever cross the wire.

Embeddings are cached on disk as ``<cache>/embeddings/<sha256>.npy`` where the cache is
``model.cache_dir``, else ``$XDG_CACHE_HOME/fedmosaic``, else ``~/.cache/fedmosaic``. The key covers
the encoder (source, variant, and for a local model folder its files' sizes and mtimes), the pooling,
and the store array (a SHA-256 of its bytes, its shape and dtype), so a changed data set or model is
never served a stale file. Files are written to a temporary name and moved into place
(``os.replace``), so a crash or a concurrent run never leaves a half-written cache entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fedmosaic.core.errors import ConfigError
from fedmosaic.core.modality import Modality
from fedmosaic.core.task import to_tensor  # the exact conversion training batches get (uint8 -> [0, 1])
from fedmosaic.models.encoders import has_encoder
from fedmosaic.models.image import MobileNetEncoder, mobilenet_weights
from fedmosaic.models.pretrained import resolve_source
from fedmosaic.models.text import PretrainedTextEncoder

CACHE_FORMAT = 1  # bump when the pooling or preprocessing changes: old cache files stop matching
BATCH_SIZE = 64
PROGRESS_MIN_SAMPLES = 1000  # smaller stores finish in seconds; a bar would only flicker
NO_ENCODER_MESSAGE = (
    "model.freeze_encoders: no pretrained encoder to freeze "
    "(set model.text_encoder to a model or model.pretrained = true)"
)


# The image encoders with ImageNet weights: only these can be frozen and cached.
MOBILENETS = ("mobilenet_v3_small", "mobilenet_v3_large")


@dataclass(frozen=True)
class _Plan:
    """How to freeze one modality: the key parts of its cache entry and how to build its encoder."""

    source: str
    variant: str
    fingerprint: tuple[Any, ...]
    build: Callable[[], Any]  # -> an nn.Module with .pooled(x) and .feature_dim
    order: np.ndarray | None = None  # the order to encode rows in (None: as stored)


def cache_root(cfg: Any) -> Path:
    """The cache folder: ``cfg.cache_dir``, else ``$XDG_CACHE_HOME/fedmosaic``, else ~/.cache/fedmosaic."""
    if cfg.cache_dir is not None:
        return Path(cfg.cache_dir).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fedmosaic"


def freezable(modality: Modality, cfg: Any) -> bool:
    """Whether ``modality``'s encoder under ``cfg`` is pretrained (and so can be frozen and cached)."""
    if modality.kind == "text":
        return not has_encoder("text", cfg.text_encoder)  # a hub id or model folder, not tiny or a plug-in's
    if modality.kind == "image":
        return bool(cfg.pretrained) and cfg.image_encoder in MOBILENETS
    return False


# Pooled feature sizes of the MobileNetV3 backbones (the classifier's first in_features).
MOBILENET_FEATURES = {"small": 576, "large": 960}


def frozen_modality(modality: Modality, cfg: Any) -> Modality:
    """The ``"embedding"`` modality :func:`freeze_store` will make of ``modality``, without encoding.

    For checking an algorithm against the task before any work: the size is read from the encoder's
    description (a text model's config, MobileNetV3's known feature width), not from running it.
    """
    if modality.kind == "image":
        variant = cfg.image_encoder.removeprefix("mobilenet_v3_")
        dim = MOBILENET_FEATURES.get(variant, 0)
    else:
        from transformers import AutoConfig

        from fedmosaic.models.pretrained import load_pretrained

        dim = int(load_pretrained(AutoConfig.from_pretrained, cfg.text_encoder, "model config").hidden_size)
    return Modality(modality.name, "embedding", (dim,))


def freeze_store(
    modalities: tuple[Modality, ...] | list[Modality],
    store: dict[str, np.ndarray],
    cfg: Any,
    seed: int,
    progress: bool = True,
) -> tuple[tuple[Modality, ...], dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Replace each pretrained-encoder modality by its cached ``"embedding"`` modality.

    ``cfg`` is a ModelConfig. Without ``cfg.freeze_encoders`` nothing changes (empty report). Other
    modalities pass through untouched (same arrays). ``seed`` seeds any weights a checkpoint lacks so
    the result is reproducible. ``progress`` allows a progress bar (shown on a terminal, for stores of
    more than 1,000 samples). The report maps each frozen modality to its ``source``, ``dim``,
    ``status`` ("cached" or "computed"), ``seconds`` and cache ``file``.
    """
    modalities = tuple(modalities)
    if not cfg.freeze_encoders:
        return modalities, dict(store), {}
    if not any(freezable(m, cfg) for m in modalities):
        hint = ""
        if cfg.pretrained and cfg.image_encoder == "cnn" and any(m.kind == "image" for m in modalities):
            hint = "; model.pretrained applies to the mobilenet_v3 image encoders, not cnn"
        raise ConfigError(NO_ENCODER_MESSAGE + hint)
    folder = cache_root(cfg) / "embeddings"
    new_modalities: list[Modality] = []
    new_store = dict(store)
    report: dict[str, dict[str, Any]] = {}
    for modality in modalities:
        if not freezable(modality, cfg):
            new_modalities.append(modality)
            continue
        start = time.perf_counter()
        if modality.name not in store:  # raw strings (LoadedData.texts) must be tokenised first
            raise ValueError(
                f"modality {modality.name!r}: freeze_store needs its store array (token ids or images)"
            )
        array = store[modality.name]
        plan = _plan(modality, array, cfg)
        path = folder / f"{_cache_key(plan, array)}.npy"
        embeddings = _load_cached(path, len(array))
        status = "cached"
        if embeddings is None:
            status = "computed"
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                encoder = plan.build()
            show = progress and len(array) > PROGRESS_MIN_SAMPLES
            embeddings = _encode(encoder, array, f"encoding {modality.name}", show, plan.order)
            _save_atomic(path, embeddings)
        new_store[modality.name] = embeddings
        new_modalities.append(Modality(modality.name, "embedding", (int(embeddings.shape[1]),)))
        report[modality.name] = {
            "source": plan.source,
            "dim": int(embeddings.shape[1]),
            "status": status,
            "seconds": round(time.perf_counter() - start, 3),
            "file": str(path),
        }
    return tuple(new_modalities), new_store, report


def _plan(modality: Modality, array: np.ndarray, cfg: Any) -> _Plan:
    """Check the store fits the encoder and describe the encoder for the cache key."""
    if modality.kind == "text":
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"modality {modality.name!r}: frozen text needs token ids (n, max_tokens) of an integer "
                f"type, got {array.dtype} {array.shape}"
            )
        source = resolve_source(cfg.text_encoder)

        def build_text() -> PretrainedTextEncoder:
            encoder = PretrainedTextEncoder(cfg.text_encoder, cfg.embed_dim, pretrained=True)
            _check_token_ids(modality, array, encoder.vocab_size, cfg.text_encoder)
            return encoder

        # Shortest texts first: a batch of similar lengths is cropped to little padding (see
        # PretrainedTextEncoder.pooled), several times faster on captions of varied length.
        by_length = np.argsort((array != 0).sum(1), kind="stable")
        return _Plan(source, "text/masked-mean", _folder_fingerprint(source), build_text, by_length)
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise ValueError(
            f"modality {modality.name!r}: frozen images need (n, 1 or 3, H, W), got {array.shape}"
        )
    variant = cfg.image_encoder.removeprefix("mobilenet_v3_")
    weights = mobilenet_weights(variant)

    def build_image() -> MobileNetEncoder:
        return MobileNetEncoder(array.shape[1], cfg.embed_dim, pretrained=True, variant=variant)

    return _Plan(str(weights), f"image/{cfg.image_encoder}/imagenet-norm/avgpool", (), build_image)


def _check_token_ids(modality: Modality, array: np.ndarray, vocab_size: int, source: str) -> None:
    """Token ids must come from the encoder's own tokenizer; an id outside its vocabulary cannot."""
    if not len(array):
        return
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(
            f"modality {modality.name!r}: token id {low if low < 0 else high} is outside the vocabulary "
            f"({vocab_size}) of model.text_encoder {source!r}; tokenise with its own tokenizer"
        )


def _folder_fingerprint(source: str) -> tuple[Any, ...]:
    """Sizes and mtimes of a local model folder's files, so retrained weights get a new cache key."""
    folder = Path(source)
    if not folder.is_dir():
        return ()  # a hub id: its name is the key
    return tuple(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()
    )


def _array_digest(array: np.ndarray) -> str:
    """SHA-256 of the array's bytes, read in row chunks (no full copy of a memory-mapped store)."""
    digest = hashlib.sha256()
    rows = max(1, (64 << 20) // max(1, array[:1].nbytes))  # about 64 MB per chunk
    for start in range(0, len(array), rows):
        digest.update(np.ascontiguousarray(array[start : start + rows]).data)
    return digest.hexdigest()


def _cache_key(plan: _Plan, array: np.ndarray) -> str:
    """The cache file name: SHA-256 over the encoder description and the store's bytes, shape, dtype."""
    parts = {
        "format": CACHE_FORMAT,
        "source": plan.source,
        "variant": plan.variant,
        "fingerprint": plan.fingerprint,
        "store": _array_digest(array),
        "shape": list(array.shape),
        "dtype": str(array.dtype),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _load_cached(path: Path, n: int) -> np.ndarray | None:
    """The cached embeddings at ``path``, or None when absent or unusable (then they are recomputed)."""
    if not path.is_file():
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        warnings.warn(f"{path}: unreadable embedding cache file; recomputing it", stacklevel=3)
        return None
    if array.ndim != 2 or len(array) != n or array.dtype != np.float32 or not np.isfinite(array).all():
        warnings.warn(f"{path}: embedding cache file does not fit the store; recomputing it", stacklevel=3)
        return None
    return array


def _encode(encoder: Any, array: np.ndarray, label: str, show: bool, order: np.ndarray | None) -> np.ndarray:
    """``encoder.pooled`` over ``array`` in batches, eval mode, no autograd; float32 ``(n, dim)``.

    ``order`` visits the rows in that order (each sample's embedding does not depend on its batch).
    """
    encoder.eval()
    rows = np.arange(len(array)) if order is None else order
    out = np.empty((len(array), encoder.feature_dim), dtype=np.float32)
    with torch.inference_mode(), _progress(label, len(array), show) as advance:
        for start in range(0, len(rows), BATCH_SIZE):
            chosen = rows[start : start + BATCH_SIZE]
            batch = to_tensor(np.asarray(array[chosen]))
            out[chosen] = encoder.pooled(batch).float().numpy()
            advance(len(chosen))
    return out


@contextlib.contextmanager
def _progress(label: str, total: int, show: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr when ``show`` and stderr is a terminal; else a no-op."""
    console = Console(file=sys.stderr)
    if not show or not console.is_terminal:
        yield lambda _: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda k: bar.advance(task, k)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` via a temporary file + ``os.replace``; a failure only warns."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, array)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache must not stop a run whose embeddings are in memory
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        warnings.warn(
            f"{path}: could not write the embedding cache ({exc}); continuing without it", stacklevel=3
        )
