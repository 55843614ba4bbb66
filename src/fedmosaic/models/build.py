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
    _require_encoder(modality)  # kind and shape: the same rule check_task reports before any work
    kind = modality.kind
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


def preload(info: TaskInfo | None) -> None:
    """Import now what building the encoders of ``info``'s modalities would import on first use
    (``None``: modalities not known yet, so whatever a text modality would).

    The text encoders import transformers when first built (about 3 s). An engine calls this while
    it sets up, so the import is paid before the first round's clock starts, and once before worker
    processes fork rather than once in each of them.
    """
    if info is None or any(m.kind == "text" for m in info.modalities):
        import transformers.models.bert.modeling_bert  # noqa: F401
