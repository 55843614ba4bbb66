"""Modalities and clients as data: a task declares them, a client holds a subset."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ModalityKind = Literal["image", "text", "audio", "timeseries", "embedding"]
MODALITY_KINDS: tuple[str, ...] = ("image", "text", "audio", "timeseries", "embedding")


@dataclass(frozen=True)
class Modality:
    """One input modality of a task.

    ``shape`` is the per-sample array shape (e.g. ``(3, 24, 24)`` for an image, ``(L,)`` token ids for
    text). ``vocab_size`` is set for token-id modalities only.
    """

    name: str
    kind: ModalityKind
    shape: tuple[int, ...]
    vocab_size: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in MODALITY_KINDS:
            raise ValueError(
                f"modality {self.name!r}: kind must be one of {MODALITY_KINDS}, got {self.kind!r}"
            )
        if "+" in self.name or not self.name:
            raise ValueError(f"modality name {self.name!r} must be non-empty and must not contain '+'")


def group_name(modalities: frozenset[str] | tuple[str, ...] | list[str], order: tuple[str, ...]) -> str:
    """Canonical name of a modality set, in the task's modality order: ``"image+text"``."""
    held = set(modalities)
    return "+".join(m for m in order if m in held)


@dataclass(frozen=True)
class ClientSpec:
    """A client's identity and the modalities it holds (what an engine may tell its server)."""

    id: str
    modalities: frozenset[str]
    n_train: int = 0
    group: str = field(default="")
