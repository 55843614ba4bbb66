"""Encoders by modality kind and name: ``model.<kind>_encoder`` picks one per kind.

An encoder is registered as a factory ``(modality, model_cfg) -> nn.Module`` that maps a batch of
the modality (``(B, *modality.shape)``) to ``(B, model_cfg.embed_dim)``. fedmosaic's own are
registered in :mod:`fedmosaic.models.build` the same way a plug-in registers its own::

    @register_encoder("embedding", "mlp")
    def mlp(modality: Modality, cfg: ModelConfig) -> nn.Module: ...

Built-ins and the ``fedmosaic.encoders`` entry points load on first lookup
(:mod:`fedmosaic.core.plugins`). A text encoder name that is not registered is a Hugging Face hub id
or a local model folder (see :func:`fedmosaic.models.build.build_encoder`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from fedmosaic.core.modality import MODALITY_KINDS, Modality
from fedmosaic.core.plugins import Registry

EncoderFactory = Callable[[Modality, Any], nn.Module]
F = TypeVar("F", bound=EncoderFactory)

# The ModelConfig field that names each kind's encoder.
ENCODER_FIELDS: dict[str, str] = {kind: f"{kind}_encoder" for kind in MODALITY_KINDS}


def _load_builtins() -> None:
    import fedmosaic.models.build  # noqa: F401  (registers the built-in encoders)


def _label(key: str) -> str:
    kind, _, name = key.partition("/")
    return f"{kind} encoder {name!r}"


# The built-ins (all registered by fedmosaic.models.build): checking a config's encoder names imports
# no model code.
_BUILTINS = (
    "image/cnn",
    "image/mobilenet_v3_small",
    "image/mobilenet_v3_large",
    "text/tiny",
    "audio/melcnn",
    "timeseries/cnn1d",
    "timeseries/lstm",
    "embedding/projection",
)
ENCODERS: Registry[EncoderFactory] = Registry(
    "encoder",
    "fedmosaic.encoders",
    _load_builtins,
    _label,
    declared=dict.fromkeys(_BUILTINS, "fedmosaic.models.build"),
)


def register_encoder(kind: str, name: str) -> Callable[[F], F]:
    """Decorator: register a factory ``(modality, model_cfg) -> nn.Module`` as ``kind``'s encoder ``name``.

    Another factory under a taken name is a one-line :class:`~fedmosaic.core.errors.PluginError`.
    """
    if kind not in MODALITY_KINDS:
        raise ValueError(f"register_encoder: kind must be one of {', '.join(MODALITY_KINDS)}, got {kind!r}")
    if not name or "/" in name:
        raise ValueError(f"register_encoder: name must be non-empty and without '/', got {name!r}")

    def decorate(factory: F) -> F:
        ENCODERS.add(f"{kind}/{name}", factory, by=factory)
        return factory

    return decorate


def encoder_names(kind: str) -> list[str]:
    """The registered encoder names of one modality kind."""
    prefix = f"{kind}/"
    return [key.removeprefix(prefix) for key in ENCODERS.names() if key.startswith(prefix)]


def has_encoder(kind: str, name: str) -> bool:
    """Whether ``name`` is a registered encoder of ``kind``."""
    return f"{kind}/{name}" in ENCODERS


def get_encoder(kind: str, name: str) -> EncoderFactory:
    """``kind``'s encoder factory ``name``; ``KeyError`` lists that kind's known names."""
    if not has_encoder(kind, name):
        raise KeyError(f"unknown encoder {name!r}; known: {', '.join(encoder_names(kind))}")
    return ENCODERS.get(f"{kind}/{name}")


def ensure_loaded() -> None:
    """Load the built-ins and the ``fedmosaic.encoders`` entry points now (normally on first lookup)."""
    ENCODERS.ensure_loaded()
