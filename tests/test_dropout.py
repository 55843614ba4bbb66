"""engine.dropout: a planned client's reply is lost with a per-round probability; the run goes on,
the metrics row says who dropped, and the draws depend only on (seed, round, client)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmosaic.config import RunConfig, with_overrides
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.local import LocalEngine
from fedmosaic.engines.run_folder import RunFolder, read_jsonl


class Recording:
    """A server half that records which clients' replies reached ``aggregate``."""

    def __init__(self, inner) -> None:
        self.inner, self.seen = inner, {}

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def aggregate(self, round, replies, rng):
        self.seen[round] = sorted(replies)
        return self.inner.aggregate(round, replies, rng)


@pytest.fixture
def cfg(tiny_cfg: RunConfig) -> RunConfig:
    return with_overrides(
        tiny_cfg, ["engine.dropout=0.4", "rounds=4", "clients.per_round=5", "output.plots=false"]
    )


def test_dropped_replies_never_reach_the_server_and_the_run_continues(cfg: RunConfig, tmp_path: Path) -> None:
    engine = LocalEngine(cfg, build_task(cfg), RunFolder(tmp_path))
    engine.server = Recording(engine.server)
    summary = engine.run()
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["round"] for r in rows] == [1, 2, 3, 4] and summary["rounds"] == 4
    assert sum(len(r.get("dropped", [])) for r in rows) > 0, "seed 0 at 40% should drop someone"
    for row in rows:
        dropped = row.get("dropped", [])
        assert set(dropped) <= set(row["clients"])
        if len(dropped) < len(row["clients"]):
            assert engine.server.seen[row["round"]] == sorted(set(row["clients"]) - set(dropped))
            assert "train_loss" in row["train"]
        else:  # everyone dropped: nothing to aggregate, the round is skipped
            assert row["round"] not in engine.server.seen and "skipped" in row


def test_same_seed_same_drops_and_a_resumed_run_is_identical(cfg: RunConfig, tmp_path: Path) -> None:
    LocalEngine(cfg, build_task(cfg), RunFolder(tmp_path / "a")).run()
    LocalEngine(cfg, build_task(cfg), RunFolder(tmp_path / "b")).run()
    full = (tmp_path / "a" / "metrics.jsonl").read_text()
    assert (tmp_path / "b" / "metrics.jsonl").read_text() == full

    def stop_after_two(r: int, row: dict) -> None:
        if r == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        LocalEngine(cfg, build_task(cfg), RunFolder(tmp_path / "cut")).run(stop_after_two)
    LocalEngine(cfg, build_task(cfg), RunFolder(tmp_path / "cut")).run()
    assert (tmp_path / "cut" / "metrics.jsonl").read_text() == full

    other = with_overrides(cfg, ["seed=1"])
    LocalEngine(other, build_task(other), RunFolder(tmp_path / "c")).run()
    drops = [r.get("dropped", []) for r in read_jsonl(tmp_path / "a" / "metrics.jsonl")]
    assert drops != [r.get("dropped", []) for r in read_jsonl(tmp_path / "c" / "metrics.jsonl")]


def test_no_dropout_drops_nobody(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    cfg = with_overrides(tiny_cfg, ["rounds=1", "output.plots=false"])
    LocalEngine(cfg, build_task(cfg), RunFolder(tmp_path)).run()
    assert "dropped" not in read_jsonl(tmp_path / "metrics.jsonl")[0]
