"""Model weights <-> numpy arrays, by name, for Messages and client state."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def encoder_prefix(modality: str) -> str:
    """Parameter-name prefix of a modality's encoder in a MultimodalClassifier."""
    return f"encoders.{modality}."


def to_arrays(module: nn.Module, prefixes: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The module's state (parameters and buffers), optionally only names starting with ``prefixes``."""
    return {
        name: tensor.detach().cpu().numpy().copy()
        for name, tensor in module.state_dict().items()
        if prefixes is None or name.startswith(prefixes)
    }


def load_arrays(module: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Overwrite the named entries of the module's state; unknown names or wrong shapes raise."""
    state = module.state_dict()
    for name, value in arrays.items():
        if name not in state:
            raise KeyError(f"model has no parameter or buffer {name!r}")
        if tuple(state[name].shape) != value.shape:
            raise ValueError(f"{name}: expected shape {tuple(state[name].shape)}, got {value.shape}")
    with torch.no_grad():
        for name, value in arrays.items():
            state[name].copy_(torch.from_numpy(np.asarray(value)))


def shared_prefixes(module: nn.Module, modalities: frozenset[str]) -> tuple[str, ...]:
    """Prefixes of what a client holding ``modalities`` trains: its encoders and every non-encoder part."""
    names = {n.split(".")[0] for n in module.state_dict()}
    return tuple(sorted(encoder_prefix(m) for m in modalities)) + tuple(
        f"{n}." for n in sorted(names) if n != "encoders"
    )
