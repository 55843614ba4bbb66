"""Scenarios (data/scenarios.py): missing labels, noisy labels, per-sample missing modalities."""

from __future__ import annotations

import numpy as np
import pytest

from fedmosaic.algorithms.fedavg import FedAvgClient
from fedmosaic.config import ConfigError, RunConfig, load_config, with_overrides
from fedmosaic.core.message import Message
from fedmosaic.core.seeding import Rng
from fedmosaic.core.task import ClientData, Task, View
from fedmosaic.data.scenarios import confusion_targets, drop_modalities, flip_labels, pick
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.node_data import export_node, load_node
from fedmosaic.engines.protocol import settings_from_config
from fedmosaic.models.params import to_arrays

ALL = ["task.label_missing_rate=0.3", "task.label_noise_rate=0.2", "clients.sample_drop_rate=0.5"]


def _task(cfg: RunConfig, extra: list[str]) -> Task:
    return build_task(with_overrides(cfg, extra))


# ------------------------------------------------------------------------------------- the rules


def test_pick_takes_exactly_the_floor_of_the_rate_and_never_everything() -> None:
    rng = np.random.default_rng(0)
    assert pick(100, 0.3, rng).sum() == 30
    assert pick(7, 0.5, rng).sum() == 3
    assert pick(3, 0.99, rng).sum() == 2  # floor: at least one sample keeps its label
    assert pick(5, 0.0, rng).sum() == 0


def test_confusion_rule_is_sparse_and_never_the_true_class() -> None:
    targets = confusion_targets(6, np.random.default_rng(1))
    assert targets.shape == (6, 2)
    for c, row in enumerate(targets):
        assert c not in row and len(set(row)) == 2
    assert confusion_targets(2, np.random.default_rng(1)).tolist() == [[1], [0]]


def test_flip_labels_moves_only_the_chosen_ones_to_their_class_targets() -> None:
    labels = np.array([0, 1, 2, 0, 1, 2])
    chosen = np.array([True, False, True, False, False, True])
    targets = np.array([[1, 2], [2, 0], [0, 1]])
    out = flip_labels(labels, chosen, targets, np.random.default_rng(0))
    assert (out[~chosen] == labels[~chosen]).all()
    for i in np.flatnonzero(chosen):
        assert out[i] in targets[labels[i]]


def test_sample_drop_rate_is_honoured_and_never_drops_every_modality() -> None:
    mask = np.ones((20_000, 2), dtype=bool)
    for p in (0.1, 0.5, 0.9):
        out = drop_modalities(mask, p, np.random.default_rng(2))
        assert out.any(axis=1).all()
        # each modality is dropped with p; a row that lost both gets one back: p - p**2 / 2 per entry
        assert abs((~out).mean() - (p - p**2 / 2)) < 0.01
    partial = np.array([[True, False], [False, True]] * 50)
    assert (drop_modalities(partial, 0.9, np.random.default_rng(3)) == partial).all()  # one held: kept


# ----------------------------------------------------------------------------- applied to a task


def test_scenarios_change_client_training_views_only_and_are_seeded(tiny_cfg: RunConfig) -> None:
    clean = build_task(tiny_cfg)
    task = _task(tiny_cfg, ALL)
    again = _task(tiny_cfg, ALL)
    other = _task(tiny_cfg, [*ALL, "seed=1"])
    # test set, server sets and the true labels are untouched
    np.testing.assert_array_equal(task.labels, clean.labels)
    for part in ("test", "proxy", "labelled"):
        np.testing.assert_array_equal(getattr(task, part).indices, getattr(clean, part).indices)
        np.testing.assert_array_equal(getattr(task, part).mask, getattr(clean, part).mask)
        assert getattr(task, part).labels_store is task.labels
    record = task.data_summary()["scenarios"]
    assert record == again.data_summary()["scenarios"]
    dropped = flipped = modality_dropped = 0
    for c, c0, c1 in zip(task.clients, clean.clients, again.clients, strict=True):
        assert len(c.train) == c.spec.n_train == len(c0.train) - int(0.3 * len(c0.train))
        assert set(c.train.indices) <= set(c0.train.indices)
        np.testing.assert_array_equal(c.val.indices, c0.val.indices)  # validation samples untouched
        np.testing.assert_array_equal(c.train.indices, c1.train.indices)
        np.testing.assert_array_equal(c.train.labels, c1.train.labels)
        np.testing.assert_array_equal(c.train.mask, c1.train.mask)
        dropped += len(c0.train) - len(c.train)
        flipped += int((c.train.labels != task.labels[c.train.indices]).sum())
        assert c.train.mask.any(axis=1).all()
        before = c0.train.mask[np.isin(c0.train.indices, c.train.indices)]
        assert not (c.train.mask & ~before).any()  # a modality can only be lost
        if len(c.spec.modalities) == 1:
            assert (c.train.mask == before).all()  # single-modality clients keep every sample
        modality_dropped += int(before.sum() - c.train.mask.sum())
    assert (record["labels_dropped"], record["labels_flipped"]) == (dropped, flipped)
    assert record["modality_samples_dropped"] == modality_dropped > 0
    assert 0.15 * record["modality_samples"] < modality_dropped < 0.6 * record["modality_samples"]
    assert any(
        not np.array_equal(a.train.indices, b.train.indices)
        for a, b in zip(task.clients, other.clients, strict=True)
    )


def test_defaults_leave_the_task_and_summary_as_before(tiny_cfg: RunConfig) -> None:
    task = build_task(tiny_cfg)
    assert "scenarios" not in task.data_summary()
    assert all(c.train.labels_store is task.labels for c in task.clients)


