"""One builder for the classifier of a task, from its modalities and the model config.

It also registers fedmosaic's own encoders, the same way a plug-in registers its own
(:mod:`fedmosaic.models.encoders`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from fedmosaic.core.modality import Modality
from fedmosaic.core.task import TaskInfo
from fedmosaic.models.audio import MelCNN
from fedmosaic.models.encoders import ENCODER_FIELDS, get_encoder, has_encoder, register_encoder
from fedmosaic.models.image import MobileNetEncoder, SmallCNN
from fedmosaic.models.multimodal import MultimodalClassifier
from fedmosaic.models.text import BertEncoder, PretrainedTextEncoder
from fedmosaic.models.timeseries import Conv1dEncoder, LSTMEncoder


def _shape_error(modality: Modality, expected: str) -> ValueError:
    return ValueError(
        f"modality {modality.name!r}: a {modality.kind} modality needs shape {expected}, got {modality.shape}"
    )


def embedding_projection(dim: int, embed_dim: int) -> nn.Module:
    """LayerNorm + Linear from ``dim`` to ``embed_dim``: the trainable part above a frozen, cached encoder.

    The LayerNorm puts cached features of any scale (MiniLM, MobileNet) on a common footing first.
    """
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, embed_dim))


# What each kind's input looks like per sample; checked before any encoder (built-in or plug-in) is built.
_KIND_SHAPES: dict[str, tuple[int, str]] = {
    "image": (3, "(C, H, W)"),
    "audio": (3, "(1, n_mels, frames)"),
    "timeseries": (2, "(channels, window)"),
    "embedding": (1, "(dim,)"),
}


@register_encoder("image", "cnn")
def small_cnn(modality: Modality, cfg: Any) -> nn.Module:
    """A small CNN trained from scratch."""
    return SmallCNN(modality.shape[0], cfg.embed_dim)


@register_encoder("image", "mobilenet_v3_small")
def mobilenet_v3_small(modality: Modality, cfg: Any) -> nn.Module:
    """torchvision's MobileNetV3-small (ImageNet weights with ``model.pretrained``)."""
    return MobileNetEncoder(modality.shape[0], cfg.embed_dim, pretrained=cfg.pretrained, variant="small")


@register_encoder("image", "mobilenet_v3_large")
def mobilenet_v3_large(modality: Modality, cfg: Any) -> nn.Module:
    """torchvision's MobileNetV3-large (ImageNet weights with ``model.pretrained``)."""
    return MobileNetEncoder(modality.shape[0], cfg.embed_dim, pretrained=cfg.pretrained, variant="large")


@register_encoder("text", "tiny")
def tiny_bert(modality: Modality, cfg: Any) -> nn.Module:
    """A small random BERT (``model.text_hidden``/``text_layers``/``text_heads``) over token ids."""
    if modality.vocab_size is None:
        raise ValueError(f"modality {modality.name!r}: a text modality needs vocab_size")
    return BertEncoder(
        modality.vocab_size,
        modality.shape[0],
        cfg.embed_dim,
        cfg.text_hidden,
        cfg.text_layers,
        cfg.text_heads,
    )


@register_encoder("audio", "melcnn")
def mel_cnn(modality: Modality, cfg: Any) -> nn.Module:
    """A CNN over a log-mel spectrogram."""
    return MelCNN(modality.shape[0], cfg.embed_dim)


@register_encoder("timeseries", "cnn1d")
def conv1d(modality: Modality, cfg: Any) -> nn.Module:
    """A 1-D CNN over (channels, window)."""
    return Conv1dEncoder(modality.shape[0], cfg.embed_dim)


@register_encoder("timeseries", "lstm")
def lstm(modality: Modality, cfg: Any) -> nn.Module:
    """An LSTM over (channels, window)."""
    return LSTMEncoder(modality.shape[0], cfg.embed_dim)


@register_encoder("embedding", "projection")
def projection(modality: Modality, cfg: Any) -> nn.Module:
    """LayerNorm + Linear over precomputed features (see :func:`embedding_projection`)."""
    return embedding_projection(modality.shape[0], cfg.embed_dim)


def build_encoder(modality: Modality, cfg: Any) -> nn.Module:
    """The encoder for one modality: ``cfg.<kind>_encoder``'s registered factory (``cfg``: a ModelConfig).

    The modality's shape is checked for its kind first. A text encoder name that is not registered
    is a Hugging Face hub id or a local model folder, loaded with AutoModel. See
    :mod:`fedmosaic.models.encoders` for the registry and the built-ins' names.
    """
    kind, shape = modality.kind, modality.shape
    if kind not in ENCODER_FIELDS:
        raise ValueError(f"modality {modality.name!r}: no encoder for kind {kind!r}")
    if kind in _KIND_SHAPES and len(shape) != _KIND_SHAPES[kind][0]:
        raise _shape_error(modality, _KIND_SHAPES[kind][1])
    name = getattr(cfg, ENCODER_FIELDS[kind])
    if kind == "text" and not has_encoder("text", name):
        return PretrainedTextEncoder(name, cfg.embed_dim, pretrained=True)
    try:
        factory = get_encoder(kind, name)
    except KeyError as exc:
        raise ValueError(f"model.{ENCODER_FIELDS[kind]}: {exc.args[0]}") from None
    return factory(modality, cfg)


def build_classifier(info: TaskInfo, cfg: Any) -> MultimodalClassifier:
    """A :class:`MultimodalClassifier` with one encoder per modality of ``info``."""
    encoders = {m.name: build_encoder(m, cfg) for m in info.modalities}
    return MultimodalClassifier(encoders, cfg.embed_dim, info.num_classes, fusion=cfg.fusion)
