"""Atomic file I/O for checkpoints: safetensors for arrays, JSON for everything else."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save

from fedmosaic.core.message import Message


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_message(path: Path, message: Message) -> None:
    """Atomically write a Message as ``path`` (safetensors, metadata in its header).

    Metadata values keep their type through a JSON string in the safetensors header.
    """
    # np.require keeps 0-d arrays 0-d (ascontiguousarray would make them 1-d)
    arrays = {k: np.require(v, requirements="C") for k, v in message.arrays.items()}
    atomic_write_bytes(path, save(arrays, metadata={"fedmosaic_meta": json.dumps(message.meta)}))


def load_message(path: Path) -> Message:
    """Read a Message written by :func:`save_message`."""
    with safe_open(str(path), framework="numpy") as handle:
        header = handle.metadata() or {}
    arrays = load_file(str(path))
    meta = json.loads(header.get("fedmosaic_meta", "{}"))
    return Message(dict(arrays), meta)
