"""Which torch device a run's models, batches and aggregation live on (``engine.device``).

``cpu`` is the default: it keeps every number of a run byte-identical to what fedmosaic has always
produced, on every machine. ``auto`` takes CUDA when torch sees a GPU, else Apple's MPS, else the
CPU; ``cuda``, ``cuda:N`` and ``mps`` ask for that device and fail in one line when it is absent.

Messages and client states stay numpy on the CPU whatever the device (Flower, safetensors and the
file pipeline take numpy): a half moves its model and each batch to the device and brings every
array it sends back to the CPU. Only the name check (:func:`check_device_name`) runs at config
validation, without importing torch; availability is checked at run start by
:func:`resolve_device`, before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeVar

from fedmosaic.core.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"
_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
T = TypeVar("T")


def check_device_name(value: str) -> str:
    """``value`` when it spells a device fedmosaic accepts (no availability check); else ValueError."""
    if not isinstance(value, str) or not _PATTERN.fullmatch(value.strip().lower()):
        raise ValueError(f"expected {DEVICE_NAMES}, got {value!r}")
    return value.strip().lower()


def resolve_device(name: str, key: str = "engine.device", workers: int = 1) -> str:
    """The concrete device ``name`` means on this machine (``auto`` -> ``cuda``, ``mps`` or ``cpu``).

    A device this machine does not have raises :class:`ConfigError` naming ``key``: one line, never
    a CUDA traceback from deep inside the first round. ``workers > 1`` (``engine.workers``, the
    forked client pool) only goes with the CPU: CUDA and MPS cannot be used again in a forked child.
    """
    device = _available(name, key)
    if workers > 1 and device != "cpu":
        raise ConfigError(
            f"engine.workers: {workers} forked workers need the cpu device ({key} gives {device}, and a "
            "GPU cannot be used from forked processes); on a GPU keep engine.workers = 1"
        )
    return device


def _available(name: str, key: str) -> str:
    import torch

    try:
        name = check_device_name(name)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if name == "cpu":
        return name
    if name == "mps":
        if not has_mps:
            raise ConfigError(
                f"{key}: mps is not available on this machine (torch sees no Apple GPU); use cpu or auto"
            )
        return name
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ConfigError(
            f"{key}: {name} is not available on this machine (torch {torch.__version__}, {build}, "
            "sees no CUDA GPU); use cpu or auto"
        )
    index = int(name.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"{key}: {name} is not available on this machine (torch sees {torch.cuda.device_count()} "
            f"CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1})"
        )
    return name


def model_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter or buffer (the CPU for a module with neither)."""
    import torch

    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def to_device(batch: T, device: torch.device | str) -> T:
    """A tensor, or a mapping of tensors (a batch's modalities), on ``device``.

    On the CPU the very same objects come back: CPU runs make no copies and stay byte-identical.
    """
    import torch

    device = torch.device(device)
    if device.type == "cpu":
        return batch
    if isinstance(batch, Mapping):
        return type(batch)({k: v.to(device, non_blocking=True) for k, v in batch.items()})  # type: ignore[call-arg, return-value]
    return batch.to(device, non_blocking=True)  # type: ignore[attr-defined]
