"""An exclusive lock on a run folder or pipeline root, so two writers never interleave one result.

Two ``fedmosaic run --out X`` used to both exit 0 and interleave into one ``metrics.jsonl``. Every
writer of a run folder (run, resume, report into it, the pipeline steps, the Flower ServerApp, a
:class:`fedmosaic.Federation` with a folder) takes this lock first; a second one is refused with one
line naming the holder (process id, command, host, since when).

The lock is ``flock`` on ``<folder>/.fedmosaic.lock``: the kernel releases it when its process dies
(``kill -9`` included), so a stale lock of a dead process is recovered simply by locking again; the
file's text only names the holder. The file is removed on release (re-checked by inode after
locking, so a writer that locked a file being removed tries again), and a folder the lock itself
created is removed again if nothing else was written into it: a refused or failed run leaves no
half-made folder. Within one process the lock is re-entrant (a run holds it and the Federation it
builds takes it again).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from fedmosaic.core.errors import ConfigError, FolderInUse

LOCK_NAME = ".fedmosaic.lock"

# Locks this process holds: resolved folder -> [file descriptor, depth, created the folder?].
_HELD: dict[Path, list[int]] = {}


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"process {info['pid']} ({info['command']}, on {info['host']} since {info['since']})"
    except (OSError, ValueError, KeyError):
        return "another process"


class FolderLock:
    """``with FolderLock(folder, key="--out"):`` holds ``folder`` exclusively (creating it if needed).

    ``key`` names the option or argument the folder came from, so the refusal reads as a config
    error: ``--out: runs/x is in use by process 1234 (fedmosaic run ...)``.
    """

    def __init__(self, folder: Path | str, key: str = "folder") -> None:
        self.folder = Path(folder)
        self.key = key
        self._resolved: Path | None = None

    def acquire(self) -> FolderLock:
        """Take the lock; :class:`FolderInUse` if a live process holds it."""
        created = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{self.key}: cannot create {self.folder}: {exc.strerror}") from None
        resolved = self.folder.resolve()
        if resolved in _HELD:
            _HELD[resolved][1] += 1
            self._resolved = resolved
            return self
        path = resolved / LOCK_NAME
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise ConfigError(f"{self.key}: cannot write into {self.folder}: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise FolderInUse(
                    f"{self.key}: {self.folder} is in use by {_holder(path)}; "
                    "wait for it to finish or pick another folder"
                ) from None
            # The previous holder may have unlinked the file between our open and our flock: then we
            # hold a lock on a file nobody else will ever open. Lock the file that is there instead.
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        info = {
            "pid": os.getpid(),
            "command": " ".join(["fedmosaic", *sys.argv[1:2]]) if sys.argv else "python",
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        _HELD[resolved] = [fd, 1, int(created)]
        self._resolved = resolved
        return self

    def release(self) -> None:
        """Give the lock up (the outermost release in this process unlocks); idempotent."""
        resolved, self._resolved = self._resolved, None
        if resolved is None or resolved not in _HELD:
            return
        entry = _HELD[resolved]
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _HELD[resolved]
        fd, _, created = entry
        with contextlib.suppress(FileNotFoundError):
            (resolved / LOCK_NAME).unlink()  # while still locked: nobody can be mid-acquire on it
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):  # only an empty folder: the run wrote nothing
                resolved.rmdir()

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def holds(folder: Path | str) -> bool:
    """Whether this process holds the lock on ``folder``."""
    return Path(folder).resolve() in _HELD
