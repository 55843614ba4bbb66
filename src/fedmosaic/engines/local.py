"""The in-process transport: the whole federation simulated in one process (the default).

Each planned client fits on its own data with its own state (kept in a state store: in memory, or
versioned on disk beside a run folder's checkpoints), optionally in ``workers`` forked processes;
its reply may be lost under ``engine.dropout``. Rounds, screening, evaluation cadence and
checkpoints are :class:`fedmosaic.Federation`'s (:mod:`fedmosaic.engines.protocol`); this module
only carries messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from fedmosaic.core.message import Message
from fedmosaic.core.seeding import Rng
from fedmosaic.engines.client_pool import ClientPool
from fedmosaic.engines.protocol import Exchanged
from fedmosaic.engines.screening import reply_lost

if TYPE_CHECKING:
    from fedmosaic.core.task import Task


def configure_threads(threads: int) -> None:
    """Apply ``engine.threads`` to torch (process-wide; 0 keeps torch's own default)."""
    if threads:
        torch.set_num_threads(threads)


class MemoryStateStore:
    """Client states in a dict: the store of a federation without a run folder.

    The same ``get``/``put``/``rollback`` as :class:`~fedmosaic.engines.state_store.ClientStateStore`;
    nothing is versioned, because without a folder there is no checkpoint to roll back to.
    """

    def __init__(self) -> None:
        self._states: dict[str, Message] = {}

    def get(self, client: str) -> Message:
        """The client's newest state (empty Message if it has none yet)."""
        return self._states.get(client, Message())

    def put(self, client: str, round: int, state: Message) -> None:
        """Keep the state the client ended round ``round`` with."""
        self._states[client] = state

    def rollback(self, committed_round: int) -> None:
        """Nothing to roll back in memory (a federation without a folder cannot resume)."""


class InProcessTransport:
    """Delivers a round's messages to client halves in this process (or ``workers`` forked ones)."""

    def __init__(self, client: Any, task: Task, states: Any, seed: int, dropout: float, workers: int) -> None:
        self.client, self.task, self.states = client, task, states
        self.seed, self.dropout = seed, dropout
        self.pool = ClientPool(client, task, seed, workers) if workers > 1 else None

    def fit(self, round: int, plan: dict[str, Message]) -> Exchanged:
        """Each planned client fits; its new state is stored, its reply may be lost (``dropout``)."""
        replies, dropped = {}, []
        for cid, reply, state in self._fit(round, plan):
            self.states.put(cid, round, state)
            # engine.dropout: the client got its message and trained, its reply never arrives (a server
            # that ships its proxy set once, fedmekt or gvf, then ships it again: it cannot tell a lost
            # reply from a lost client state, algorithms/proxy_delivery.py)
            if reply_lost(self.seed, round, cid, self.dropout):
                dropped.append(cid)
            else:
                replies[cid] = reply
        return replies, dropped

    def evaluate(self, round: int, plan: dict[str, Message]) -> Exchanged:
        """Each asked client evaluates its current state (in the pool, if any)."""
        if self.pool is not None:
            jobs = [(cid, msg, self.states.get(cid)) for cid, msg in plan.items()]
            return dict(zip(plan, self.pool.evaluate(jobs), strict=True)), []
        replies = {
            cid: self.client.evaluate(msg, self.states.get(cid), self.task.client(cid))
            for cid, msg in plan.items()
        }
        return replies, []

    def annotate(self, row: dict[str, Any]) -> None:
        """Nothing to add: every in-process delivery succeeds."""

    def close(self) -> None:
        """Stop the worker processes, if any."""
        if self.pool is not None:
            self.pool.close()

    def _fit(self, r: int, plan: dict[str, Message]) -> Iterator[tuple[str, Message, Message]]:
        """``(client, reply, new state)`` for each planned client, in plan order, from the pool if any."""
        if self.pool is None:
            for cid, message in plan.items():
                data = self.task.client(cid)
                yield cid, *self.client.fit(message, self.states.get(cid), data, Rng(self.seed, r, cid))
            return
        jobs = [(cid, r, message, self.states.get(cid)) for cid, message in plan.items()]
        for (cid, *_), (reply, state) in zip(jobs, self.pool.fit(jobs), strict=True):
            yield cid, reply, state
