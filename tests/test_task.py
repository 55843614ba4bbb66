"""Task assembly: disjoint splits from the seed, modality masks, views and their batches."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fedmosaic.config import RunConfig, load_config
from fedmosaic.core.modality import Modality
from fedmosaic.core.task import Task, TaskInfo, View
from fedmosaic.data.tasks import build_task

N_SAMPLES = 400


def parts_of(task: Task) -> dict[str, np.ndarray]:
    parts = {"proxy": task.proxy.indices, "labelled": task.labelled.indices, "test": task.test.indices}
    for c in task.clients:
        parts[f"{c.spec.id}/train"] = c.train.indices
        parts[f"{c.spec.id}/val"] = c.val.indices
    return parts


def assert_partition(task: Task, n: int) -> None:
    task.check_disjoint()
    parts = parts_of(task)
    for name, idx in parts.items():
        assert len(set(idx.tolist())) == len(idx), f"{name} repeats a sample"
    for (a, ia), (b, ib) in itertools.combinations(parts.items(), 2):
        assert not set(ia.tolist()) & set(ib.tolist()), f"{a} and {b} overlap"
    union = set().union(*(set(idx.tolist()) for idx in parts.values()))
    assert union == set(range(n))
    assert sum(len(idx) for idx in parts.values()) == n


@pytest.fixture
def task(tiny_cfg: RunConfig) -> Task:
    return build_task(tiny_cfg)


def test_parts_are_disjoint_and_cover_every_sample(task: Task) -> None:
    assert len(task.labels) == N_SAMPLES
    assert_partition(task, N_SAMPLES)
    assert len(task.proxy) == 40
    assert len(task.labelled) == 40
    assert len(task.test) == round(0.2 * N_SAMPLES)


def test_clients_split_train_and_val(task: Task) -> None:
    assert len(task.clients) == 10
    for c in task.clients:
        total = len(c.train) + len(c.val)
        assert len(c.val) == round(0.1 * total)
        assert len(c.train) > 0
        assert c.spec.n_train == len(c.train)
        np.testing.assert_array_equal(c.train.labels, task.labels[c.train.indices])
    sizes = [len(c.train) + len(c.val) for c in task.clients]
    assert max(sizes) - min(sizes) <= 1  # IID deals near-equal parts
    assert len(task.pooled_train()) == sum(len(c.train) for c in task.clients)
    assert task.client("client_3") is task.clients[3]
    with pytest.raises(KeyError):
        task.client("client_99")


def test_same_seed_same_split_different_seed_different(tiny_cfg: RunConfig) -> None:
    a, b = build_task(tiny_cfg), build_task(tiny_cfg)
    pa, pb = parts_of(a), parts_of(b)
    assert pa.keys() == pb.keys()
    for name in pa:
        np.testing.assert_array_equal(pa[name], pb[name], err_msg=name)
    for ca, cb in zip(a.clients, b.clients, strict=True):
        np.testing.assert_array_equal(ca.train.mask, cb.train.mask)
        assert ca.spec == cb.spec
    np.testing.assert_array_equal(a.labels, b.labels)
    for name in a.store:
        np.testing.assert_array_equal(a.store[name], b.store[name])

    c = build_task(tiny_cfg.model_copy(update={"seed": tiny_cfg.seed + 1}))
    pc = parts_of(c)
    assert_partition(c, N_SAMPLES)
    differing = [name for name in pa if not np.array_equal(pa[name], pc[name])]
    assert len(differing) >= len(pa) - 1, differing


def test_groups_follow_the_mix(task: Task) -> None:
    expected = ["image"] * 2 + ["text"] * 2 + ["image+text"] * 6
    assert [c.spec.group for c in task.clients] == expected
    assert [c.spec.id for c in task.clients] == [f"client_{k}" for k in range(10)]
    names = task.info.modality_names
    assert names == ("image", "text")
    for c in task.clients:
        held = set(c.spec.group.split("+"))
        assert c.spec.modalities == frozenset(held)
        for view in (c.train, c.val):
            assert view.mask.shape == (len(view), 2)
            for j, name in enumerate(names):
                assert view.mask[:, j].all() == (name in held)
                assert view.mask[:, j].any() == (name in held) or len(view) == 0
        assert c.train.modalities == frozenset(held)
        assert c.test.modalities == frozenset(held)
        np.testing.assert_array_equal(c.test.indices, task.test.indices)


def test_custom_mix() -> None:
    cfg = load_config(
        None,
        [
            "task.options.n_samples=400",
            "task.proxy_size=40",
            "task.labelled_size=40",
            'clients.mix={ "image+text" = 1, text = 3 }',
        ],
    )
    task = build_task(cfg)
    assert [c.spec.group for c in task.clients] == ["image+text", "text", "text", "text"]
    assert_partition(task, N_SAMPLES)


def batch_keys(view: View, batch_size: int = 8) -> list[set[str]]:
    return [set(inputs) for inputs, _ in view.batches(batch_size)]


def test_modality_mask_is_honoured_in_batches(task: Task) -> None:
    info = task.info
    image_shape = info.modality("image").shape
    text_shape = info.modality("text").shape
    seen_groups = set()
    for c in task.clients:
        held = set(c.spec.group.split("+"))
        seen_groups.add(c.spec.group)
        for view in (c.train, c.val, c.test):
            n_seen = 0
            for inputs, labels in view.batches(8, rng=np.random.default_rng(0)):
                assert set(inputs) == held, (c.spec.id, set(inputs))
                n_seen += len(labels)
                for name, tensor in inputs.items():
                    assert tensor.shape[0] == len(labels)
                    if name == "image":
                        assert tuple(tensor.shape[1:]) == image_shape
                        assert tensor.dtype.is_floating_point
                        assert float(tensor.min()) >= 0.0
                        assert float(tensor.max()) <= 1.0
                    else:
                        assert tuple(tensor.shape[1:]) == text_shape
                        assert not tensor.dtype.is_floating_point
            assert n_seen == len(view)
    assert seen_groups == {"image", "text", "image+text"}
    for view in (task.proxy, task.labelled, task.test):
        assert all(keys == {"image", "text"} for keys in batch_keys(view))


def test_view_restrict(task: Task) -> None:
    text_only = task.test.restrict(frozenset({"text"}))
    np.testing.assert_array_equal(text_only.indices, task.test.indices)
    assert not text_only.mask[:, 0].any()
    assert text_only.mask[:, 1].all()
    assert text_only.modalities == frozenset({"text"})
    assert all(keys == {"text"} for keys in batch_keys(text_only))
    assert task.test.modalities == frozenset({"image", "text"})  # the original is untouched

    image_client = task.clients[0]
    assert image_client.spec.group == "image"
    emptied = image_client.train.restrict(frozenset({"text"}))
    assert len(emptied) == 0
    assert list(emptied.batches(4)) == []
    same = image_client.train.restrict(frozenset({"image", "text"}))
    np.testing.assert_array_equal(same.indices, image_client.train.indices)
    np.testing.assert_array_equal(same.mask, image_client.train.mask)


# ------------------------------------------------------------------------------------ hand-built views


def id_view(mask_rows: list[tuple[bool, bool]], offset: int = 100) -> View:
    """A view whose two float modalities store each sample's own store index (to trace batches)."""
    info = TaskInfo(
        "ids", (Modality("a", "timeseries", (1,)), Modality("b", "timeseries", (1,))), 2, ("x", "y")
    )
    n_store = offset + len(mask_rows)
    ids = np.arange(n_store, dtype=np.float32).reshape(-1, 1)
    store = {"a": ids, "b": ids.copy()}
    labels = (np.arange(n_store) % 2).astype(np.int64)
    indices = np.arange(offset, n_store)
    return View(info, store, labels, indices, np.array(mask_rows, dtype=bool).reshape(-1, 2))


