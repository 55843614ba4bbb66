"""Atomic file I/O for checkpoints: safetensors for arrays, JSON for everything else."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save

from fedmosaic.core.message import Message


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename or a new file in it) to disk.

    ``os.replace`` is atomic, but only a directory fsync makes the rename itself survive a power
    loss; without it a later step (say, deleting the previous checkpoint) can reach the disk first.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path) -> None:
    """``mkdir -p path``, fsyncing the parent of every directory it creates (so they survive a crash)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
        fsync_dir(folder.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never half of it.

    temp file in the same directory -> write -> fsync -> ``os.replace`` -> fsync of the directory:
    after it returns the new content is durable, even across a power loss.
    """
    path = Path(path)
    ensure_dir(path.parent)
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
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_message(path: Path, message: Message) -> str:
    """Atomically write a Message as ``path`` (safetensors, metadata in its header); the SHA-256 of
    the bytes written (a checkpoint records it, so damage is found when the file is read back).

    Metadata values keep their type through a JSON string in the safetensors header.
    """
    # np.require keeps 0-d arrays 0-d (ascontiguousarray would make them 1-d)
    arrays = {k: np.require(v, requirements="C") for k, v in message.arrays.items()}
    data = save(arrays, metadata={"fedmosaic_meta": json.dumps(message.meta)})
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (read in chunks)."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def load_message(path: Path) -> Message:
    """Read a Message written by :func:`save_message`."""
    with safe_open(str(path), framework="numpy") as handle:
        header = handle.metadata() or {}
    arrays = load_file(str(path))
    meta = json.loads(header.get("fedmosaic_meta", "{}"))
    return Message(dict(arrays), meta)
