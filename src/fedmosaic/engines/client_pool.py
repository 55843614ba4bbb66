"""A round's client training and evaluation spread over worker processes (``engine.workers``).

Clients of one round are independent given the server's message, and every random draw a client
makes comes from ``Rng(seed, round, client)``, so training them in parallel gives exactly the
replies of training them one after another; evaluation draws nothing at all. Evaluation goes to the
pool too because personalised algorithms (``local``, gvf) evaluate one model per client on the
whole test set, which costs as much as their training. Processes, not threads: a client's step is
many small torch ops in Python, where one thread per process is fastest (see ``engine.threads``)
and the GIL would serialise threads.

Workers are forked once per engine and inherit the client half and the task (copy-on-write), so
only messages and client states cross the process boundary.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Iterable
from typing import Any

import torch

from fedmosaic.core.message import Message
from fedmosaic.core.seeding import Rng

# What the forked workers inherit: set by the parent just before it forks, read only in the workers.
_INHERITED: dict[str, Any] = {}

Job = tuple[str, int, Message, Message]  # client id, round, the server's message, the client's state
EvalJob = tuple[str, Message, Message]  # client id, the server's evaluation message, the client's state


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def asked_workers(workers: int | str) -> int:
    """The workers a device check must allow: ``"auto"`` never asks for more than the device takes."""
    return 1 if workers == "auto" else int(workers)


def resolve_workers(workers: int | str, device: str, clients: int, wrapped: bool = False) -> int:
    """The number of processes ``engine.workers`` means here.

    ``"auto"``: one per usable core, but no more than the clients there are to train, and 1 where a
    pool cannot work (a GPU, or no ``fork`` start method, e.g. Windows) or where the caller wrapped
    the client half (``wrapped``: a wrapper may record what it sees in this process, and a forked
    worker's records never come back), so the default never changes what one process would do. A
    number is taken as given (its checks are the pool's).
    """
    if workers != "auto":
        return int(workers)
    if wrapped or device != "cpu" or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(usable_cores(), clients))


def _start_worker() -> None:
    torch.set_num_threads(1)
    # What the worker inherited (modules, the task, the client half: hundreds of thousands of objects)
    # lives as long as it does. Frozen, the cyclic collector's full passes skip it: they cost the
    # worker time, and each pass wrote to every inherited page, copying it from its parent's.
    # Freezing moves a list head, so it touches no page itself.
    gc.freeze()


def _fit(job: Job) -> tuple[Message, Message]:
    cid, round, message, state = job
    client, task, seed = _INHERITED["client"], _INHERITED["task"], _INHERITED["seed"]
    return client.fit(message, state, task.client(cid), Rng(seed, round, cid))


def _evaluate(job: EvalJob) -> Message:
    cid, message, state = job
    return _INHERITED["client"].evaluate(message, state, _INHERITED["task"].client(cid))


class ClientPool:
    """Fits (and evaluates) a round's clients in ``workers`` forked processes, replies in job order."""

    def __init__(self, client: object, task: object, seed: int, workers: int) -> None:
        if workers < 2:
            raise ValueError(f"engine.workers: a pool needs at least 2 workers, got {workers}")
        if "fork" not in multiprocessing.get_all_start_methods():
            raise RuntimeError("engine.workers > 1 needs the 'fork' start method (Linux or macOS)")
        self.client, self.task, self.seed, self.workers = client, task, seed, workers
        self._pool: Any = None

    def fit(self, jobs: Iterable[Job]) -> list[tuple[Message, Message]]:
        """``client.fit`` for every job, in parallel; results in the order of ``jobs``."""
        # Largest first (by training (sample, modality) pairs), so that no big client starts last
        # while the other workers idle; workers take the next job as they finish one.
        return self._map(_fit, list(jobs), lambda cid: int(self.task.client(cid).train.mask.sum()))

    def evaluate(self, jobs: Iterable[EvalJob]) -> list[Message]:
        """``client.evaluate`` for every job, in parallel; replies in the order of ``jobs``."""
        # Every client tests on the same test set; the modalities it holds set the cost.
        return self._map(_evaluate, list(jobs), lambda cid: len(self.task.client(cid).spec.modalities))

    def _map(self, work: Any, jobs: list[Any], size: Any) -> list[Any]:
        """``work`` over ``jobs`` in the pool, biggest ``size(client id)`` first; results in job order."""
        if self._pool is None:
            _INHERITED.update(client=self.client, task=self.task, seed=self.seed)
            self._pool = multiprocessing.get_context("fork").Pool(self.workers, initializer=_start_worker)
        order = sorted(range(len(jobs)), key=lambda i: -size(jobs[i][0]))
        results = self._pool.map(work, [jobs[i] for i in order], chunksize=1)
        by_job = dict(zip(order, results, strict=True))
        return [by_job[i] for i in range(len(jobs))]

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None
