"""FedMEKT (-C / -S), mmFedAvg and mmFedProx: what crosses the wire, the proxy-batch protocol, the KD
axis, persistent local models, fresh linear probes, and short end-to-end runs on small mHealth files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmosaic import runner
from fedmosaic.algorithms.fedmekt import LAYERS, PROXY_IDX, Distiller, emb_key, proxy_key
from fedmosaic.algorithms.registry import get_algorithm
from fedmosaic.config import ConfigError, RunConfig, load_config
from fedmosaic.core.algorithm import ServerData
from fedmosaic.core.message import Message
from fedmosaic.core.seeding import SERVER, Rng
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.protocol import build_client, build_server, settings_from_config
from fedmosaic.models.autoencoder import HIDDEN, SplitAutoencoder, kd_loss
from mhealth_files import mhealth_overrides, write_mhealth

WINDOW = 16  # the window of mhealth_overrides
REP = 4


@pytest.fixture(scope="module")
def mhealth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mhealth(tmp_path_factory.mktemp("mhealth"))


def config(data_dir: Path, algorithm: str = "fedmekt", *extra: str) -> RunConfig:
    return load_config(
        None,
        [
            *mhealth_overrides(data_dir),
            "clients.per_round=4",
            f"algorithm.name={algorithm}",
            "algorithm.proxy_batch=12" if algorithm == "fedmekt" else "algorithm.rep_size=4",
            # 2 server epochs, not the default 40: the same code path, a twentieth of the server's steps
            "algorithm.server_epochs=2" if algorithm == "fedmekt" else "algorithm.rep_size=4",
            "algorithm.probe_max_iter=500",
            *extra,
        ],
    )


def parts(cfg: RunConfig):
    """The task and the configured algorithm's two halves, as an engine would build them."""
    task = build_task(cfg)
    algorithm = get_algorithm(cfg.algorithm.name)
    settings = settings_from_config(cfg, task.info, len(task.specs))
    server = build_server(algorithm, settings, ServerData(task.proxy, task.labelled, task.test))
    return task, server, build_client(algorithm, settings)


def play_round(task, server, client, r: int, states: dict[str, Message], seed: int = 0):
    """One round by hand: plan, fit every planned client, aggregate. Returns (plan, replies, stats)."""
    plan = server.configure(r, task.specs, Rng(seed, r, SERVER))
    replies = {}
    for cid, message in plan.items():
        replies[cid], states[cid] = client.fit(
            message, states.get(cid, Message()), task.client(cid), Rng(seed, r, cid)
        )
    return plan, replies, server.aggregate(r, replies, Rng(seed, r, SERVER))


@pytest.fixture(scope="module")
def two_rounds(mhealth_dir):
    task, server, client = parts(config(mhealth_dir))
    states: dict[str, Message] = {}
    rounds = [play_round(task, server, client, r, states) for r in (1, 2)]
    return task, server, client, rounds, states


def test_replies_hold_only_proxy_embeddings_of_held_modalities(two_rounds):
    task, _, _, rounds, _ = two_rounds
    for plan, replies, _ in rounds:
        for cid, reply in replies.items():
            held = task.client(cid).spec.modalities
            expected = {PROXY_IDX} | {emb_key(m, layer) for m in held for layer in LAYERS}
            assert set(reply.arrays) == expected  # no weights, no private windows, no other modality
            n = len(plan[cid].arrays[PROXY_IDX])
            for m in held:
                assert reply.arrays[emb_key(m, "top")].shape == (n, WINDOW, REP)
                assert reply.arrays[emb_key(m, "first")].shape == (n, WINDOW, HIDDEN)
                assert reply.arrays[emb_key(m, "top")].dtype == np.float32
            assert not any(k.startswith(("encoders.", "decoders.", "proxy/")) for k in reply.arrays)
            # contiguous, so an engine that serialises messages delivers exactly these numbers
            assert all(a.flags.c_contiguous for a in reply.arrays.values())
            assert all(a.flags.c_contiguous for a in plan[cid].arrays.values())