def traced(
    view: View, batch_size: int, rng: np.random.Generator | None = None, **kw: bool
) -> list[list[int]]:
    out = []
    for inputs, labels in view.batches(batch_size, rng=rng, **kw):
        assert 1 <= len(labels) <= batch_size
        key = next(iter(inputs))
        ids = inputs[key][:, 0].round().long().tolist()
        for other in inputs.values():  # every modality in a batch belongs to the same samples
            assert other[:, 0].round().long().tolist() == ids
        np.testing.assert_array_equal(labels.numpy(), np.array(ids) % 2)
        out.append(ids)
    return out


MIXED = [(True, True)] * 11 + [(True, False)] * 7 + [(False, True)] * 5


def test_batches_group_by_pattern_and_cover_each_sample_once() -> None:
    view = id_view(MIXED)
    for rng in (None, np.random.default_rng(3)):
        batches = traced(view, 4, rng)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == view.indices.tolist()
        for b in batches:
            rows = [view.indices.tolist().index(i) for i in b]
            patterns = {tuple(view.mask[r]) for r in rows}
            assert len(patterns) == 1
        for inputs, _ in view.batches(4, rng):
            assert "a" in inputs or "b" in inputs
    keysets = sorted(tuple(sorted(inputs)) for inputs, _ in view.batches(100))
    assert keysets == [("a",), ("a", "b"), ("b",)]


