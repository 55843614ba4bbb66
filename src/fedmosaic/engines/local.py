"""The local engine: the whole federation simulated in one process (the default engine).

Per round: the server plans, each planned client fits on its own data with its own state, the
server aggregates, and (every ``eval_every`` rounds and at the end) evaluates. After each round the
engine commits a checkpoint, so ``--resume`` continues from the last finished round and, because
every random draw is derived from (seed, round, client, purpose), ends with the same metrics as an
uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from fedmosaic.algorithms.registry import get_algorithm
from fedmosaic.core.algorithm import ServerData, Settings
from fedmosaic.core.message import Message
from fedmosaic.core.seeding import Rng
from fedmosaic.core.task import Task
from fedmosaic.engines.client_pool import ClientPool
from fedmosaic.engines.round_loop import Exchanged, RoundLoop
from fedmosaic.engines.run_folder import RunFolder
from fedmosaic.engines.screening import reply_lost
from fedmosaic.engines.state_store import ClientStateStore
from fedmosaic.privacy import private_client

if TYPE_CHECKING:
    from fedmosaic.config import RunConfig


def settings_for(cfg: RunConfig, task: Task, n_clients: int | None = None) -> Settings:
    """The settings both halves of the configured algorithm are built with.

    ``n_clients`` (default: the task's clients) is the federation's size when the task object does
    not hold the clients itself (the Flower coordinator's); it is the default clients per round.
    """
    return Settings(
        info=task.info,
        algorithm=cfg.algorithm,
        training=cfg.training,
        model=cfg.model,
        seed=cfg.seed,
        rounds=cfg.rounds,
        clients_per_round=cfg.clients.per_round or (len(task.clients) if n_clients is None else n_clients),
        robustness=cfg.robustness,
    )


def configure_threads(cfg: RunConfig) -> None:
    """Apply ``engine.threads`` to torch (process-wide; 0 keeps torch's own default)."""
    if cfg.engine.threads:
        torch.set_num_threads(cfg.engine.threads)


class LocalEngine(RoundLoop):
    """Runs one configured algorithm on one task, writing into ``folder``: every client in this process
    (or in ``engine.workers`` forked workers)."""

    def __init__(self, cfg: RunConfig, task: Task, folder: RunFolder) -> None:
        configure_threads(cfg)
        algorithm = get_algorithm(cfg.algorithm.name)
        settings = settings_for(cfg, task)
        pooled = task.pooled_train() if algorithm.needs_pooled_data else None
        server = algorithm.Server(settings, ServerData(task.proxy, task.labelled, task.test, pooled))
        states = ClientStateStore(folder.client_states, cfg.engine.state_cache)
        super().__init__(cfg, task, folder, server, states, task.specs)
        self.client = private_client(algorithm.Client(settings), cfg.privacy)
        workers = cfg.engine.workers
        self.pool = ClientPool(self.client, task, cfg.seed, workers) if workers > 1 else None

    def _train(self, r: int, plan: dict[str, Message]) -> Exchanged:
        cfg = self.cfg
        replies, dropped = {}, []
        for cid, reply, state in self._fit(r, plan):
            self.states.put(cid, r, state)
            # engine.dropout: the client got its message and trained, its reply never arrives (a server
            # that ships its proxy set once, fedmekt or gvf, then ships it again: it cannot tell a lost
            # reply from a lost client state, algorithms/proxy_delivery.py)
            if reply_lost(cfg.seed, r, cid, cfg.engine.dropout):
                dropped.append(cid)
            else:
                replies[cid] = reply
        return replies, dropped

    def _evaluate(self, r: int, plan: dict[str, Message]) -> Exchanged:
        replies = {
            cid: self.client.evaluate(msg, self.states.get(cid), self.task.client(cid))
            for cid, msg in plan.items()
        }
        return replies, []

    def _close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def _fit(self, r: int, plan: dict[str, Message]) -> Iterator[tuple[str, Message, Message]]:
        """``(client, reply, new state)`` for each planned client, in plan order, from the pool if any."""
        if self.pool is None:
            for cid, message in plan.items():
                data = self.task.client(cid)
                yield cid, *self.client.fit(message, self.states.get(cid), data, Rng(self.cfg.seed, r, cid))
            return
        jobs = [(cid, r, message, self.states.get(cid)) for cid, message in plan.items()]
        for (cid, *_), (reply, state) in zip(jobs, self.pool.fit(jobs), strict=True):
            yield cid, reply, state
