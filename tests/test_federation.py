"""fedmosaic.Federation, the public Python API: built from objects or a config, stepped, wrapped,
in memory or in a run folder (resumed bit-exactly)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fedmosaic
from fedmosaic import Federation, RoundResult
from fedmosaic.config import ConfigError, RunConfig, with_overrides
from fedmosaic.core.task import Task
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.run_folder import read_jsonl
from fedmosaic.privacy.dp import PrivacyConfig, PrivateClient


@pytest.fixture(scope="module")
def cfg() -> RunConfig:
    from conftest import TINY_OVERRIDES
    from fedmosaic.config import load_config

    return load_config(None, [*TINY_OVERRIDES, "rounds=3", "clients.per_round=4", "output.plots=false"])


@pytest.fixture(scope="module")
def task(cfg: RunConfig) -> Task:
    return build_task(cfg)


def from_objects(cfg: RunConfig, task: Task, algorithm: str = "fedavg", **kwargs: object) -> Federation:
    """The federation ``cfg`` describes, spelled out as objects instead of a config."""
    settings: dict[str, object] = {
        "training": cfg.training,
        "model": cfg.model,
        "robustness": cfg.robustness,
        "seed": cfg.seed,
        "rounds": cfg.rounds,
        "clients_per_round": cfg.clients.per_round,
    }
    return Federation(task, algorithm, **{**settings, **kwargs})  # type: ignore[arg-type]


def lines(rows: list[dict]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def test_package_exports_the_api() -> None:
    assert fedmosaic.Federation is Federation and fedmosaic.RoundResult is RoundResult
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        fedmosaic.Nope  # noqa: B018


def test_built_from_objects_equals_from_config_and_the_run_folder(
    cfg: RunConfig, task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    results = list(from_objects(cfg, task).rounds())
    assert [r.round for r in results] == [1, 2, 3]
    assert all(isinstance(r, RoundResult) and r.seconds > 0 for r in results)
    assert results[-1].eval["overall"]["accuracy"] == results[-1].row["eval"]["overall"]["accuracy"]
    assert list(tmp_path.iterdir()) == [], "an in-memory federation writes nothing"

    configured = Federation.from_config(cfg, task)
    configured.run()
    assert lines(configured.rows()) == lines([r.row for r in results])

    Federation.from_config(cfg, task, folder=tmp_path / "run").run()
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == lines([r.row for r in results])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["final"] == results[-1].eval and summary["rounds"] == 3


def test_round_result_carries_the_row(cfg: RunConfig, task: Task) -> None:
    fed = from_objects(cfg, task)
    result = fed.step()
    assert result.round == 1 and fed.round == 1 and fed.history == [result]
    assert result.clients == result.row["clients"] and len(result.clients) == 4
    assert result.bytes_up == result.row["bytes_up"] > 0 and result.bytes_down == result.row["bytes_down"] > 0
    assert result.train == result.row["train"] and "train_loss" in result.train
    assert result.rejected == {} and result.dropped == [] and result.skipped is None


@pytest.mark.parametrize("algorithm", ["fedavg", "local"])
def test_a_new_federation_over_a_folder_resumes_bit_exactly(
    cfg: RunConfig, task: Task, tmp_path: Path, algorithm: str
) -> None:
    run_cfg = with_overrides(cfg, [f"algorithm.name={algorithm}", "engine.state_cache=0"])
    Federation.from_config(run_cfg, task, folder=tmp_path / "full").run()

    first = Federation.from_config(run_cfg, task, folder=tmp_path / "cut")
    next(first.rounds(1))
    first.close()
    again = Federation.from_config(run_cfg, task, folder=tmp_path / "cut")
    assert again.round == 1 and not again.finished
    summary = again.run()
    full = (tmp_path / "full" / "metrics.jsonl").read_text()
    assert (tmp_path / "cut" / "metrics.jsonl").read_text() == full
    assert summary["final"] == read_jsonl(tmp_path / "full" / "metrics.jsonl")[-1]["eval"]


def test_stepping_past_the_last_round_is_an_error(cfg: RunConfig, task: Task) -> None:
    fed = from_objects(cfg, task, rounds=1)
    fed.run()
    assert fed.finished
    with pytest.raises(ValueError, match=r"^rounds: all 1 rounds have run"):
        fed.step()
    with pytest.raises(ValueError, match=r"^n: expected 0 to the 0 remaining rounds, got 2"):
        list(fed.rounds(2))


class Tagging:
    """A client wrapper that logs its tag on every fit, then calls the half it wraps."""

    def __init__(self, inner: object, tag: str, log: list[str]) -> None:
        self.inner, self.tag, self.log = inner, tag, log

    def fit(self, message, state, data, rng):  # type: ignore[no-untyped-def]
        self.log.append(self.tag)
        return self.inner.fit(message, state, data, rng)  # type: ignore[attr-defined]

    def evaluate(self, message, state, data):  # type: ignore[no-untyped-def]
        return self.inner.evaluate(message, state, data)  # type: ignore[attr-defined]


class SeenByServer:
    """A server wrapper recording which replies reached ``aggregate``."""

    def __init__(self, inner: object) -> None:
        self.inner, self.seen = inner, {}

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def aggregate(self, round, replies, rng):  # type: ignore[no-untyped-def]
        self.seen[round] = sorted(replies)
        return self.inner.aggregate(round, replies, rng)  # type: ignore[attr-defined]


def test_wrappers_apply_in_order_with_dp_innermost(cfg: RunConfig, task: Task) -> None:
    log: list[str] = []
    fed = from_objects(
        cfg,
        task,
        rounds=1,
        privacy=PrivacyConfig(enabled=True),
        client_wrappers=[lambda c: Tagging(c, "a", log), lambda c: Tagging(c, "b", log)],
        server_wrappers=[SeenByServer],
    )
    assert isinstance(fed.client, Tagging) and fed.client.tag == "b"
    assert isinstance(fed.client.inner, Tagging) and fed.client.inner.tag == "a"
    assert isinstance(fed.client.inner.inner, PrivateClient)
    result = fed.step()
    assert log == ["b", "a"] * 4  # outermost first, for each of the round's 4 clients
    assert isinstance(fed.server, SeenByServer) and fed.server.seen == {1: result.clients}


def test_callbacks_get_every_round(cfg: RunConfig, task: Task) -> None:
    seen: list[RoundResult] = []
    fed = from_objects(cfg, task, callbacks=[seen.append])
    fed.run()
    assert seen == fed.history and [r.round for r in seen] == [1, 2, 3]


def test_client_states_are_readable(cfg: RunConfig, task: Task) -> None:
    fed = from_objects(cfg, task, "local", rounds=1)
    result = fed.step()
    trained = result.clients[0]
    assert not fed.client_state(trained).is_empty()
    with pytest.raises(KeyError, match="client_id: no client 'nobody'"):
        fed.client_state("nobody")


def test_bad_algorithm_config_is_one_line_naming_the_field(cfg: RunConfig, task: Task) -> None:
    with pytest.raises(ConfigError) as err:
        from_objects(cfg, task, "fedprox", config={"mu": -1})
    assert str(err.value).startswith("algorithm.mu: ") and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^algorithm.bogus: unknown key"):
        from_objects(cfg, task, "fedavg", config={"bogus": 1})
    with pytest.raises(ValueError, match=r"^rounds: expected at least 1, got 0"):
        from_objects(cfg, task, rounds=0)
