"""Reply validation in real runs: one client's reply corrupted by kind, rejected with a reason, the
global state exactly that of the run without that client; the min_clients policy; the checks alone.

Bad-input kinds tried (engines/faults.py::CORRUPTIONS): nan, inf, wrong_shape, wrong_dtype,
missing_array, extra_array, norm_1e6, missing_meta, nan_meta (9), each against fedavg (weights)
and gvf (proxy vectors), plus FedMEKT's echoed proxy indices and embeddings (tests below).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from fedmosaic.config import RunConfig, load_config, with_overrides
from fedmosaic.core.message import Message
from fedmosaic.core.validation import ArraySpec, ReplySpec, check_norms, check_reply
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.faults import CORRUPTIONS, CorruptingClient
from fedmosaic.engines.federation import Federation
from fedmosaic.engines.run_folder import read_jsonl
from fedmosaic.engines.screening import RoundFailed
from mhealth_files import mhealth_overrides, write_mhealth

VICTIM = "client_4"  # holds image and text: its reply carries every part
EXPECTED = {  # kind -> a piece of the logged reason
    "nan": "NaN",
    "inf": "Inf",
    "wrong_shape": "shape",
    "wrong_dtype": "dtype float64",
    "missing_array": "missing array",
    "extra_array": "unexpected array",
    "norm_1e6": "norm bound",
    "missing_meta": "missing meta key(s) 'n_train'",
    "nan_meta": "meta 'n_train': expected a finite number",
}
assert set(EXPECTED) == set(CORRUPTIONS)


class WithoutClient:
    """A server half that never sees ``victim``'s replies: the reference "run without that client"."""

    def __init__(self, inner, victim: str) -> None:
        self.inner, self.victim = inner, victim

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def aggregate(self, round, replies, rng):
        return self.inner.aggregate(round, {c: r for c, r in replies.items() if c != self.victim}, rng)


def run(cfg: RunConfig, folder: Path, kind: str | None = None, prefix: str = "", without: bool = False):
    """A run with ``VICTIM``'s reply corrupted by ``kind`` (or excluded at the server); (rows, state)."""
    clients = [lambda inner: CorruptingClient(inner, {VICTIM}, kind, prefix)] if kind is not None else []
    servers = [lambda inner: WithoutClient(inner, VICTIM)] if without else []
    fed = Federation.from_config(
        cfg, build_task(cfg), folder=folder, client_wrappers=clients, server_wrappers=servers
    )
    fed.run()
    return read_jsonl(folder / "metrics.jsonl"), fed.server.state()


def assert_same_state(a: Message, b: Message) -> None:
    assert sorted(a.arrays) == sorted(b.arrays)
    for name in a.arrays:
        np.testing.assert_array_equal(a.arrays[name], b.arrays[name], err_msg=name)


@pytest.fixture(scope="module")
def fedavg_cfg() -> RunConfig:
    from conftest import TINY_OVERRIDES

    return load_config(None, [*TINY_OVERRIDES, "output.plots=false"])


@pytest.fixture(scope="module")
def fedavg_reference(fedavg_cfg: RunConfig, tmp_path_factory: pytest.TempPathFactory):
    return run(fedavg_cfg, tmp_path_factory.mktemp("ref"), without=True)


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_fedavg_rejects_corrupted_reply_and_aggregates_the_rest(
    kind: str, fedavg_cfg: RunConfig, fedavg_reference, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="fedmosaic.robustness"):
        rows, state = run(fedavg_cfg, tmp_path, kind)
    for row in rows:  # every round: the victim rejected with the kind's reason, the rest aggregated
        assert list(row["rejected"]) == [VICTIM]
        assert EXPECTED[kind] in row["rejected"][VICTIM]
        assert "train_loss" in row["train"]
    assert f"rejected the reply of {VICTIM}" in caplog.text
    ref_rows, ref_state = fedavg_reference
    assert_same_state(state, ref_state)
    assert [r["eval"] for r in rows] == [r["eval"] for r in ref_rows]


def test_without_validation_a_nan_reply_reaches_the_global_model(
    fedavg_cfg: RunConfig, tmp_path: Path
) -> None:
    # The control: what the check above prevents does happen when it is off.
    rows, state = run(
        with_overrides(fedavg_cfg, ["robustness.validate_replies=false", "rounds=1"]), tmp_path, "nan"
    )
    assert "rejected" not in rows[0]
    assert any(np.isnan(a).any() for a in state.arrays.values() if a.dtype.kind == "f")


