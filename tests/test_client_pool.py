"""engine.workers: clients trained in forked worker processes give exactly the sequential results."""

from __future__ import annotations

import gc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import TINY_OVERRIDES
from fedmosaic.config import ConfigError, load_config
from fedmosaic.core.message import Message
from fedmosaic.engines import client_pool
from fedmosaic.engines.client_pool import ClientPool, resolve_workers
from fedmosaic.runner import start


def _metrics(folder: Path) -> str:
    return (folder / "metrics.jsonl").read_text()


@pytest.mark.parametrize("algorithm", ["fedavg", "local"])
def test_two_workers_reproduce_one_worker_exactly(tmp_path: Path, algorithm: str, monkeypatch) -> None:
    pool_rounds, pool_evals = [], []
    fit, evaluate = ClientPool.fit, ClientPool.evaluate

    def counting_fit(self: ClientPool, jobs: list) -> list:
        pool_rounds.append(len(jobs))
        return fit(self, jobs)

    def counting_evaluate(self: ClientPool, jobs: list) -> list:
        pool_evals.append(len(jobs))
        return evaluate(self, jobs)

    monkeypatch.setattr(ClientPool, "fit", counting_fit)
    monkeypatch.setattr(ClientPool, "evaluate", counting_evaluate)
    common = [*TINY_OVERRIDES, f"algorithm.name={algorithm}", "clients.per_round=4"]
    folders = {}
    for workers in (1, 2):
        cfg = load_config(None, [*common, f"engine.workers={workers}"])
        folders[workers] = start(cfg, tmp_path / str(workers)).folders[algorithm]
    assert pool_rounds == [4, 4]  # only the 2-worker run used the pool: 2 rounds of 4 clients
    # local's clients evaluate their own models, every client every round, in the pool too;
    # fedavg's global model is evaluated on the server
    assert pool_evals == ([10, 10] if algorithm == "local" else [])
    assert _metrics(folders[1]) == _metrics(folders[2])
    assert (folders[2] / "summary.json").is_file()


def test_auto_is_one_worker_per_core_where_a_pool_can_work(monkeypatch) -> None:
    monkeypatch.setattr(client_pool, "usable_cores", lambda: 2)
    assert resolve_workers("auto", "cpu", 10) == 2
    assert resolve_workers("auto", "cpu", 1) == 1  # never more workers than clients
    assert resolve_workers("auto", "cuda", 10) == 1  # a GPU cannot be used from forked processes
    assert resolve_workers("auto", "cpu", 10, wrapped=True) == 1  # a wrapper's records stay here
    assert resolve_workers(3, "cpu", 10) == 3  # a number is taken as given
    monkeypatch.setattr(client_pool.multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    assert resolve_workers("auto", "cpu", 10) == 1  # no fork (Windows): one process, no error
    assert load_config(None, []).engine.workers == "auto"  # the embedded default uses the cores


def test_bad_worker_counts_are_refused() -> None:
    for bad in ("0", "-1", "1.5", "true", '"many"'):
        with pytest.raises(ConfigError, match=r"^engine\.workers: expected a whole number >= 1 or 'auto'"):
            load_config(None, [f"engine.workers={bad}"])
    with pytest.raises(ValueError, match=r"engine\.workers"):
        ClientPool(object(), object(), 0, 1)


class _FrozenCount:
    """A client half that reports how many objects its process's collector has frozen."""

    def fit(self, message: Message, state: Message, data: object, rng: object) -> tuple[Message, Message]:
        return Message(meta={"frozen": gc.get_freeze_count()}), Message()


def test_workers_freeze_what_they_inherit() -> None:
    # each worker puts what it inherited out of the collector's reach; the parent freezes nothing
    before = gc.get_freeze_count()
    task = SimpleNamespace(client=lambda cid: SimpleNamespace(train=SimpleNamespace(mask=np.ones(3))))
    pool = ClientPool(_FrozenCount(), task, seed=0, workers=2)
    try:
        replies = pool.fit([(cid, 1, Message(), Message()) for cid in ("a", "b", "c")])
    finally:
        pool.close()
    assert gc.get_freeze_count() == before
    assert all(reply.meta["frozen"] > before + 1000 for reply, _ in replies)