def test_proxy_batch_indices_identical_down_and_up_and_new_each_round(two_rounds):
    _, _, _, rounds, _ = two_rounds
    batches = []
    for plan, replies, _ in rounds:
        down = {tuple(m.arrays[PROXY_IDX]) for m in plan.values()}
        up = {tuple(r.arrays[PROXY_IDX]) for r in replies.values()}
        assert len(down) == 1 and down == up
        batches.append(down.pop())
    assert batches[0] != batches[1]


def test_server_rejects_a_reply_about_another_proxy_batch(mhealth_dir):
    task, server, client = parts(config(mhealth_dir))
    plan = server.configure(1, task.specs, Rng(0, 1, SERVER))
    cid, message = next(iter(plan.items()))
    reply, _ = client.fit(message, Message(), task.client(cid), Rng(0, 1, cid))
    reply.arrays[PROXY_IDX] = reply.arrays[PROXY_IDX][::-1].copy()
    with pytest.raises(ValueError, match="different proxy batch"):
        server.aggregate(1, {cid: reply}, Rng(0, 1, SERVER))


def test_proxy_windows_are_sent_once_per_client_and_counted(two_rounds):
    task, _, _, rounds, states = two_rounds
    seen: set[str] = set()
    for plan, _, stats in rounds:
        sent = 0
        for cid, message in plan.items():
            has_proxy = any(k.startswith("proxy/") for k in message.arrays)
            assert has_proxy == (cid not in seen)
            assert not any(k.startswith(("encoders.", "decoders.")) for k in message.arrays)
            sent += sum(a.nbytes for k, a in message.arrays.items() if k.startswith("proxy/"))
            seen.add(cid)
        assert stats["proxy_bytes"] == sent
    for cid in seen:  # the client keeps the proxy windows of its own modalities
        held = task.client(cid).spec.modalities
        assert {k for k in states[cid].arrays if k.startswith("proxy/")} == {proxy_key(m) for m in held}


def test_kd_softmax_is_over_the_embedding_dimension():
    torch.manual_seed(0)
    student = torch.randn(3, 10, REP)
    # The teacher differs by a shift that is constant across the embedding dimension but varies in
    # time: a softmax over the embedding ignores it, a softmax over time does not.
    teacher = student + torch.randn(3, 10, 1) * 5
    assert kd_loss(student, teacher, 3.0) == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(student, teacher, 3.0, axis="time") > 0.01
    # and FedMEKT's distiller (default config) distils over the embedding dimension too
    settings_cfg = load_config(None, ["algorithm.name=fedmekt", "algorithm.variant=S"])
    distiller = Distiller.__new__(Distiller)
    distiller.cfg = settings_cfg.algorithm  # type: ignore[assignment]
    loss = distiller.loss(
        {"acc": {"top": student, "first": student}},
        distiller.log_targets({"acc": {"top": teacher, "first": teacher}}),
        {"top": 1.0, "first": 1.0},
    )
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("variant", ["C", "S"])
@pytest.mark.parametrize("axis", ["embedding", "time"])
def test_distiller_with_a_once_softmaxed_teacher_equals_kd_on_the_step_rows(variant, axis):
    """The teacher is soft-maxed once per round and sliced per step: the same loss as the KD of the
    step's student against the step's rows of the teacher (joined through the joint layer for C)."""
    torch.manual_seed(0)
    cfg = load_config(
        None, ["algorithm.name=fedmekt", f"algorithm.variant={variant}", f"algorithm.kd_axis={axis}"]
    )
    distiller = Distiller.__new__(Distiller)
    distiller.cfg = cfg.algorithm  # type: ignore[assignment]
    distiller.names = ("acc", "gyro")
    distiller.widths = {"top": REP, "first": HIDDEN}
    distiller.joint = {
        layer: torch.linalg.qr(torch.randn(2 * w, w))[0] for layer, w in distiller.widths.items()
    }

    def embeddings(n: int) -> dict[str, dict[str, torch.Tensor]]:
        return {
            m: {"top": torch.randn(n, 6, REP), "first": torch.randn(n, 6, HIDDEN)} for m in ("acc", "gyro")
        }

    teacher, student = embeddings(10), embeddings(3)
    rows = slice(4, 7)
    weights = {"top": 0.1, "first": 0.04}
    got = distiller.loss(student, distiller.log_targets(teacher), weights, rows)
    expected = torch.zeros(())
    for layer in LAYERS:
        t = {m: e[layer][rows] for m, e in teacher.items()}
        s = {m: e[layer] for m, e in student.items()}
        if variant == "C":
            term = kd_loss(distiller._join(s, layer), distiller._join(t, layer), 3.0, axis)
        else:
            term = sum(kd_loss(s[m], t[m], 3.0, axis) for m in s)
        expected = expected + weights[layer] * term
    assert float(got) > 0
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_cross_reconstruction_is_the_sum_over_source_and_target_pairs():
    """One decoder call over all sources' codes, the target broadcast, equals decoding each source
    separately and summing the per-pair MSEs."""
    torch.manual_seed(0)
    model = SplitAutoencoder({"acc": 3, "gyro": 2}, REP)
    batch = {"acc": torch.randn(5, 3, WINDOW), "gyro": torch.randn(5, 2, WINDOW)}
    with torch.no_grad():  # values only
        codes = {m: model.represent(x, m) for m, x in batch.items()}
        expected = sum(
            torch.nn.functional.mse_loss(model.decoders[t](codes[s], WINDOW), y.transpose(1, 2).flip(1))
            for s in batch
            for t, y in batch.items()
        )
        joint = model.reconstruction_loss(batch)
        given_codes = model.reconstruction_loss(batch, codes=codes)
    assert float(joint) == pytest.approx(float(expected), rel=1e-5)
    assert float(given_codes) == pytest.approx(float(expected), rel=1e-5)


