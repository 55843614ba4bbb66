"""engine.dropout: a planned client's reply is lost with a per-round probability; the run goes on,
the metrics row says who dropped, and the draws depend only on (seed, round, client)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmosaic.config import RunConfig, with_overrides
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.federation import Federation
from fedmosaic.engines.run_folder import read_jsonl


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
    fed = Federation.from_config(cfg, build_task(cfg), folder=tmp_path, server_wrappers=[Recording])
    summary = fed.run()
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["round"] for r in rows] == [1, 2, 3, 4] and summary["rounds"] == 4
    assert sum(len(r.get("dropped", [])) for r in rows) > 0, "seed 0 at 40% should drop someone"
    for row in rows:
        dropped = row.get("dropped", [])
        assert set(dropped) <= set(row["clients"])
        if len(dropped) < len(row["clients"]):
            assert fed.server.seen[row["round"]] == sorted(set(row["clients"]) - set(dropped))
            assert "train_loss" in row["train"]
        else:  # everyone dropped: nothing to aggregate, the round is skipped
            assert row["round"] not in fed.server.seen and "skipped" in row


def run(cfg: RunConfig, folder: Path, callbacks=()) -> dict:
    return Federation.from_config(cfg, build_task(cfg), folder=folder, callbacks=callbacks).run()


def test_same_seed_same_drops_and_a_resumed_run_is_identical(cfg: RunConfig, tmp_path: Path) -> None:
    run(cfg, tmp_path / "a")
    run(cfg, tmp_path / "b")
    full = (tmp_path / "a" / "metrics.jsonl").read_text()
    assert (tmp_path / "b" / "metrics.jsonl").read_text() == full

    def stop_after_two(result) -> None:
        if result.round == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "cut", [stop_after_two])
    run(cfg, tmp_path / "cut")
    assert (tmp_path / "cut" / "metrics.jsonl").read_text() == full

    other = with_overrides(cfg, ["seed=1"])
    run(other, tmp_path / "c")
    drops = [r.get("dropped", []) for r in read_jsonl(tmp_path / "a" / "metrics.jsonl")]
    assert drops != [r.get("dropped", []) for r in read_jsonl(tmp_path / "c" / "metrics.jsonl")]


def test_no_dropout_drops_nobody(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    cfg = with_overrides(tiny_cfg, ["rounds=1", "output.plots=false"])
    run(cfg, tmp_path)
    assert "dropped" not in read_jsonl(tmp_path / "metrics.jsonl")[0]
