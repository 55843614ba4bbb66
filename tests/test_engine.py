"""The local engine (a Federation over the in-process transport): determinism, resume, byte accounting,
modality masks, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedmosaic.config import RunConfig, validate
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.federation import Federation
from fedmosaic.engines.run_folder import read_jsonl
from fedmosaic.models.multimodal import MultimodalClassifier


def with_overrides(cfg: RunConfig, **changes: object) -> RunConfig:
    """A copy of ``cfg`` with dotted-key changes (``{"algorithm": {"name": "local"}}`` style)."""
    tree = cfg.to_toml_dict()
    for key, value in changes.items():
        node = tree
        *parents, leaf = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return validate(tree)


def run_engine(cfg: RunConfig, folder: Path, on_round=None, client_wrappers=()) -> dict:
    callbacks = [lambda res: on_round(res.round, res.row)] if on_round is not None else []
    fed = Federation.from_config(
        cfg, build_task(cfg), folder=folder, client_wrappers=client_wrappers, callbacks=callbacks
    )
    return fed.run()


@pytest.mark.parametrize("algorithm", ["fedavg", "local", "fedprox", "centralized"])
def test_same_seed_gives_identical_metrics(tiny_cfg: RunConfig, tmp_path: Path, algorithm: str) -> None:
    cfg = with_overrides(tiny_cfg, algorithm={"name": algorithm})
    run_engine(cfg, tmp_path / "a")
    run_engine(cfg, tmp_path / "b")
    a = (tmp_path / "a" / "metrics.jsonl").read_bytes()
    assert a == (tmp_path / "b" / "metrics.jsonl").read_bytes()
    rows = read_jsonl(tmp_path / "a" / "metrics.jsonl")
    assert [r["round"] for r in rows] == [1, 2]
    assert "overall" in rows[-1]["eval"]


def test_different_seed_changes_metrics(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    run_engine(tiny_cfg, tmp_path / "a")
    run_engine(with_overrides(tiny_cfg, seed=1), tmp_path / "b")
    assert (tmp_path / "a" / "metrics.jsonl").read_text() != (tmp_path / "b" / "metrics.jsonl").read_text()


class Interrupt(Exception):
    pass


class Spy:
    """A client wrapper that passes everything to the half it wraps (subclasses intercept)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def fit(self, message, state, data, rng):
        return self.inner.fit(message, state, data, rng)

    def evaluate(self, message, state, data):
        return self.inner.evaluate(message, state, data)


@pytest.mark.parametrize("algorithm", ["fedavg", "local"])
def test_resume_after_interruption_between_rounds(
    tiny_cfg: RunConfig, tmp_path: Path, algorithm: str
) -> None:
    cfg = with_overrides(tiny_cfg, rounds=4, algorithm={"name": algorithm}, clients__per_round=4)
    run_engine(cfg, tmp_path / "full")

    def stop_after_two(r: int, row: dict) -> None:
        if r == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_engine(cfg, tmp_path / "cut", stop_after_two)
    assert len(read_jsonl(tmp_path / "cut" / "metrics.jsonl")) == 2
    summary = run_engine(cfg, tmp_path / "cut")
    full = (tmp_path / "full" / "metrics.jsonl").read_text()
    assert (tmp_path / "cut" / "metrics.jsonl").read_text() == full
    assert summary["final"] == json.loads((tmp_path / "full" / "summary.json").read_text())["final"]


def test_resume_after_crash_mid_round_discards_partial_client_states(
    tiny_cfg: RunConfig, tmp_path: Path
) -> None:
    cfg = with_overrides(tiny_cfg, rounds=3, algorithm={"name": "local"}, engine__state_cache=0)
    run_engine(cfg, tmp_path / "full")

    calls = {"n": 0}

    class Crashing(Spy):
        def fit(self, message, state, data, rng):
            calls["n"] += 1
            if rng.round == 3 and calls["n"] > 2 * 10 + 4:  # a few clients of round 3 have stored new states
                raise Interrupt
            return self.inner.fit(message, state, data, rng)

    with pytest.raises(Interrupt):
        run_engine(cfg, tmp_path / "cut", client_wrappers=[Crashing])
    written = list((tmp_path / "cut" / "checkpoints" / "clients").glob("*/r00003.safetensors"))
    assert written, "the crash should come after some round-3 states were written"
    run_engine(cfg, tmp_path / "cut")
    assert (tmp_path / "cut" / "metrics.jsonl").read_text() == (
        tmp_path / "full" / "metrics.jsonl"
    ).read_text()