def test_server_distillation_runs_each_encoder_once_per_step(mhealth_dir):
    """The server's step encodes each modality once, for the codes and the KD's student alike."""
    task, server, client = parts(config(mhealth_dir, "fedmekt", "algorithm.server_epochs=2"))
    states: dict[str, Message] = {}
    plan = server.configure(1, task.specs, Rng(0, 1, SERVER))
    replies = {}
    for cid, message in plan.items():
        replies[cid], states[cid] = client.fit(message, Message(), task.client(cid), Rng(0, 1, cid))
    calls = dict.fromkeys(server.model.encoders, 0)
    hooks = [
        encoder.register_forward_hook(lambda *_, m=m: calls.__setitem__(m, calls[m] + 1))
        for m, encoder in server.model.encoders.items()
    ]
    try:
        server.aggregate(1, replies, Rng(0, 1, SERVER))
    finally:
        for hook in hooks:
            hook.remove()
    steps = 2 * math.ceil(len(server.batch) / 16)  # server_epochs x batches of training.batch_size
    assert calls == dict.fromkeys(server.model.encoders, steps)


def test_local_models_persist_and_are_never_overwritten_by_global_weights(two_rounds, mhealth_dir):
    task, server, client, rounds, states = two_rounds
    initial = build_server(get_algorithm("fedmekt"), server.settings, server.data).model.state_dict()
    global_now = server.model.state_dict()
    for cid, state in states.items():
        held = task.client(cid).spec.modalities
        weights = {k for k in state.arrays if k.startswith(("encoders.", "decoders."))}
        assert weights and all(k.split(".")[1] in held for k in weights)
        for k in weights:
            assert not np.allclose(state.arrays[k], initial[k].numpy())  # trained
            assert not np.allclose(state.arrays[k], global_now[k].numpy())  # not the global model
    # A client sampled in both rounds started round 2 from its own round-1 model: rerunning round 2
    # from an empty state gives different embeddings.
    (plan1, _, _), (plan2, replies2, _) = rounds
    both = sorted(set(plan1) & set(plan2))
    assert both, "the fixture needs a client sampled twice"
    cid = both[0]
    fresh_reply, _ = client.fit(
        Message(
            {k: v for k, v in plan2[cid].arrays.items()}
            | {proxy_key(m): states[cid].arrays[proxy_key(m)] for m in task.client(cid).spec.modalities}
        ),
        Message(),
        task.client(cid),
        Rng(0, 2, cid),
    )
    m = sorted(task.client(cid).spec.modalities)[0]
    assert not np.allclose(fresh_reply.arrays[emb_key(m, "top")], replies2[cid].arrays[emb_key(m, "top")])


