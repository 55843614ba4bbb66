"""FedMEKT's distillation machinery, shared by its client and server halves (algorithms/fedmekt.py).

Both halves distil the same way (temperature-scaled KL between embeddings of the round's proxy
batch, per modality or through the fixed joint projection of FedMEKT-C) and name the same arrays
on the wire; keeping that here leaves fedmekt.py to read as the method: config, client, server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn import functional as F

from fedmosaic.core.algorithm import Settings
from fedmosaic.core.seeding import SERVER, torch_seed
from fedmosaic.models.autoencoder import SplitAutoencoder, joint_projection, kd_from_log_teacher

if TYPE_CHECKING:
    from fedmosaic.algorithms.fedmekt import FedMEKTConfig

LAYERS = ("top", "first")
PROXY_IDX = "proxy_idx"


def emb_key(modality: str, layer: str) -> str:
    """Message array name of a modality's embeddings of the proxy batch (``emb/acc/top``)."""
    return f"emb/{modality}/{layer}"


def proxy_key(modality: str) -> str:
    """Message/state array name of a modality's proxy windows (``proxy/acc``)."""
    return f"proxy/{modality}"


def kd_layers(top: torch.Tensor, first: torch.Tensor, cfg: FedMEKTConfig) -> dict[str, torch.Tensor]:
    """``{layer: embedding}`` at the time steps the KD compares: all of them (the reference) or the
    last one (``kd_steps = "last"``)."""
    if cfg.kd_steps == "last":
        return {"top": top[:, -1:, :], "first": first[:, -1:, :]}
    return {"top": top, "first": first}


class Distiller:
    """The KD term of either side: per modality (S, or a unimodal party) or through the joint layer (C)."""

    def __init__(self, settings: Settings[FedMEKTConfig], model: SplitAutoencoder) -> None:
        self.cfg = settings.algorithm
        self.names = settings.info.modality_names
        widths = {"top": model.rep_size, "first": model.hidden}
        self.joint = {
            layer: joint_projection(
                len(self.names), w, torch_seed(settings.seed, 0, SERVER, f"joint-{layer}")
            ).to(settings.device)  # drawn on the CPU generator: the same projection on every device
            for layer, w in widths.items()
        }
        self.widths = widths

    def _join(self, embeddings: dict[str, torch.Tensor], layer: str) -> torch.Tensor:
        """Joint embedding: the held modalities' embeddings through their rows of the joint layer."""
        w, q = self.widths[layer], self.joint[layer]
        return sum(
            embeddings[m] @ q[i * w : (i + 1) * w] for i, m in enumerate(self.names) if m in embeddings
        )  # type: ignore[return-value]

    def _distributions(
        self, embeddings: dict[str, dict[str, torch.Tensor]], layer: str
    ) -> list[torch.Tensor]:
        """What the KD compares at ``layer``: the joint embedding (C, several modalities) or each one's."""
        if self.cfg.variant == "C" and len(embeddings) > 1:
            return [self._join({m: e[layer] for m, e in embeddings.items()}, layer)]
        return [embeddings[m][layer] for m in sorted(embeddings)]

    def log_targets(self, teacher: dict[str, dict[str, torch.Tensor]]) -> dict[str, list[torch.Tensor]]:
        """Per layer, the log-softmax of the distributions of ``teacher`` (``{modality: {layer: ...}}``).

        The teacher is constant for a whole round (the global or the averaged embeddings), so its
        joint embedding and softmax are computed once here, not at every step; the softmax is per
        sample (over D or over T), so a step's rows are a slice of this.
        """
        cfg = self.cfg
        dim = -1 if cfg.kd_axis == "embedding" else -2
        return {
            layer: [F.log_softmax(t / cfg.temperature, dim=dim) for t in self._distributions(teacher, layer)]
            for layer in LAYERS
        }

    def loss(
        self,
        student: dict[str, dict[str, torch.Tensor]],
        log_teacher: dict[str, list[torch.Tensor]],
        weights: dict[str, float],
        rows: slice | torch.Tensor = slice(None),
    ) -> torch.Tensor:
        """``sum_layer weight[layer] * KD(student || teacher)``; student ``{modality: {layer: (B,T,D)}}``.

        ``log_teacher`` is :meth:`log_targets` of the teacher embeddings of the same modalities;
        ``rows`` selects the samples of this step from it.
        """
        cfg = self.cfg
        dim = -1 if cfg.kd_axis == "embedding" else -2
        total = torch.zeros(())
        for layer in LAYERS:
            if weights[layer] == 0:
                continue
            pairs = zip(self._distributions(student, layer), log_teacher[layer], strict=True)
            term = sum(kd_from_log_teacher(s, t[rows], cfg.temperature, dim) for s, t in pairs)
            total = total + weights[layer] * term
        return total


def to_wire(embedding: torch.Tensor) -> np.ndarray:
    """An embedding as a C-contiguous array: a batch-first LSTM output is a transposed view, and an
    engine that serialises messages (Flower, files) delivers it contiguous, which torch rounds
    differently; sending it contiguous keeps every engine bit-identical.

    A copy, not ``np.ascontiguousarray``: that returns a ``kd_steps = "last"`` slice ``(B, 1, D)``
    of the transposed view as it is (numpy ignores the stride of a length-1 axis), and torch still
    rounds those strides differently from the canonical ones a deserialised array has.
    """
    return embedding.cpu().numpy().copy(order="C")


def encode_proxy(
    model: SplitAutoencoder, windows: dict[str, torch.Tensor], cfg: FedMEKTConfig
) -> dict[str, dict[str, torch.Tensor]]:
    """``{modality: {layer: embeddings}}`` of proxy windows, both layers, at the KD's time steps."""
    out = {}
    for m, x in windows.items():
        top, first = model.encode(x, m)
        out[m] = kd_layers(top, first, cfg)
    return out
