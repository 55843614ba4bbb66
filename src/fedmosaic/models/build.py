"""One builder for the classifier of a task, from its modalities and the model config."""

from __future__ import annotations

from typing import Any

from torch import nn

from fedmosaic.core.modality import Modality
from fedmosaic.core.task import TaskInfo
from fedmosaic.models.image import MobileNetEncoder, SmallCNN
from fedmosaic.models.multimodal import MultimodalClassifier
from fedmosaic.models.text import BertEncoder


def build_encoder(modality: Modality, cfg: Any) -> nn.Module:
    """The encoder for one modality, chosen by its kind and ``cfg`` (a ModelConfig)."""
    if modality.kind == "image":
        if cfg.image_encoder == "mobilenet_v3_small":
            return MobileNetEncoder(modality.shape[0], cfg.embed_dim, pretrained=cfg.pretrained)
        return SmallCNN(modality.shape[0], cfg.embed_dim)
    if modality.kind == "text":
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
    raise NotImplementedError(f"modality {modality.name!r}: no encoder for kind {modality.kind!r} yet")


def build_classifier(info: TaskInfo, cfg: Any) -> MultimodalClassifier:
    """A :class:`MultimodalClassifier` with one encoder per modality of ``info``."""
    encoders = {m.name: build_encoder(m, cfg) for m in info.modalities}
    return MultimodalClassifier(encoders, cfg.embed_dim, info.num_classes)