def test_linear_probe_is_fresh_at_every_evaluation(two_rounds):
    task, server, _, _, _ = two_rounds
    first = server.evaluate(2, task.specs, {})
    second = server.evaluate(2, task.specs, {})
    assert first == second  # a persistent probe would have trained further between the two calls
    # no probe in the server state: the model and the round's proxy batch only
    assert set(server.state().arrays) == {*server.model.state_dict(), "proxy_batch"}
    assert not any(isinstance(v, torch.nn.Linear) for v in vars(server).values())
    assert {"test/acc", "test/gyro", "test/acc+gyro", "overall"} <= set(first)


def test_mmfedavg_weights_multimodal_clients_by_mm_weight(mhealth_dir):
    _, server, _ = parts(config(mhealth_dir, "mmfedavg"))
    name = "encoders.acc.top.bias_ih_l0"
    shape = server.model.state_dict()[name].shape
    replies = {
        "a": Message(
            {name: np.ones(shape, np.float32)}, {"n_train": 1, "train_loss": 0.0, "multimodal": True}
        ),
        "b": Message(
            {name: np.zeros(shape, np.float32)}, {"n_train": 50, "train_loss": 0.0, "multimodal": False}
        ),
    }
    server.aggregate(1, replies, Rng(0, 1, SERVER))
    assert np.allclose(server.model.state_dict()[name].numpy(), 100 / 101)


