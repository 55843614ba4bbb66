"""One builder for the classifier of a task, from its modalities and the model config."""

from __future__ import annotations

from typing import Any

from torch import nn

from fedmosaic.core.modality import Modality
from fedmosaic.core.task import TaskInfo
from fedmosaic.models.audio import MelCNN
from fedmosaic.models.image import MobileNetEncoder, SmallCNN
from fedmosaic.models.multimodal import MultimodalClassifier
from fedmosaic.models.text import BertEncoder, PretrainedTextEncoder
from fedmosaic.models.timeseries import Conv1dEncoder, LSTMEncoder

# The per-sample shape each kind's encoder takes: (number of axes, how to say it).
ENCODER_SHAPES = {
    "image": (3, "(C, H, W)"),
    "audio": (3, "(1, n_mels, frames)"),
    "timeseries": (2, "(channels, window)"),
    "embedding": (1, "(dim,)"),
    "text": (1, "(max_tokens,)"),
}


def encoder_problem(modality: Modality) -> str | None:
    """Why :func:`build_encoder` could not build an encoder for ``modality`` (``None``: it can).

    Only kind and shape are checked, so it also answers for a task outline taken before loading
    (a text modality's ``vocab_size`` is set when the text is tokenised).
    """
    if modality.kind not in ENCODER_SHAPES:
        return f"modality {modality.name!r}: no encoder for kind {modality.kind!r}"
    axes, expected = ENCODER_SHAPES[modality.kind]
    if len(modality.shape) != axes:
        got = modality.shape
        return f"modality {modality.name!r}: a {modality.kind} modality needs shape {expected}, got {got}"
    return None


def encoder_problems(algorithm: str, info: TaskInfo) -> list[str]:
    """:meth:`~fedmosaic.core.algorithm.Algorithm.check_task` of an algorithm whose model has one
    :func:`build_encoder` encoder per modality: one line per modality no encoder takes."""
    return [f"{algorithm}: {p}" for m in info.modalities if (p := encoder_problem(m)) is not None]


def _require_encoder(modality: Modality) -> None:
    problem = encoder_problem(modality)
    if problem is not None:
        raise ValueError(problem)


def embedding_projection(dim: int, embed_dim: int) -> nn.Module:
    """LayerNorm + Linear from ``dim`` to ``embed_dim``: the trainable part above a frozen, cached encoder.

    The LayerNorm puts cached features of any scale (MiniLM, MobileNet) on a common footing first.
    """
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, embed_dim))


def build_encoder(modality: Modality, cfg: Any) -> nn.Module:
    """The encoder for one modality, chosen by its kind and ``cfg`` (a ModelConfig).

    image: SmallCNN or MobileNetV3 small/large; text: the tiny random BERT or a pretrained AutoModel;
    audio: MelCNN over (1, n_mels, frames); timeseries: Conv1d or LSTM over (C, T); embedding: a
    projection of precomputed features (see :mod:`fedmosaic.models.frozen`).
    """
    _require_encoder(modality)  # the same rule check_task reports before any work
    kind, shape = modality.kind, modality.shape
    if kind == "image":
        if cfg.image_encoder == "cnn":
            return SmallCNN(shape[0], cfg.embed_dim)
        variant = cfg.image_encoder.removeprefix("mobilenet_v3_")
        return MobileNetEncoder(shape[0], cfg.embed_dim, pretrained=cfg.pretrained, variant=variant)
    if kind == "text":
        if cfg.text_encoder != "tiny":
            return PretrainedTextEncoder(cfg.text_encoder, cfg.embed_dim, pretrained=True)
        if modality.vocab_size is None:
            raise ValueError(f"modality {modality.name!r}: a text modality needs vocab_size")
        return BertEncoder(
            modality.vocab_size,
            shape[0],
            cfg.embed_dim,
            cfg.text_hidden,
            cfg.text_layers,
            cfg.text_heads,
        )
    if kind == "audio":
        return MelCNN(shape[0], cfg.embed_dim)
    if kind == "timeseries":
        if cfg.timeseries_encoder == "lstm":
            return LSTMEncoder(shape[0], cfg.embed_dim)
        return Conv1dEncoder(shape[0], cfg.embed_dim)
    return embedding_projection(shape[0], cfg.embed_dim)  # kind "embedding"


def build_classifier(info: TaskInfo, cfg: Any) -> MultimodalClassifier:
    """A :class:`MultimodalClassifier` with one encoder per modality of ``info``."""
    encoders = {m.name: build_encoder(m, cfg) for m in info.modalities}
    return MultimodalClassifier(encoders, cfg.embed_dim, info.num_classes)
