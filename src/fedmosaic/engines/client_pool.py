"""A round's client training spread over worker processes (``engine.workers``).

Clients of one round are independent given the server's message, and every random draw a client
makes comes from ``Rng(seed, round, client)``, so training them in parallel gives exactly the
replies of training them one after another. Processes, not threads: a client's step is many small
torch ops in Python, where one thread per process is fastest (see ``engine.threads``) and the GIL
would serialise threads.

Workers are forked once per engine and inherit the client half and the task (copy-on-write), so
only messages and client states cross the process boundary.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable
from typing import Any

import torch

from fedmosaic.core.message import Message
from fedmosaic.core.seeding import Rng

# What the forked workers inherit: set by the parent just before it forks, read only in the workers.
_INHERITED: dict[str, Any] = {}

Job = tuple[str, int, Message, Message]  # client id, round, the server's message, the client's state


def _start_worker() -> None:
    torch.set_num_threads(1)


def _fit(job: Job) -> tuple[Message, Message]:
    cid, round, message, state = job
    client, task, seed = _INHERITED["client"], _INHERITED["task"], _INHERITED["seed"]
    return client.fit(message, state, task.client(cid), Rng(seed, round, cid))


class ClientPool:
    """Fits a round's clients in ``workers`` forked processes, returning replies in job order."""

    def __init__(self, client: object, task: object, seed: int, workers: int) -> None:
        if workers < 2:
            raise ValueError(f"engine.workers: a pool needs at least 2 workers, got {workers}")
        if "fork" not in multiprocessing.get_all_start_methods():
            raise RuntimeError("engine.workers > 1 needs the 'fork' start method (Linux or macOS)")
        self.client, self.task, self.seed, self.workers = client, task, seed, workers
        self._pool: Any = None

    def fit(self, jobs: Iterable[Job]) -> list[tuple[Message, Message]]:
        """``client.fit`` for every job, in parallel; results in the order of ``jobs``."""
        if self._pool is None:
            _INHERITED.update(client=self.client, task=self.task, seed=self.seed)
            self._pool = multiprocessing.get_context("fork").Pool(self.workers, initializer=_start_worker)
        jobs = list(jobs)
        # Largest first (by training (sample, modality) pairs), so that no big client starts last
        # while the other workers idle; workers take the next job as they finish one.
        order = sorted(range(len(jobs)), key=lambda i: -int(self.task.client(jobs[i][0]).train.mask.sum()))
        results = self._pool.map(_fit, [jobs[i] for i in order], chunksize=1)
        by_job = dict(zip(order, results, strict=True))
        return [by_job[i] for i in range(len(jobs))]

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None
