"""Client states on disk, versioned by round, with a small in-memory cache.

A state written in round r is kept beside the client's states from before it back to the newest one
from before round r - 1: a run killed mid-round resumes from states that match its last checkpoint
(round r - 1), and when that checkpoint turns out damaged, from the one before it (round r - 2, see
:meth:`~fedmosaic.engines.run_folder.RunFolder.recover`). So at most three versions per client are on
disk. Only a bounded number of states stay in memory: 1,000 clients fit in one process.
"""

from __future__ import annotations

import re
import shutil
from collections import OrderedDict
from pathlib import Path

from fedmosaic.core.checkpoint import load_message, save_message
from fedmosaic.core.message import Message

_VERSION = re.compile(r"^r(\d+)\.safetensors$")


class ClientStateStore:
    """``get(client)`` / ``put(client, round, state)`` over ``root/<client>/rNNNNN.safetensors``."""

    def __init__(self, root: Path, cache_size: int = 64) -> None:
        self.root = Path(root)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Message] = OrderedDict()

    def _versions(self, client: str) -> list[tuple[int, Path]]:
        folder = self.root / client
        if not folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _VERSION.match(p.name))]
        return sorted(found)

    def get(self, client: str, at_most: int | None = None) -> Message:
        """The client's newest state (empty Message if it has none yet); with ``at_most``, its newest
        from round ``at_most`` or before (read from disk: the cache holds only the newest)."""
        if at_most is not None:
            versions = [(r, path) for r, path in self._versions(client) if r <= at_most]
            return load_message(versions[-1][1]) if versions else Message()
        if client in self._cache:
            self._cache.move_to_end(client)
            return self._cache[client]
        versions = self._versions(client)
        state = load_message(versions[-1][1]) if versions else Message()
        self._remember(client, state)
        return state

    def put(self, client: str, round: int, state: Message) -> None:
        """Store the state the client ended round ``round`` with; prune versions no longer needed."""
        if state.is_empty() and not self._versions(client):
            self._remember(client, state)
            return
        save_message(self.root / client / f"r{round:05d}.safetensors", state)
        # Kept: everything from round - 1 on, and the newest version before it, which is the client's
        # state at the end of round - 2: the round a damaged checkpoint of round - 1 falls back to.
        older = [(r, p) for r, p in self._versions(client) if r < round - 1]
        for _, path in older[:-1]:
            path.unlink(missing_ok=True)
        self._remember(client, state)

    def rollback(self, committed_round: int) -> None:
        """Forget every version written after ``committed_round`` (an interrupted round's work)."""
        self._cache.clear()
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            for r, path in self._versions(folder.name):
                if r > committed_round:
                    path.unlink()
            if folder.is_dir() and not any(folder.iterdir()):
                shutil.rmtree(folder)

    def _remember(self, client: str, state: Message) -> None:
        if self.cache_size == 0:
            return
        self._cache[client] = state
        self._cache.move_to_end(client)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
