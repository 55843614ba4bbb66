"""The split multimodal LSTM autoencoder of FedMEKT and mmFedAvg, and FedMEKT-C's joint layer.

Per modality an :class:`LSTMEncoder` (two stacked LSTMs, ``channels -> 32 -> rep_size``) and an
:class:`LSTMDecoder` (``rep_size -> 32 -> channels``). *Split*: the representation of one modality
(the top layer's output at the last time step) is decoded into every modality the party holds, so
an acc+gyro client learns to predict its gyroscope window from its accelerometer window and vice
versa (Zhao et al., IoTDI 2022; Le et al., arXiv 2307.13214). Inputs are float32 ``(B, C, T)``
windows as the task stores them; embeddings are ``(B, T, D)`` sequences (batch first).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

HIDDEN = 32  # width of the first encoder layer and of the decoder's first layer (the reference's Num_neurons)


class LSTMEncoder(nn.Module):
    """Two stacked LSTMs, ``channels -> hidden -> rep_size``; both layers' output sequences are exposed."""

    def __init__(self, channels: int, rep_size: int, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.first = nn.LSTM(channels, hidden, batch_first=True)
        self.top = nn.LSTM(hidden, rep_size, batch_first=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, T)`` windows -> ``(top, first)`` embeddings: ``(B, T, rep_size)``, ``(B, T, hidden)``."""
        first, _ = self.first(x.transpose(1, 2))  # (B, C, T) -> (B, T, C): time is the sequence axis
        top, _ = self.top(first)
        return top, first


class LSTMDecoder(nn.Module):
    """``rep_size -> hidden -> channels``: the representation repeated over time, decoded by two LSTMs."""

    def __init__(self, rep_size: int, channels: int, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.first = nn.LSTM(rep_size, hidden, batch_first=True)
        self.out = nn.LSTM(hidden, channels, batch_first=True)

    def forward(self, representation: torch.Tensor, steps: int) -> torch.Tensor:
        """``(B, rep_size)`` -> ``(B, steps, channels)``."""
        hidden, _ = self.first(representation.unsqueeze(1).expand(-1, steps, -1))
        out, _ = self.out(hidden)
        return out


class SplitAutoencoder(nn.Module):
    """One encoder and one decoder per modality; any held modality's code is decoded into every held one.

    Parameter names are ``encoders.<modality>.*`` and ``decoders.<modality>.*``, so a party's share
    of the model is selected by prefix (mmFedAvg averages exactly those).
    """

    def __init__(self, channels: dict[str, int], rep_size: int, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.modalities = tuple(channels)
        self.rep_size = rep_size
        self.hidden = hidden
        self.encoders = nn.ModuleDict({m: LSTMEncoder(c, rep_size, hidden) for m, c in channels.items()})
        self.decoders = nn.ModuleDict({m: LSTMDecoder(rep_size, c, hidden) for m, c in channels.items()})

    def encode(self, x: torch.Tensor, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(top, first)`` embedding sequences of ``modality``'s windows."""
        return self.encoders[modality](x)

    def represent(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """The window representation: the top layer's output at the last time step, ``(B, rep_size)``."""
        return self.encode(x, modality)[0][:, -1, :]

    def reconstruction_loss(
        self,
        batch: dict[str, torch.Tensor],
        reverse: bool = True,
        codes: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Sum over held input modalities and held output modalities of the MSE of the cross-decoding.

        ``batch`` maps each held modality to its ``(B, C, T)`` windows (the same B samples). The
        target is the window as ``(B, T, C)``, time-reversed when ``reverse`` (the reference's
        default: the decoder unrolls the sequence backwards from the code, as in seq2seq AEs).
        ``codes`` (``{modality: (B, rep_size)}``) skips the encoders when the caller already ran them.
        """
        targets = {m: x.transpose(1, 2) for m, x in batch.items()}
        if reverse:
            targets = {m: t.flip(1) for m, t in targets.items()}
        sources = list(batch)
        if codes is None:
            codes = {m: self.represent(batch[m], m) for m in sources}
        stacked = torch.cat([codes[m] for m in sources])  # (S * B, rep)
        n = len(sources)
        loss = torch.zeros(())
        for target, y in targets.items():
            # One decoder call over every source's codes (a bigger batch is cheaper per sample on CPU
            # than one call per source); the mean over S * B samples, times S, is the sum over sources.
            # The target broadcasts over the S sources (no S-fold copy of it).
            decoded = self.decoders[target](stacked, y.shape[1]).unflatten(0, (n, -1))
            loss = loss + n * (decoded - y).square().mean()
        return loss


def joint_projection(n_modalities: int, width: int, seed: int) -> torch.Tensor:
    """FedMEKT-C's joint layer: a fixed ``(n_modalities * width, width)`` matrix with orthonormal columns.

    Why fixed and not trained: the only loss that could train it is the KD term itself, and a layer
    trained to make two distributions agree collapses to the trivial solution (all outputs equal).
    An orthonormal mixing keeps every direction of the concatenated embeddings, costs nothing on the
    wire (each party draws it from the run seed) and is identical at every party.
    """
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(n_modalities * width, width, generator=generator)
    q, _ = torch.linalg.qr(gaussian)  # reduced QR: (n*width, width) with orthonormal columns
    return q


def kd_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, axis: str = "embedding"
) -> torch.Tensor:
    """Temperature-scaled KL(teacher || student) between embedding sequences ``(B, T, D)``.

    ``axis="embedding"`` takes the softmax over D (each time step's embedding is a distribution);
    ``"time"`` over T, as the reference code did by accident (its KL_Loss used ``dim=1`` on batch-first
    sequences), kept for comparison only. The per-distribution KL is averaged over the other axes and
    multiplied by ``temperature**2`` (Hinton et al.), so the weight of the term does not depend on the
    window length or the batch size.
    """
    dim = -1 if axis == "embedding" else -2
    log_teacher = F.log_softmax(teacher / temperature, dim=dim)
    return kd_from_log_teacher(student, log_teacher, temperature, dim)


def kd_from_log_teacher(
    student: torch.Tensor, log_teacher: torch.Tensor, temperature: float, dim: int = -1
) -> torch.Tensor:
    """:func:`kd_loss` given the teacher's log-softmax (a constant target can be soft-maxed once)."""
    log_student = F.log_softmax(student / temperature, dim=dim)
    # Fused KL(teacher || student); its sum over everything / #distributions is the mean KL.
    kl = F.kl_div(log_student, log_teacher, reduction="sum", log_target=True)
    return kl * (student.shape[dim] / student.numel()) * temperature**2