def _finite(summary: dict) -> None:
    final = summary["final"]
    assert {"test/acc", "test/gyro", "test/acc+gyro", "overall"} <= set(final)
    for metrics in final.values():
        assert all(math.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize(
    ("algorithm", "extra"),
    [
        ("fedmekt", ["algorithm.variant=C"]),
        ("fedmekt", ["algorithm.variant=S"]),
        ("mmfedavg", []),
        ("mmfedprox", []),
    ],
)
def test_two_rounds_through_the_local_engine(tmp_path, mhealth_dir, algorithm, extra):
    cfg = config(mhealth_dir, algorithm, *extra)
    summary = runner.start(cfg, tmp_path / "run").summaries[algorithm]
    assert summary["rounds"] == 2
    _finite(summary)
    assert summary["bytes_up"] > 0 and summary["bytes_down"] > 0


def test_same_seed_same_metrics(tmp_path, mhealth_dir):
    cfg = config(mhealth_dir, "fedmekt", "algorithm.kd_steps=last")
    a = runner.start(cfg, tmp_path / "a").summaries["fedmekt"]
    b = runner.start(cfg, tmp_path / "b").summaries["fedmekt"]
    assert a["final"] == b["final"] and a["bytes_up"] == b["bytes_up"]


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("algorithm.alpha=-1", "algorithm.alpha"),
        ("algorithm.variant=X", "algorithm.variant"),
        ("algorithm.proxy_batch=0", "algorithm.proxy_batch"),
        ("algorithm.kd_axis=channels", "algorithm.kd_axis"),
        ("algorithm.nope=1", "algorithm.nope"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(setting, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["algorithm.name=fedmekt", setting])
    assert str(err.value).startswith(key) and "\n" not in str(err.value)


def test_time_axis_needs_every_step_and_mm_weight_must_be_positive():
    with pytest.raises(ConfigError, match=r"^algorithm\.kd_axis"):
        load_config(None, ["algorithm.name=fedmekt", "algorithm.kd_axis=time", "algorithm.kd_steps=last"])
    with pytest.raises(ConfigError, match=r"^algorithm\.mm_weight"):
        load_config(None, ["algorithm.name=mmfedavg", "algorithm.mm_weight=0"])


def test_non_sensor_task_is_a_one_line_error(tiny_cfg):
    cfg = tiny_cfg.model_copy(update={"algorithm": get_algorithm("fedmekt").Config()})
    task = build_task(cfg)
    with pytest.raises(
        ValueError, match=r"^algorithm\.name: fedmekt needs \(channels, time\) sensor windows"
    ):
        build_server(
            get_algorithm("fedmekt"),
            settings_from_config(cfg, task.info, len(task.specs)),
            ServerData(task.proxy, task.labelled, task.test),
        )


@pytest.mark.slow
def test_resume_continues_with_the_same_metrics_and_does_not_resend_the_proxy(tmp_path, mhealth_dir):
    from fedmosaic.engines.federation import Federation
    from fedmosaic.engines.run_folder import read_jsonl

    cfg = config(mhealth_dir, "fedmekt", "rounds=3", "algorithm.kd_steps=last", "engine.state_cache=0")
    task = build_task(cfg)
    Federation.from_config(cfg, task, folder=tmp_path / "full").run()

    def stop_after_two(result) -> None:
        if result.round == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Federation.from_config(cfg, task, folder=tmp_path / "cut", callbacks=[stop_after_two]).run()
    Federation.from_config(cfg, task, folder=tmp_path / "cut").run()
    full, cut = (
        read_jsonl(tmp_path / "full" / "metrics.jsonl"),
        read_jsonl(tmp_path / "cut" / "metrics.jsonl"),
    )
    assert full == cut  # the same metrics and the same byte counts (proxy_bytes included) per round


def _separable(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = gen.normal(size=(n, 5)) + 2.0 * np.eye(3, 5)[y]
    return x, y


def test_probe_is_trained_to_its_tolerance_and_records_steps_and_loss():
    from sklearn.linear_model import LogisticRegression

    from fedmosaic.models.linear_probe import fit_probe

    x, y = _separable(120)
    probe, record = fit_probe(x, y, tol=1e-8, max_iter=10_000, c=1.0)
    assert record["probe_converged"] == 1.0 and 1 <= record["probe_steps"] < 10_000
    # at the optimum: a much longer run of the same objective finds the same weights and loss
    ref = LogisticRegression(tol=1e-12, max_iter=100_000).fit(x, y)
    assert np.allclose(probe.coef_, ref.coef_, atol=1e-4)
    assert record["probe_train_loss"] == pytest.approx(
        float(-np.log(ref.predict_proba(x)[np.arange(len(y)), y]).mean()), abs=1e-6
    )
    _, short = fit_probe(x, y, tol=1e-8, max_iter=2, c=1.0)
    assert short["probe_converged"] == 0.0 and short["probe_steps"] == 2
    assert short["probe_train_loss"] > record["probe_train_loss"]


@pytest.mark.parametrize(
    ("protocol", "metrics"),
    [
        ("windows", {"accuracy", "macro_f1", "weighted_f1"}),
        ("reference", {"accuracy", "macro_f1", "weighted_f1", "pooled_weighted_f1", "windows"}),
    ],
)
def test_evaluation_rows_carry_the_probe_record_and_warn_when_it_stops_early(
    mhealth_dir, caplog, protocol, metrics
):
    def stopped_early() -> list[str]:
        return [r.getMessage() for r in caplog.records if "did not reach" in r.getMessage()]

    chosen = f"algorithm.eval_protocol={protocol}"
    task, server, _ = parts(config(mhealth_dir, "mmfedavg", "algorithm.eval_controls=false", chosen))
    with caplog.at_level("WARNING", logger="fedmosaic.algorithms.autoencoder_base"):
        out = server.evaluate(1, task.specs, {})
    assert not stopped_early()  # converged: nothing to say
    # mHealth windows have no recordings: under "reference" they stand in for them, and a warning says so
    assert ("no continuous recordings" in caplog.text) == (protocol == "reference")
    for key in ("test/acc", "test/gyro", "test/acc+gyro"):
        assert out[key]["probe_converged"] == 1.0 and out[key]["probe_steps"] >= 1
        assert math.isfinite(out[key]["probe_train_loss"]) and out[key]["probe_train_loss"] > 0
    assert set(out["overall"]) == metrics  # no means of probe records
    _, capped, _ = parts(
        config(mhealth_dir, "mmfedavg", "algorithm.probe_max_iter=1", "algorithm.eval_controls=false", chosen)
    )
    caplog.clear()
    with caplog.at_level("WARNING", logger="fedmosaic.algorithms.autoencoder_base"):
        out = capped.evaluate(3, task.specs, {})
    assert out["test/acc"]["probe_steps"] == 1 and out["test/acc"]["probe_converged"] == 0.0
    assert len(stopped_early()) == 1  # once per evaluation, naming the keys and the config fields
    assert "round 3" in caplog.text and "algorithm.probe_tol" in caplog.text and "test/acc" in caplog.text


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("algorithm.probe_tol=0", "algorithm.probe_tol"),
        ("algorithm.probe_tol=0.5", "algorithm.probe_tol"),
        ("algorithm.probe_max_iter=0", "algorithm.probe_max_iter"),
        ("algorithm.probe_c=0", "algorithm.probe_c"),
    ],
)
def test_probe_bounds_are_one_line_errors(setting, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["algorithm.name=mmfedavg", setting])
    assert str(err.value).startswith(key) and "\n" not in str(err.value)


def test_controls_score_the_round0_encoder_and_raw_statistics_with_the_same_probe(mhealth_dir):
    from fedmosaic.models.linear_probe import linear_evaluation, window_statistics

    task, server, client = parts(config(mhealth_dir, "mmfedavg", "algorithm.eval_protocol=windows"))
    before = server.evaluate(0, task.specs, {})
    states: dict[str, Message] = {}
    play_round(task, server, client, 1, states)
    after = server.evaluate(1, task.specs, {})
    for subset in ("acc", "gyro", "acc+gyro"):
        # round 0: the trained encoder is the untrained one, so the two rows agree exactly
        assert before[f"control/untrained/{subset}"] == before[f"test/{subset}"]
        # the controls do not move with training; the encoder's own row does
        assert after[f"control/untrained/{subset}"] == before[f"control/untrained/{subset}"]
        assert after[f"control/raw_stats/{subset}"] == before[f"control/raw_stats/{subset}"]
    assert after["test/acc"] != before["test/acc"]
    # raw statistics are exactly the documented features under the same probe
    raw = linear_evaluation(window_statistics, task.labelled, task.test, task.info, 1e-6, 500)
    assert raw["acc"] == after["control/raw_stats/acc"]
    x = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    assert window_statistics(x, "acc").shape == (2, 12)
    assert torch.equal(window_statistics(x, "acc")[:, 6:9], x[:, :, 0])  # min of an increasing row
    off_cfg = config(
        mhealth_dir, "mmfedavg", "algorithm.eval_controls=false", "algorithm.eval_protocol=windows"
    )
    _, off, _ = parts(off_cfg)
    assert not any(k.startswith("control/") for k in off.evaluate(0, task.specs, {}))


def test_benchmark_says_when_trivial_controls_are_not_clearly_below_the_methods(monkeypatch):
    import sys

    from benchmark_runs import ROOT

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("fedmekt", None)
    import fedmekt as bench

    def digest(f1: float, raw: float = 0.3, untrained: float = 0.2) -> dict:
        controls = {
            f"{prefix}/{s}": {"weighted_f1": value}
            for prefix, value in (("control/raw_stats", raw), ("control/untrained", untrained))
            for s in ("acc", "gyro")
        }
        return {"median": {s: {"weighted_f1": f1} for s in bench.SUBSETS}, "controls": controls}

    results = {label: [digest(0.6)] for label in bench.ALGORITHMS}
    assert "Every method beats every trivial control" in bench.controls_check(results)
    results["FedMEKT-C"] = [digest(0.33)]  # above raw statistics (0.30), but by less than the margin
    text = bench.controls_check(results)
    assert "Not clearly above it" in text and "FedMEKT-C (33.0)" in text and "mmFedAvg" not in text
    assert "raw statistics" in text  # names the best trivial control