def test_below_min_clients_the_round_is_skipped_and_the_state_unchanged(
    fedavg_cfg: RunConfig, tmp_path: Path
) -> None:
    cfg = with_overrides(fedavg_cfg, ["robustness.min_clients=10", "rounds=1"])
    initial = Federation.from_config(cfg, build_task(cfg)).server.state()
    rows, state = run(cfg, tmp_path / "run", "inf")
    assert rows[0]["skipped"] == "9 usable of 10 planned replies, min_clients is 10"
    assert rows[0]["train"] == {} and "eval" in rows[0]  # the unchanged model is still evaluated
    assert_same_state(state, initial)


def test_below_min_clients_the_run_fails_under_the_fail_policy(fedavg_cfg: RunConfig, tmp_path: Path) -> None:
    cfg = with_overrides(fedavg_cfg, ["robustness.min_clients=10", "robustness.below_min=fail", "rounds=1"])
    with pytest.raises(RoundFailed, match=r"robustness.min_clients: round 1: 9 usable of 10"):
        run(cfg, tmp_path, "nan")
    assert not (tmp_path / "metrics.jsonl").exists() or not read_jsonl(tmp_path / "metrics.jsonl")


def test_min_clients_met_the_round_goes_on(fedavg_cfg: RunConfig, tmp_path: Path) -> None:
    rows, _ = run(with_overrides(fedavg_cfg, ["robustness.min_clients=9", "rounds=1"]), tmp_path, "nan")
    assert "skipped" not in rows[0] and list(rows[0]["rejected"]) == [VICTIM]


# ------------------------------------------------------------------- vectors (gvf) and embeddings


@pytest.fixture(scope="module")
def gvf_cfg(fedavg_cfg: RunConfig) -> RunConfig:
    return with_overrides(
        fedavg_cfg,
        [
            "algorithm.name=gvf",
            "algorithm.dim=16",
            "task.options.n_samples=240",
            "task.proxy_size=24",
            "task.labelled_size=24",
        ],
    )


@pytest.fixture(scope="module")
def gvf_reference(gvf_cfg: RunConfig, tmp_path_factory: pytest.TempPathFactory):
    return run(gvf_cfg, tmp_path_factory.mktemp("gvf-ref"), without=True)


@pytest.mark.parametrize("kind", ["nan", "inf", "wrong_shape", "wrong_dtype", "missing_array", "norm_1e6"])
def test_gvf_rejects_corrupted_proxy_vectors(
    kind: str, gvf_cfg: RunConfig, gvf_reference, tmp_path: Path
) -> None:
    rows, state = run(gvf_cfg, tmp_path, kind, prefix="vec/")
    for row in rows:
        assert list(row["rejected"]) == [VICTIM] and EXPECTED[kind] in row["rejected"][VICTIM]
    assert "'vec/" in rows[0]["rejected"][VICTIM] or kind == "norm_1e6"
    ref_rows, ref_state = gvf_reference
    assert_same_state(state, ref_state)  # shared part, global vectors: as without the client
    assert [r["eval"] for r in rows] == [r["eval"] for r in ref_rows]


@pytest.fixture(scope="module")
def fedmekt_cfg(tmp_path_factory: pytest.TempPathFactory) -> RunConfig:
    data = write_mhealth(tmp_path_factory.mktemp("mhealth"))
    return load_config(
        None,
        [
            *mhealth_overrides(data, rounds=1),
            "algorithm.name=fedmekt",
            "algorithm.proxy_batch=12",
            "algorithm.probe_max_iter=500",
            "algorithm.server_epochs=2",  # not the default 40: the same code path, fewer server steps
        ],
    )


class ChangedIndices(CorruptingClient):
    """Answers about a different proxy batch (indices shifted by one)."""

    def alter(self, reply, sent, rng):
        return Message({**reply.arrays, "proxy_idx": reply.arrays["proxy_idx"] + 1}, dict(reply.meta))