@pytest.mark.parametrize("algorithm", ["fedavg", "local"])
def test_bytes_equal_summed_message_arrays(tiny_cfg: RunConfig, tmp_path: Path, algorithm: str) -> None:
    cfg = with_overrides(tiny_cfg, algorithm={"name": algorithm}, clients__per_round=5)
    seen = {"up": 0, "down": 0}

    class Counting(Spy):
        def fit(self, message, state, data, rng):
            reply, new_state = self.inner.fit(message, state, data, rng)
            seen["down"] += sum(a.nbytes for a in message.arrays.values())
            seen["up"] += sum(a.nbytes for a in reply.arrays.values())
            return reply, new_state

        def evaluate(self, message, state, data):
            reply = self.inner.evaluate(message, state, data)
            seen["down"] += sum(a.nbytes for a in message.arrays.values())
            seen["up"] += sum(a.nbytes for a in reply.arrays.values())
            return reply

    summary = run_engine(cfg, tmp_path, client_wrappers=[Counting])
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert sum(r["bytes_up"] for r in rows) == seen["up"] == summary["bytes_up"]
    assert sum(r["bytes_down"] for r in rows) == seen["down"] == summary["bytes_down"]
    if algorithm == "fedavg":
        assert seen["up"] > 0 and seen["down"] > 0
    else:
        assert seen["up"] == seen["down"] == 0  # local shares nothing


def test_fedavg_sends_each_client_only_its_modalities(tiny_cfg: RunConfig) -> None:
    from fedmosaic.core.seeding import SERVER, Rng

    task = build_task(tiny_cfg)
    fed = Federation.from_config(tiny_cfg, task)
    plan = fed.server.configure(1, task.specs, Rng(tiny_cfg.seed, 1, SERVER))
    for spec in task.specs:
        names = plan[spec.id].arrays
        assert any(n.startswith("head.") for n in names)
        for modality in ("image", "text"):
            has = any(n.startswith(f"encoders.{modality}.") for n in names)
            assert has == (modality in spec.modalities), (spec.group, modality)


def test_client_sampling_differs_between_rounds(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    cfg = with_overrides(tiny_cfg, rounds=4, clients__per_round=3)
    run_engine(cfg, tmp_path)
    picked = [tuple(r["clients"]) for r in read_jsonl(tmp_path / "metrics.jsonl")]
    assert all(len(p) == 3 for p in picked)
    assert len(set(picked)) > 1


def test_training_batches_hold_only_the_clients_modalities(
    tiny_cfg: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    current: dict[str, frozenset[str]] = {}
    violations: list[tuple[frozenset[str], set[str]]] = []
    seen_groups: set[frozenset[str]] = set()
    real_embed = MultimodalClassifier.embed

    def spying_embed(self, inputs):
        if "held" in current:
            seen_groups.add(current["held"])
            if not set(inputs) <= current["held"]:
                violations.append((current["held"], set(inputs)))
        return real_embed(self, inputs)

    monkeypatch.setattr(MultimodalClassifier, "embed", spying_embed)

    class Tracking(Spy):
        def fit(self, message, state, data, rng):
            current["held"] = data.spec.modalities
            try:
                return self.inner.fit(message, state, data, rng)
            finally:
                current.pop("held")

    run_engine(tiny_cfg, tmp_path, client_wrappers=[Tracking])
    assert not violations
    assert seen_groups == {frozenset({"image"}), frozenset({"text"}), frozenset({"image", "text"})}


def test_outputs_exist_and_summary_is_consistent(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    summary = run_engine(tiny_cfg, tmp_path)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    assert summary["rounds"] == 2 and summary["clients"] == 10
    assert summary["groups"] == {"image": 2, "image+text": 6, "text": 2}
    for key in ("test/image", "test/text", "test/image+text", "group/image", "group/text", "overall"):
        assert set(summary["final"][key]) == {"accuracy", "macro_f1", "weighted_f1"}
        assert 0.0 <= summary["final"][key]["accuracy"] <= 1.0
    timings = read_jsonl(tmp_path / "timings.jsonl")
    assert len(timings) == 2 and all(t["seconds"] > 0 for t in timings)
    marker = json.loads((tmp_path / "checkpoints" / "checkpoint.json").read_text())
    assert marker["round"] == 2 and (tmp_path / "checkpoints" / marker["server_state"]).exists()


def test_global_model_groups_match_test_subsets(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    final = run_engine(tiny_cfg, tmp_path)["final"]
    assert final["group/image"] == final["test/image"]
    assert final["group/text"] == final["test/text"]
    expected = (
        2 * np.array([final["test/image"]["accuracy"], final["test/text"]["accuracy"]]).sum()
        + 6 * final["test/image+text"]["accuracy"]
    ) / 10
    assert final["overall"]["accuracy"] == pytest.approx(expected)
