"""Client-level DP on uploads: clipping bound, noise scale, accounting, reproducibility, config errors.

Runs use conftest's tiny synthetic task (2 rounds, 10 clients). Each engine's hook is exercised: the
local engine, the file pipeline (same numbers as the local engine) and Flower's ClientApp
(``handle_train`` called in-process on a node folder, reply bit-identical to the local engine's).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from conftest import TINY_OVERRIDES
from fedmosaic.config import ConfigError, RunConfig, load_config
from fedmosaic.core.message import Message
from fedmosaic.core.seeding import SERVER, Rng
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.federation import Federation
from fedmosaic.engines.run_folder import read_jsonl
from fedmosaic.privacy import dp
from fedmosaic.privacy.accounting import federation_epsilon, local_epsilon

DP_ON = ["privacy.enabled=true", "privacy.clip=0.05", "privacy.noise_multiplier=0.5", "privacy.delta=1e-4"]


def tiny(*extra: str) -> RunConfig:
    return load_config(None, [*TINY_OVERRIDES, "output.plots=false", *extra])


def run(cfg: RunConfig, folder: Path) -> tuple[list[dict], dict]:
    """Run on the local engine; (metrics rows, summary)."""
    summary = Federation.from_config(cfg, build_task(cfg), folder=folder).run()
    return read_jsonl(folder / "metrics.jsonl"), summary


def joint_norm(arrays: dict[str, np.ndarray]) -> float:
    return math.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2)) for a in arrays.values()))


# ------------------------------------------------------------------------------------ the mechanism


def test_clip_upload_clips_updates_and_values_jointly_and_leaves_integers() -> None:
    rng = np.random.default_rng(0)
    sent = Message({"w": rng.normal(size=(20, 5)).astype(np.float32)})
    reply = Message(
        {
            "w": sent.arrays["w"] + rng.normal(size=(20, 5)).astype(np.float32),  # an update
            "emb": rng.normal(size=(8, 3)).astype(np.float32),  # a value: no counterpart
            "idx": np.arange(8, dtype=np.int64),  # not private: passed through
        },
        {"n_train": 7},
    )
    clipped, base = dp.clip_upload(reply, sent, clip=0.5)
    assert set(clipped) == {"emb", "w"} and base == {"emb": 0.0, "w": 1.0}
    assert joint_norm(clipped) == pytest.approx(0.5, rel=1e-12)
    raw = {"w": reply.arrays["w"] - sent.arrays["w"], "emb": reply.arrays["emb"]}
    scale = 0.5 / joint_norm(raw)
    np.testing.assert_allclose(clipped["w"], raw["w"] * scale, rtol=1e-6)  # direction kept
    np.testing.assert_allclose(clipped["emb"], raw["emb"] * scale, rtol=1e-6)
    # below the bound nothing is scaled
    small, _ = dp.clip_upload(reply, sent, clip=1e6)
    np.testing.assert_allclose(small["emb"], reply.arrays["emb"])

    out = dp.privatise(reply, sent, 0.5, 1.0, np.random.default_rng(1))
    assert np.array_equal(out.arrays["idx"], reply.arrays["idx"]) and out.meta == reply.meta
    assert {k: (v.shape, v.dtype) for k, v in out.arrays.items()} == {
        k: (v.shape, v.dtype) for k, v in reply.arrays.items()
    }


def test_noise_std_is_noise_multiplier_times_clip() -> None:
    clip, z, n = 0.7, 1.3, 200_000
    rng = np.random.default_rng(3)
    sent = Message({"w": rng.normal(size=n).astype(np.float64)})
    reply = Message({"w": sent.arrays["w"] + rng.normal(size=n)})
    clipped, _ = dp.clip_upload(reply, sent, clip)
    out = dp.privatise(reply, sent, clip, z, np.random.default_rng(4))
    noise = out.arrays["w"] - sent.arrays["w"] - clipped["w"]
    # std of n normal draws: relative standard error 1/sqrt(2n) = 0.16%; 1% is > 6 standard errors
    assert np.std(noise) == pytest.approx(z * clip, rel=0.01)
    assert abs(np.mean(noise)) < 5 * z * clip / math.sqrt(n)


def test_every_upload_of_a_run_is_clipped_before_noise(monkeypatch, tmp_path: Path) -> None:
    seen: list[tuple[float, float]] = []
    original = dp.clip_upload

    def recording(reply: Message, sent: Message, clip: float):
        clipped, base = original(reply, sent, clip)
        raw = {k: reply.arrays[k].astype(np.float64) - base[k] * sent.arrays.get(k, 0.0) for k in base}
        seen.append((joint_norm(raw), joint_norm(clipped)))
        return clipped, base

    monkeypatch.setattr(dp, "clip_upload", recording)
    cfg = tiny(*DP_ON, "engine.workers=1")  # the recording lives in this process, not in forked workers
    rows, _ = run(cfg, tmp_path / "run")
    assert len(seen) == sum(len(r["clients"]) for r in rows) == 20  # every fit of every round
    assert all(after <= 0.05 * (1 + 1e-9) for _, after in seen)
    assert sum(before > 0.05 for before, _ in seen) == len(seen)  # the bound was active, not vacuous


# ------------------------------------------------------------------------------- runs and engines


def test_off_is_bit_identical_to_no_privacy_block_and_on_changes_the_run(tmp_path: Path) -> None:
    plain_rows, plain = run(tiny(), tmp_path / "plain")
    _, off = run(
        tiny("privacy.enabled=false", "privacy.clip=0.01", "privacy.noise_multiplier=5"), tmp_path / "off"
    )
    assert (tmp_path / "off" / "metrics.jsonl").read_bytes() == (
        tmp_path / "plain" / "metrics.jsonl"
    ).read_bytes()
    assert off["final"] == plain["final"] and "privacy" not in off
    on_rows, on = run(tiny(*DP_ON), tmp_path / "on")
    assert [r["train"] for r in on_rows] != [r["train"] for r in plain_rows]
    assert on["privacy"]["applies"] is True


def test_same_seed_same_noise_other_seed_other_noise(tmp_path: Path) -> None:
    run(tiny(*DP_ON), tmp_path / "a")
    run(tiny(*DP_ON), tmp_path / "b")
    assert (tmp_path / "a" / "metrics.jsonl").read_bytes() == (tmp_path / "b" / "metrics.jsonl").read_bytes()
    cfg = tiny(*DP_ON)
    fed = Federation.from_config(cfg, build_task(cfg))
    cid, message = next(iter(fed.server.configure(1, fed.specs, Rng(cfg.seed, 1, SERVER)).items()))
    data, state = fed.task.client(cid), Message()
    first, _ = fed.client.fit(message, state, data, Rng(cfg.seed, 1, cid))
    again, _ = fed.client.fit(message, state, data, Rng(cfg.seed, 1, cid))
    other, _ = fed.client.fit(message, state, data, Rng(cfg.seed + 1, 1, cid))
    name = next(k for k, v in first.arrays.items() if v.dtype.kind == "f")
    assert np.array_equal(first.arrays[name], again.arrays[name])
    assert not np.array_equal(first.arrays[name], other.arrays[name])


def test_summary_epsilon_matches_a_direct_rdp_accountant(tmp_path: Path) -> None:
    cfg = tiny(*DP_ON, "clients.per_round=3", "rounds=3")
    rows, summary = run(cfg, tmp_path / "run")
    block = summary["privacy"]
    accountant = RDPAccountant()
    for _ in range(3):
        accountant.step(noise_multiplier=0.5, sample_rate=3 / 10)
    assert block["epsilon"] == pytest.approx(accountant.get_epsilon(delta=1e-4), rel=1e-12)
    most = max(sum(cid in r["clients"] for r in rows) for cid in {c for r in rows for c in r["clients"]})
    local = RDPAccountant()
    for _ in range(most):
        local.step(noise_multiplier=0.25, sample_rate=1.0)  # sensitivity 2C: z / 2
    assert block["max_participations"] == most
    assert block["epsilon_local"] == pytest.approx(local.get_epsilon(delta=1e-4), rel=1e-12)
    assert block["sample_rate"] == pytest.approx(0.3) and block["rounds"] == 3
    report = (tmp_path / "run" / "summary.json").read_text()
    assert json.loads(report)["privacy"] == block


def test_epsilon_decreases_as_noise_grows() -> None:
    noises = [0.3, 0.6, 1.0, 2.0, 4.0]
    central = [federation_epsilon(z, 0.3, 20, 1e-5) for z in noises]
    local = [local_epsilon(z, 20, 1e-5) for z in noises]
    assert all(a > b > 0 for a, b in itertools.pairwise(central))
    assert all(a > b > 0 for a, b in itertools.pairwise(local))
    # subsampling amplifies: fewer clients per round, smaller epsilon at the same noise
    assert federation_epsilon(1.0, 0.1, 20, 1e-5) < federation_epsilon(1.0, 1.0, 20, 1e-5)


def test_run_report_states_epsilon(tmp_path: Path) -> None:
    from fedmosaic.reporting.report import write_run_report

    _, summary = run(tiny(*DP_ON), tmp_path / "run")
    text = write_run_report(tmp_path / "run", plots=False).read_text()
    assert "## Differential privacy" in text
    assert f"{summary['privacy']['epsilon']:.3g}" in text


def test_file_pipeline_applies_the_same_noise_as_the_local_engine(tmp_path: Path) -> None:
    from fedmosaic.engines.files import FilePipeline

    cfg = tiny(*DP_ON)
    pipeline = FilePipeline.init(tmp_path / "root", cfg)
    for _ in range(cfg.rounds):
        pipeline.train_clients()
        pipeline.aggregate_vectors()
        pipeline.update_clients()
    rows, summary = run(cfg, tmp_path / "engine")
    assert read_jsonl(tmp_path / "root" / "metrics.jsonl") == rows
    files_summary = json.loads((tmp_path / "root" / "summary.json").read_text())
    assert files_summary["privacy"] == summary["privacy"]


def test_flower_client_app_privatises_like_the_local_engine(tmp_path: Path) -> None:
    pytest.importorskip("flwr")
    import tomli_w
    from flwr.app import Context, Metadata, RecordDict
    from flwr.app import Message as FlowerMessage

    from fedmosaic.engines.flower import RUN, TRAIN, handle_train, prepare_nodes
    from fedmosaic.engines.flower_records import get_messages, put_json, put_messages

    cfg = tiny(*DP_ON)
    node = prepare_nodes(cfg, tmp_path / "nodes", 1)[0]
    fed = Federation.from_config(cfg, build_task(cfg))
    cid, message = next(iter(fed.server.configure(1, fed.specs, Rng(cfg.seed, 1, SERVER)).items()))
    content = RecordDict()
    put_json(content, RUN, round=1, config=tomli_w.dumps(cfg.to_toml_dict()), **{"clients-per-round": 10})
    put_messages(content, TRAIN, {cid: message})
    metadata = Metadata(
        run_id=1,
        message_id="m1",
        src_node_id=0,
        dst_node_id=1,
        reply_to_message_id="",
        group_id="",
        created_at=time.time(),
        ttl=3600.0,
        message_type="train",
    )
    context = Context(
        run_id=1, node_id=1, node_config={"data-dir": str(node)}, state=RecordDict(), run_config={}
    )
    answer = get_messages(
        handle_train(FlowerMessage(content=content, metadata=metadata), context).content, TRAIN
    )
    ours, _ = fed.client.fit(message, Message(), fed.task.client(cid), Rng(cfg.seed, 1, cid))
    bare, _ = fed.client.inner.fit(message, Message(), fed.task.client(cid), Rng(cfg.seed, 1, cid))
    assert set(answer[cid].arrays) == set(ours.arrays)
    assert all(np.array_equal(answer[cid].arrays[k], ours.arrays[k]) for k in ours.arrays)
    assert not all(np.array_equal(bare.arrays[k], ours.arrays[k]) for k in ours.arrays)


# ------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("privacy.clip=0", "privacy.clip: Input should be greater than 0"),
        ("privacy.clip=-1.5", "privacy.clip: Input should be greater than 0"),
        ("privacy.noise_multiplier=0", "privacy.noise_multiplier: Input should be greater than 0"),
        ("privacy.noise_multiplier=inf", "privacy.noise_multiplier: Input should be a finite number"),
        ("privacy.delta=1", "privacy.delta: Input should be less than 1"),
        ("privacy.delta=0", "privacy.delta: Input should be greater than 0"),
        ("privacy.enabled=maybe", "privacy.enabled: Input should be a valid boolean"),
        ("privacy.epsilon=3", "privacy.epsilon: unknown key"),
    ],
)
def test_bad_privacy_values_give_one_line_errors(assignment: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, [*TINY_OVERRIDES, assignment])
    message = str(caught.value)
    assert message.startswith(expected) and "\n" not in message


def test_pooled_data_algorithm_reports_no_guarantee(tmp_path: Path) -> None:
    _, summary = run(tiny(*DP_ON, "algorithm.name=centralized"), tmp_path / "run")
    assert summary["privacy"]["applies"] is False


def test_worker_pool_applies_the_same_noise(tmp_path: Path) -> None:
    # engine.workers forks the (wrapped) client half: the noise must still come from Rng(seed, round, client)
    serial, _ = run(tiny(*DP_ON), tmp_path / "serial")
    pooled, _ = run(tiny(*DP_ON, "engine.workers=2"), tmp_path / "pooled")
    assert pooled == serial