@pytest.mark.parametrize("kind", ["norm_1e6", "wrong_shape", "changed_indices"])
def test_fedmekt_rejects_bad_embeddings_and_foreign_indices(
    kind: str, fedmekt_cfg: RunConfig, tmp_path: Path
) -> None:
    victim = "client_4"  # acc+gyro
    wrapper = ChangedIndices if kind == "changed_indices" else CorruptingClient
    corrupt = "nan" if kind == "changed_indices" else kind
    Federation.from_config(
        fedmekt_cfg,
        build_task(fedmekt_cfg),
        folder=tmp_path,
        client_wrappers=[lambda inner: wrapper(inner, {victim}, corrupt, "emb/")],
    ).run()  # without screening, fedmekt's aggregate raises on foreign indices
    row = read_jsonl(tmp_path / "metrics.jsonl")[0]
    assert list(row["rejected"]) == [victim]
    reason = row["rejected"][victim]
    assert (
        ("'proxy_idx'" in reason and "unchanged" in reason)
        if kind == "changed_indices"
        else "'emb/" in reason
    )


# ------------------------------------------------------------------- the checks on their own


def test_norm_bound_uses_the_sent_array_and_the_median_of_the_other_replies() -> None:
    ones = np.ones(100, np.float32)
    specs = {c: ReplySpec({"w": ArraySpec((100,), np.dtype(np.float32))}) for c in "abc"}
    replies = {"a": Message({"w": ones}), "b": Message({"w": 2 * ones}), "c": Message({"w": 500 * ones})}
    # c's peers have median RMS 1.5, the floor is 1: 500 > 100 x 1.5
    assert list(check_norms(replies, specs, factor=100, floor=1.0)) == ["c"]
    assert check_norms(replies, specs, factor=1000, floor=1.0) == {}
    # two replies: each compared with the other, so one attacker cannot hide behind the median
    two = {"a": Message({"w": ones}), "c": Message({"w": 1e6 * ones})}
    assert list(check_norms(two, specs, factor=100, floor=1e-3)) == ["c"]
    # one reply, no peers: the array the server sent is the reference
    sent = {"c": ReplySpec({"w": ArraySpec.like(0.01 * ones)})}
    assert list(check_norms({"c": Message({"w": 10 * ones})}, sent, factor=100, floor=1e-3)) == ["c"]
    assert check_norms({"c": Message({"w": 0.5 * ones})}, sent, factor=100, floor=1e-3) == {}


def test_check_reply_accepts_a_wellformed_reply_and_optional_arrays() -> None:
    spec = ReplySpec(
        {
            "w": ArraySpec((2, 3), np.dtype(np.float32)),
            "p": ArraySpec((None, 3), np.dtype(np.float32), False),
        },
        meta=("n_train",),
        finite_meta=("n_train",),
    )
    good = Message({"w": np.zeros((2, 3), np.float32)}, {"n_train": 5})
    assert check_reply(good, spec) is None
    with_optional = Message({**good.arrays, "p": np.zeros((7, 3), np.float32)}, {"n_train": 5})
    assert check_reply(with_optional, spec) is None
    bad_optional = Message({**good.arrays, "p": np.zeros((7, 4), np.float32)}, {"n_train": 5})
    assert "shape (7, 4), expected ('*', 3)" in check_reply(bad_optional, spec)
    assert "expected a finite number, got True" in check_reply(Message(good.arrays, {"n_train": True}), spec)


# ------------------------------------------------------------------- the file pipeline screens too


def test_file_pipeline_rejects_a_tampered_outbox(fedavg_cfg: RunConfig, tmp_path: Path) -> None:
    from fedmosaic.core.checkpoint import load_message, save_message
    from fedmosaic.engines.files import FilePipeline

    pipeline = FilePipeline.init(tmp_path / "root", with_overrides(fedavg_cfg, ["rounds=1"]))
    pipeline.train_clients()
    outbox = tmp_path / "root" / VICTIM / "outbox.safetensors"
    save_message(outbox, CORRUPTIONS["norm_1e6"](load_message(outbox), ""))
    pipeline.aggregate_vectors()
    row = pipeline.update_clients()
    assert list(row["rejected"]) == [VICTIM] and "norm bound" in row["rejected"][VICTIM]
    assert read_jsonl(tmp_path / "root" / "metrics.jsonl")[0]["rejected"] == row["rejected"]
