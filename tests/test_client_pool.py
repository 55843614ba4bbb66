"""engine.workers: clients trained in forked worker processes give exactly the sequential results."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TINY_OVERRIDES
from fedmosaic.config import ConfigError, load_config
from fedmosaic.engines.client_pool import ClientPool
from fedmosaic.runner import start


def _metrics(folder: Path) -> str:
    return (folder / "metrics.jsonl").read_text()


@pytest.mark.parametrize("algorithm", ["fedavg", "local"])
def test_two_workers_reproduce_one_worker_exactly(tmp_path: Path, algorithm: str, monkeypatch) -> None:
    pool_rounds = []
    fit = ClientPool.fit

    def counting_fit(self: ClientPool, jobs: list) -> list:
        pool_rounds.append(len(jobs))
        return fit(self, jobs)

    monkeypatch.setattr(ClientPool, "fit", counting_fit)
    common = [*TINY_OVERRIDES, f"algorithm.name={algorithm}", "clients.per_round=4"]
    folders = {}
    for workers in (1, 2):
        cfg = load_config(None, [*common, f"engine.workers={workers}"])
        folders[workers] = start(cfg, tmp_path / str(workers)).folders[algorithm]
    assert pool_rounds == [4, 4]  # only the 2-worker run used the pool: 2 rounds of 4 clients
    assert _metrics(folders[1]) == _metrics(folders[2])
    assert (folders[2] / "summary.json").is_file()


def test_bad_worker_counts_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"engine\.workers"):
        load_config(None, ["engine.workers=0"])
    with pytest.raises(ValueError, match=r"engine\.workers"):
        ClientPool(object(), object(), 0, 1)
