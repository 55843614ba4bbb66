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


def _shape_error(modality: Modality, expected: str) -> ValueError:
    return ValueError(
        f"modality {modality.name!r}: a {modality.kind} modality needs shape {expected}, got {modality.shape}"
    )


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
    kind, shape = modality.kind, modality.shape
    if kind == "image":
        if len(shape) != 3:
            raise _shape_error(modality, "(C, H, W)")
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
        if len(shape) != 3:
            raise _shape_error(modality, "(1, n_mels, frames)")
        return MelCNN(shape[0], cfg.embed_dim)
    if kind == "timeseries":
        if len(shape) != 2:
            raise _shape_error(modality, "(channels, window)")
        if cfg.timeseries_encoder == "lstm":
            return LSTMEncoder(shape[0], cfg.embed_dim)
        return Conv1dEncoder(shape[0], cfg.embed_dim)
    if kind == "embedding":
        if len(shape) != 1:
            raise _shape_error(modality, "(dim,)")
        return embedding_projection(shape[0], cfg.embed_dim)
    raise ValueError(f"modality {modality.name!r}: no encoder for kind {kind!r}")


def build_classifier(info: TaskInfo, cfg: Any) -> MultimodalClassifier:
    """A :class:`MultimodalClassifier` with one encoder per modality of ``info``."""
    encoders = {m.name: build_encoder(m, cfg) for m in info.modalities}
    return MultimodalClassifier(encoders, cfg.embed_dim, info.num_classes)
