"""FedCMI: dominant modality, class-wise temperatures, the frozen global teacher, engine runs, config."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_OVERRIDES
from fedmosaic.algorithms import fedcmi
from fedmosaic.algorithms.fedcmi import (
    FedCMIClient,
    class_temperatures,
    dominant_modality,
    initial_cmi_model,
    soft_cross_entropy,
)
from fedmosaic.config import ConfigError, RunConfig, load_config, validate
from fedmosaic.core.message import Message
from fedmosaic.core.seeding import Rng
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.federation import Federation
from fedmosaic.engines.protocol import settings_from_config
from fedmosaic.engines.run_folder import read_jsonl
from fedmosaic.models.cmi import part_prefixes
from fedmosaic.models.params import to_arrays


def settings_of(cfg: RunConfig, task):
    """The settings an engine builds both halves with."""
    return settings_from_config(cfg, task.info, len(task.specs))


def fedcmi_cfg(cfg: RunConfig, **algorithm: object) -> RunConfig:
    tree = cfg.to_toml_dict()
    tree["algorithm"] = {"name": "fedcmi", **algorithm}
    return validate(tree)


# --- dominant modality ------------------------------------------------------------------------


def logits_with_true_prob(probs: list[float], num_classes: int = 3) -> torch.Tensor:
    """Logits whose softmax gives class 0 probability ``p`` in each row (rest spread evenly)."""
    rows = []
    for p in probs:
        rest = (1 - p) / (num_classes - 1)
        rows.append([math.log(p)] + [math.log(rest)] * (num_classes - 1))
    return torch.tensor(rows)


def test_dominant_modality_is_the_head_with_larger_summed_true_class_probability() -> None:
    labels = torch.zeros(3, dtype=torch.long)
    # a wins two samples of three, but b's summed true-class probability is larger: b dominates
    a = logits_with_true_prob([0.6, 0.6, 0.1])
    b = logits_with_true_prob([0.5, 0.5, 0.9])
    assert dominant_modality({"a": a, "b": b}, labels, ("a", "b")) == "b"
    assert dominant_modality({"a": b, "b": a}, labels, ("a", "b")) == "a"
    # decided per batch: another batch of the same pair of heads can flip it
    assert dominant_modality({"a": a[:2], "b": b[:2]}, labels[:2], ("a", "b")) == "a"
    # a tie goes to the second modality (the authors' `ratio > 1` test)
    assert dominant_modality({"a": a, "b": a.clone()}, labels, ("a", "b")) == "b"


def test_dominant_modality_uses_each_samples_own_label() -> None:
    # rows favour class 0 for a and class 1 for b; the labels decide who is right
    a = torch.tensor([[3.0, 0.0], [3.0, 0.0]])
    b = torch.tensor([[0.0, 3.0], [0.0, 3.0]])
    assert dominant_modality({"a": a, "b": b}, torch.tensor([0, 0]), ("a", "b")) == "a"
    assert dominant_modality({"a": a, "b": b}, torch.tensor([1, 1]), ("a", "b")) == "b"


# --- class-wise temperatures ------------------------------------------------------------------


def test_temperatures_are_one_at_or_below_the_mean_ratio_and_follow_the_formula_above() -> None:
    p1 = np.array([0.8, 0.4, 0.3, 0.6, 0.57])
    p2 = np.array([0.2, 0.4, 0.3, 0.3, 0.3])
    ratio = p1 / p2  # 4, 1, 1, 2, 1.9: mean 1.98
    r_bar = ratio.mean()
    temps = class_temperatures(p1, p2, coef=2.0)
    for c in range(len(p1)):
        if ratio[c] > r_bar:
            assert temps[c] == pytest.approx(1 / (1 + 2 * math.log(ratio[c] / r_bar)))
            assert temps[c] < 1  # a class this modality dominates more than usual: sharper target
        else:
            assert temps[c] == 1.0
    assert (temps < 1).tolist() == [True, False, False, True, False]  # 1.9 is just below the mean
    # a class exactly at the mean ratio: T = 1
    at_mean = class_temperatures(np.array([0.6, 0.2, 0.4]), np.array([0.2, 0.2, 0.2]))  # 3, 1, 2
    assert at_mean[2] == 1.0 and at_mean[1] == 1.0 and at_mean[0] < 1
    # the coefficient k scales the log term
    assert class_temperatures(p1, p2, coef=1.0)[0] == pytest.approx(1 / (1 + math.log(4 / r_bar)))


def test_temperatures_orient_towards_the_dominant_modality_and_skip_absent_classes() -> None:
    # modality 2 dominates: the ratio is taken the other way round, threshold 1 / mean(p1/p2)
    p1 = np.array([0.2, 0.4, 0.3, np.nan])
    p2 = np.array([0.8, 0.4, 0.3, 0.5])
    temps = class_temperatures(p1, p2, coef=2.0)
    r_bar = np.mean(p1[:3] / p2[:3])  # 0.25, 1, 1 -> 0.75 < 1
    assert temps[0] == pytest.approx(1 / (1 + 2 * math.log((0.8 / 0.2) * r_bar)))
    assert temps[1] == temps[2] == 1.0
    assert temps[3] == 1.0  # a class without samples
    # swapping the modalities sharpens the same classes (the values differ: the threshold is
    # 1 / mean(p1/p2), not mean(p2/p1), as in the authors' code)
    swapped = class_temperatures(p2[:3], p1[:3])
    assert ((swapped < 1) == (temps[:3] < 1)).all()


def test_soft_cross_entropy_uses_the_per_sample_temperature() -> None:
    student = torch.tensor([[2.0, 0.0], [2.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 2.0], [0.0, 2.0]])
    sharp = soft_cross_entropy(student, teacher, torch.tensor([0.5, 0.5]))
    flat = soft_cross_entropy(student, teacher, torch.tensor([1.0, 1.0]))
    assert float(sharp.detach()) > float(flat.detach())  # a lower temperature sharpens a disagreeing target
    sharp.backward()
    assert student.grad is not None and teacher.grad is None


# --- the frozen global teacher ----------------------------------------------------------------


@pytest.fixture
def tiny_task(tiny_cfg: RunConfig):
    cfg = fedcmi_cfg(tiny_cfg, warmup_rounds=0)
    return cfg, build_task(cfg)


def test_teacher_is_the_frozen_global_model_not_the_local_one(tiny_task, monkeypatch) -> None:
    cfg, task = tiny_task
    settings = settings_of(cfg, task)
    client = FedCMIClient(settings)
    data = next(c for c in task.clients if len(c.spec.modalities) == 2)
    # a "global" model that differs from the skeleton's initial weights
    with torch.random.fork_rng():
        torch.manual_seed(123)
        global_model = initial_cmi_model(settings)
        for p in global_model.parameters():
            p.data.add_(0.1 * torch.randn_like(p))
    message = Message(to_arrays(global_model, part_prefixes(global_model, data.spec.modalities)))
    global_model.eval()

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = fedcmi.soft_cross_entropy

    def spy(student, teacher, temps):
        seen.append((teacher.clone(), temps.clone()))
        return real(student, teacher, temps)

    monkeypatch.setattr(fedcmi, "soft_cross_entropy", spy)
    # record the inputs of each batch to recompute the global model's output on them
    batches: list[dict[str, torch.Tensor]] = []
    real_outputs = client.model.outputs

    def record(inputs):
        batches.append(inputs)
        return real_outputs(inputs)

    monkeypatch.setattr(client.model, "outputs", record)
    reply, _ = client.fit(message, Message(), data, Rng(cfg.seed, 1, data.spec.id))
    assert len(seen) >= 2 and reply.meta["inf_batches"] == len(seen)

    # the first complete batches measured the temperatures; the last len(seen) were trained on
    complete = [b for b in batches if len(b) == 2][-len(seen) :]
    with torch.no_grad():
        for inputs, (target, _) in zip(complete, seen, strict=True):
            global_heads = global_model.outputs(inputs).heads
            # the target equals the *global* model's head of one modality on this batch ...
            assert any(torch.allclose(target, h, atol=1e-5) for h in global_heads.values())
    # ... although the local model has moved away from the global one during the round
    trained = client.model
    params = {n: p.detach() for n, p in trained.named_parameters()}
    moved = max(
        float((params[n] - torch.from_numpy(a)).abs().max()) for n, a in message.arrays.items() if n in params
    )
    assert moved > 1e-4
    trained.eval()
    with torch.no_grad():
        local_heads = trained.outputs(complete[-1]).heads
    assert not any(torch.allclose(seen[-1][0], h, atol=1e-3) for h in local_heads.values())
    # the teacher copy itself never changed and takes no gradients
    for name, tensor in client.teacher.state_dict().items():
        if name in message.arrays:
            np.testing.assert_array_equal(tensor.numpy(), message.arrays[name])
    assert not any(p.requires_grad for p in client.teacher.parameters())


def test_infiltration_waits_for_warmup_and_skips_single_modality_clients(tiny_cfg: RunConfig) -> None:
    cfg = fedcmi_cfg(tiny_cfg, warmup_rounds=1)
    task = build_task(cfg)
    client = FedCMIClient(settings_of(cfg, task))
    model = initial_cmi_model(settings_of(cfg, task))
    complete = next(c for c in task.clients if len(c.spec.modalities) == 2)
    single = next(c for c in task.clients if len(c.spec.modalities) == 1)

    def fit(data, round):
        msg = Message(to_arrays(model, part_prefixes(model, data.spec.modalities)))
        reply, _ = client.fit(msg, Message(), data, Rng(cfg.seed, round, data.spec.id))
        return reply

    assert fit(complete, 1).meta["inf_batches"] == 0  # warm-up round
    assert fit(complete, 2).meta["inf_batches"] > 0
    reply = fit(single, 2)
    assert reply.meta["inf_batches"] == 0
    (held,) = single.spec.modalities
    assert all(n.split(".")[1] == held for n in reply.arrays)  # only its own modality's parts
    assert not any(n.startswith("fused.") for n in reply.arrays)


def test_aggregation_averages_each_part_over_its_holders_weighted_by_data_size(tiny_cfg: RunConfig) -> None:
    cfg = fedcmi_cfg(tiny_cfg)
    task = build_task(cfg)
    settings = settings_of(cfg, task)
    server = fedcmi.FedCMIServer(settings, fedcmi.ServerData(task.proxy, task.labelled, task.test))
    m1, m2 = server.model.names
    only_m1 = to_arrays(server.model, part_prefixes(server.model, frozenset({m1})))
    both = to_arrays(server.model, part_prefixes(server.model, frozenset({m1, m2})))
    replies = {
        "a": Message({n: np.ones_like(v) for n, v in only_m1.items()}, {"n_train": 1, "train_loss": 1.0}),
        "b": Message({n: np.full_like(v, 3) for n, v in both.items()}, {"n_train": 3, "train_loss": 1.0}),
    }
    for r in replies.values():
        r.meta.update({"inf_batches": 0, "inf_loss": 0.0})
    server.aggregate(1, replies, Rng(cfg.seed, 1, "server"))
    state = server.state().arrays
    float_names = [n for n in both if state[n].dtype.kind == "f"]
    for name in float_names:
        expected = (1 * 1 + 3 * 3) / 4 if name in only_m1 else 3.0  # m1's parts: both clients
        np.testing.assert_allclose(state[name], expected, err_msg=name)
    assert any(n.startswith("fused.") for n in float_names) and not any(
        n.startswith("fused.") for n in only_m1
    )


def test_fedprox_term_keeps_the_local_model_closer_to_the_global_one(tiny_cfg: RunConfig) -> None:
    task = build_task(tiny_cfg)
    data = next(c for c in task.clients if len(c.spec.modalities) == 2)

    def drift(mu: float) -> float:
        settings = settings_of(fedcmi_cfg(tiny_cfg, mu=mu), task)
        model = initial_cmi_model(settings)
        msg = Message(to_arrays(model, part_prefixes(model, data.spec.modalities)))
        reply, _ = FedCMIClient(settings).fit(msg, Message(), data, Rng(tiny_cfg.seed, 2, data.spec.id))
        return sum(
            float(((reply.arrays[n] - a) ** 2).sum()) for n, a in msg.arrays.items() if a.dtype.kind == "f"
        )

    assert drift(100.0) < 0.5 * drift(0.0)


# --- engine runs ------------------------------------------------------------------------------


def run(cfg: RunConfig, folder: Path) -> list[dict]:
    Federation.from_config(cfg, build_task(cfg), folder=folder).run()
    return read_jsonl(folder / "metrics.jsonl")


def test_two_rounds_complete_with_finite_metrics_and_same_seed_same_metrics(
    tiny_cfg: RunConfig, tmp_path: Path
) -> None:
    small = load_config(None, [*TINY_OVERRIDES, "task.options.n_samples=240", "training.local_epochs=1"])
    cfg = fedcmi_cfg(small)  # default mix: image-only, text-only and image+text clients
    assert {len(s.modalities) for s in build_task(cfg).specs} == {1, 2}
    rows = run(cfg, tmp_path / "a")
    assert [r["round"] for r in rows] == [1, 2]
    final = rows[-1]["eval"]
    for key in ("test/image", "test/text", "test/image+text", "group/image", "group/text", "overall"):
        assert math.isfinite(final[key]["accuracy"]) and math.isfinite(final[key]["macro_f1"])
    assert rows[-1]["train"]["inf_loss"] > 0  # round 2 is past the one-round warm-up
    assert math.isfinite(rows[-1]["train"]["train_loss"])
    run(cfg, tmp_path / "b")
    assert (tmp_path / "a" / "metrics.jsonl").read_bytes() == (tmp_path / "b" / "metrics.jsonl").read_bytes()


def test_ablations_run_and_self_projectors_only_has_no_infiltration_parts(
    tiny_cfg: RunConfig, tmp_path: Path
) -> None:
    cfg = fedcmi_cfg(tiny_cfg, infiltration=False)
    model = initial_cmi_model(settings_of(cfg, build_task(cfg)))
    assert not any(n.startswith("inf_proj.") for n in model.state_dict())
    rows = run(cfg.model_copy(update={"rounds": 1}), tmp_path / "noinf")
    assert "inf_loss" not in rows[-1]["train"]


# --- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, key",
    [
        ("algorithm.lambda=-1", "algorithm.lambda"),
        ("algorithm.warmup_rounds=-2", "algorithm.warmup_rounds"),
        ("algorithm.temperature_coef=0", "algorithm.temperature_coef"),
        ("algorithm.mu=-0.5", "algorithm.mu"),
        ("algorithm.lamda=1", "algorithm.lamda"),
    ],
)
def test_bad_config_value_is_one_line_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["algorithm.name=fedcmi", override])
    message = str(err.value)
    assert message.startswith(f"{key}:") and "\n" not in message


def test_config_round_trips_lambda_by_its_name() -> None:
    cfg = load_config(None, ["algorithm.name=fedcmi", "algorithm.lambda=0.5"])
    assert cfg.algorithm.lambda_ == 0.5
    tree = cfg.to_toml_dict()
    assert tree["algorithm"]["lambda"] == 0.5
    assert validate(tree).algorithm == cfg.algorithm


def test_a_task_without_exactly_two_modalities_is_refused() -> None:
    from fedmosaic.models.cmi import CMIClassifier

    with pytest.raises(ValueError, match="exactly two modalities"):
        CMIClassifier({"a": torch.nn.Identity()}, 4, 3)