def test_noisy_labels_reach_node_folders_and_the_pooled_view(tiny_cfg: RunConfig, tmp_path) -> None:
    task = _task(tiny_cfg, ["task.label_noise_rate=0.5"])
    client = task.clients[0]
    assert (client.train.labels != task.labels[client.train.indices]).any()
    node = load_node(str(export_node(task, [client.spec.id], tmp_path / "node")))
    hosted = node.clients[0]
    np.testing.assert_array_equal(hosted.train.labels, client.train.labels)
    np.testing.assert_array_equal(hosted.test.labels, client.test.labels)  # clean
    pooled = task.pooled_train()
    np.testing.assert_array_equal(pooled.labels[: len(client.train)], client.train.labels)


# --------------------------------------------------------------------------------------- training


def _fit(cfg: RunConfig, task: Task, data: ClientData) -> dict[str, np.ndarray]:
    settings = settings_from_config(cfg, task.info, len(task.clients))
    client = FedAvgClient(settings)
    sent = Message(to_arrays(client.slot.fresh()))
    reply, _ = client.fit(sent, Message(), data, Rng(cfg.seed, 1, data.spec.id))
    return reply.arrays


def _poison(array: np.ndarray) -> np.ndarray:
    """Other values of the same dtype and range: NaN for floats, mirrored within the range for integers."""
    if np.issubdtype(array.dtype, np.floating):
        return np.full_like(array, np.nan)
    return (array.max() + array.min() - array).astype(array.dtype)


def _poisoned(data: ClientData, samples: np.ndarray, modality: np.ndarray) -> ClientData:
    """``data`` over a store copy where modality ``modality[k]`` of store row ``samples[k]`` is poisoned."""
    train = data.train
    store = {name: array.copy() for name, array in train.store.items()}
    names = train.info.modality_names
    for i, j in zip(samples, modality, strict=True):
        store[names[j]][i] = _poison(store[names[j]][i])
    view = View(train.info, store, train.labels_store, train.indices, train.mask)
    return ClientData(data.spec, view, data.val, data.test)


def test_a_dropped_modality_never_reaches_the_model(tiny_cfg: RunConfig) -> None:
    cfg = with_overrides(tiny_cfg, ["clients.sample_drop_rate=0.5", "model.fusion=attention"])
    task = build_task(cfg)
    data = next(c for c in task.clients if len(c.spec.modalities) == 2)
    rows, cols = np.nonzero(~data.train.mask)
    assert len(rows) > 0
    reference = _fit(cfg, task, data)
    poisoned = _fit(cfg, task, _poisoned(data, data.train.indices[rows], cols))
    assert reference.keys() == poisoned.keys()
    for name in reference:
        np.testing.assert_array_equal(reference[name], poisoned[name])
    # the check can fail: poisoning one modality a sample still holds does reach the model
    kept_rows, kept_cols = np.nonzero(data.train.mask)
    touched = _fit(cfg, task, _poisoned(data, data.train.indices[kept_rows[:1]], kept_cols[:1]))
    assert any(not np.array_equal(reference[n], touched[n]) for n in reference)


def test_supervised_training_never_sees_an_unlabelled_sample(tiny_cfg: RunConfig) -> None:
    cfg = with_overrides(tiny_cfg, ["task.label_missing_rate=0.5"])
    task, clean = build_task(cfg), build_task(tiny_cfg)
    data, full = task.clients[-1], clean.clients[-1]
    unlabelled = np.setdiff1d(full.train.indices, data.train.indices)
    assert len(unlabelled) == int(0.5 * len(full.train)) and not np.isin(unlabelled, data.train.indices).any()
    # every modality of every unlabelled sample poisoned: the client's update does not change
    rows, cols = np.nonzero(full.train.mask[np.isin(full.train.indices, unlabelled)])
    reference = _fit(cfg, task, data)
    after = _fit(cfg, task, _poisoned(data, unlabelled[rows], cols))
    for name in reference:
        np.testing.assert_array_equal(reference[name], after[name])
    assert _fit(cfg, task, data)["head.1.weight"].shape == reference["head.1.weight"].shape


# ------------------------------------------------------------------------------------ bad values


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("task.label_missing_rate", "-0.1"),
        ("task.label_noise_rate", "1"),
        ("clients.sample_drop_rate", "1.5"),
        ("task.label_noise_rate", "'lots'"),
    ],
)
def test_bad_rates_are_one_line_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"{key}={value}"])
    assert len(str(err.value).splitlines()) == 1
    assert str(err.value).startswith(f"{key}:")


def test_algorithms_that_cannot_honour_sample_masks_refuse_the_option() -> None:
    for name in ("gvf", "fedcmi", "fedmekt"):
        with pytest.raises(ConfigError) as err:
            load_config(None, ["clients.sample_drop_rate=0.2", f"algorithm.name={name}", "compare=[]"])
        assert str(err.value).startswith("clients.sample_drop_rate:") and name in str(err.value)
        assert len(str(err.value).splitlines()) == 1
    with pytest.raises(ConfigError, match=r"clients\.sample_drop_rate: 'gvf'"):
        load_config(None, ["clients.sample_drop_rate=0.2", 'compare=["local", "gvf"]'])
    for name in ("fedavg", "fedprox", "fedopt", "scaffold", "moon", "local", "centralized"):
        load_config(None, ["clients.sample_drop_rate=0.2", f"algorithm.name={name}", "compare=[]"])