def test_batches_shuffle_deterministically() -> None:
    view = id_view(MIXED)
    plain = traced(view, 4)
    assert traced(view, 4) == plain
    first = traced(view, 4, np.random.default_rng(7))
    again = traced(view, 4, np.random.default_rng(7))
    other = traced(view, 4, np.random.default_rng(8))
    assert first == again
    assert first != plain
    assert first != other
    assert sorted(i for b in first for i in b) == sorted(i for b in other for i in b)


def test_batches_skip_rows_with_no_modality_and_reject_bad_size() -> None:
    view = id_view([(True, True), (False, False), (True, False), (False, False)])
    assert sorted(i for b in traced(view, 8) for i in b) == [100, 102]
    with pytest.raises(ValueError, match="batch_size"):
        next(view.batches(0))


def test_drop_singletons() -> None:
    # Pattern (a,b): 9 samples -> chunks 4,4,1; pattern (a): 1 sample; pattern (b): 2 samples.
    view = id_view([(True, True)] * 9 + [(True, False)] + [(False, True)] * 2)
    kept = traced(view, 4, np.random.default_rng(0), drop_singletons=True)
    assert sorted(len(b) for b in kept) == [2, 4, 4]
    assert all(len(b) >= 2 for b in kept)
    everything = traced(view, 4, np.random.default_rng(0))
    assert sorted(len(b) for b in everything) == [1, 1, 2, 4, 4]
    assert sum(len(b) for b in everything) == len(view)


def test_view_rejects_mismatched_mask() -> None:
    view = id_view([(True, True)] * 3)
    with pytest.raises(ValueError, match="mask shape"):
        View(view.info, view.store, view.labels_store, view.indices, np.ones((2, 2), dtype=bool))


def test_view_subset() -> None:
    view = id_view(MIXED)
    sub = view.subset(np.array([0, 12, 20]))
    assert sub.indices.tolist() == [100, 112, 120]
    np.testing.assert_array_equal(sub.mask, view.mask[[0, 12, 20]])


# ------------------------------------------------------------------------------------------- partition


def max_class_share(task: Task) -> float:
    shares = []
    for c in task.clients:
        counts = np.bincount(c.train.labels, minlength=task.info.num_classes)
        shares.append(counts.max() / counts.sum())
    return float(np.mean(shares))


def test_dirichlet_partition_is_skewed_and_leaves_no_client_empty(tiny_cfg: RunConfig) -> None:
    iid = build_task(tiny_cfg)
    skew_cfg = tiny_cfg.model_copy(
        update={"task": tiny_cfg.task.model_copy(update={"partition": "dirichlet", "alpha": 0.1})}
    )
    skewed = build_task(skew_cfg)
    assert_partition(skewed, N_SAMPLES)
    for c in skewed.clients:
        assert len(c.train) + len(c.val) >= 3
        assert len(c.train) >= 2
    sizes = [len(c.train) + len(c.val) for c in skewed.clients]
    assert max(sizes) > 2 * min(sizes)  # unlike IID's near-equal parts
    assert max_class_share(skewed) > 0.5
    assert max_class_share(skewed) > max_class_share(iid) + 0.2
    again = build_task(skew_cfg)
    for ca, cb in zip(skewed.clients, again.clients, strict=True):
        np.testing.assert_array_equal(ca.train.indices, cb.train.indices)


def test_dirichlet_config_override_path() -> None:
    cfg = load_config(
        None,
        [
            "task.options.n_samples=400",
            "task.proxy_size=40",
            "task.labelled_size=40",
            "task.partition=dirichlet",
            "task.alpha=0.1",
        ],
    )
    task = build_task(cfg)
    assert_partition(task, N_SAMPLES)
    assert all(len(c.train) > 0 for c in task.clients)


# ---------------------------------------------------------------------------------------- check_disjoint


def test_check_disjoint_raises_on_overlap(task: Task) -> None:
    task.check_disjoint()
    shared = int(task.test.indices[0])
    client = task.clients[4]
    client.val.indices = np.append(client.val.indices, shared)
    with pytest.raises(ValueError, match=rf"sample {shared} is in both"):
        task.check_disjoint()


def test_check_disjoint_raises_on_proxy_labelled_overlap(task: Task) -> None:
    task.labelled.indices = task.labelled.indices.copy()
    task.labelled.indices[-1] = task.proxy.indices[0]
    with pytest.raises(ValueError, match="proxy"):
        task.check_disjoint()


def test_check_disjoint_raises_on_duplicate_within_a_part(task: Task) -> None:
    train = task.clients[0].train
    train.indices = np.append(train.indices, train.indices[0])
    with pytest.raises(ValueError, match="twice"):
        task.check_disjoint()
