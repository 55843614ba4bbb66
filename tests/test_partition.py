"""Partitioning and splitting: property tests on a registered toy data set with owners, blocks, roles
and per-sample modality presence (the structure real loaders return)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from fedmosaic.config import ConfigError, load_config
from fedmosaic.core.modality import Modality
from fedmosaic.data.partition import drop_modalities, parse_mix, split_natural, take_blocks
from fedmosaic.data.registry import (
    ROLE_TEST,
    ROLE_VAL,
    DatasetEntry,
    LoadContext,
    LoadedData,
    register_dataset,
)
from fedmosaic.data.tasks import TaskSplitError, build_task


class ToyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    owners: int = 6
    blocks_per_owner: int = 8
    block_size: int = 5
    fixed_test_owner: bool = False
    fixed_val: bool = False
    missing_b_owner: int = -1  # this owner's samples have no "b" modality
    kind: Literal["timeseries", "image"] = "timeseries"


def _toy_load(options: BaseModel, ctx: LoadContext) -> LoadedData:
    assert isinstance(options, ToyOptions)
    n = options.owners * options.blocks_per_owner * options.block_size
    rng = np.random.default_rng(ctx.seed)
    blocks = np.repeat(np.arange(n // options.block_size), options.block_size)
    groups = blocks // options.blocks_per_owner
    role = np.zeros(n, dtype=np.int8)
    if options.fixed_test_owner:
        role[groups == options.owners - 1] = ROLE_TEST
    if options.fixed_val:
        role[(blocks % options.blocks_per_owner == 0) & (role == 0)] = ROLE_VAL
    present = np.ones((n, 2), dtype=bool)
    present[groups == options.missing_b_owner, 1] = False
    # Channel 0 of "a" has mean 5 and std 3 so standardisation is visible.
    a = (5 + 3 * rng.standard_normal((n, 2, 16))).astype(np.float32)
    return LoadedData(
        modalities=(Modality("a", "timeseries", (2, 16)), Modality("b", "timeseries", (1, 16))),
        store={"a": a, "b": rng.standard_normal((n, 1, 16)).astype(np.float32)},
        labels=(blocks % 3).astype(np.int64),
        class_names=("x", "y", "z"),
        groups=groups,
        group_names=tuple(f"owner {k}" for k in range(options.owners)),
        blocks=blocks,
        role=role,
        present=present,
    )


register_dataset(
    DatasetEntry("toy-blocks", ToyOptions, lambda _: ("a", "b"), _toy_load, natural_unit="owner")
)

BASE = ["task.dataset=toy-blocks", "compare=[]", "rounds=1", "engine.progress=false", 'clients.mix=""']


def _task(*overrides: str):
    return build_task(load_config(None, [*BASE, *overrides]))


def _parts(task) -> dict[str, np.ndarray]:
    parts = {"test": task.test.indices, "proxy": task.proxy.indices, "labelled": task.labelled.indices}
    for c in task.clients:
        parts[c.spec.id] = np.concatenate([c.train.indices, c.val.indices])
    return parts


def _block_owner(task, blocks: np.ndarray, clients_apart: bool) -> dict[int, str]:
    """Which part each block is in; raises if a block straddles two parts. Under IID/Dirichlet a block
    may be shared by two clients (both train on it: no leak), never by a client and a server set."""
    owner: dict[int, str] = {}
    for name, idx in _parts(task).items():
        part = name if clients_apart or name in ("test", "proxy", "labelled") else "clients"
        for b in np.unique(blocks[idx]).tolist():
            assert owner.setdefault(b, part) == part, f"block {b} is in {owner[b]} and {part}"
    return owner


def test_take_blocks_keeps_blocks_whole_and_reaches_size() -> None:
    blocks = np.repeat(np.arange(20), 7)
    candidates = np.arange(len(blocks))
    taken, rest = take_blocks(candidates, blocks, 30, np.random.default_rng(0))
    assert 30 <= len(taken) < 37
    assert not set(blocks[taken]) & set(blocks[rest])
    assert sorted([*taken, *rest]) == candidates.tolist()
    none, everything = take_blocks(candidates, blocks, 0, np.random.default_rng(0))
    assert len(none) == 0 and len(everything) == len(candidates)


@given(
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=30),
    want=st.integers(0, 200),
    seed=st.integers(0, 2**16),
)
def test_take_blocks_property(sizes: list[int], want: int, seed: int) -> None:
    blocks = np.repeat(np.arange(len(sizes)), sizes)
    candidates = np.arange(len(blocks))
    taken, rest = take_blocks(candidates, blocks, want, np.random.default_rng(seed))
    assert not set(blocks[taken].tolist()) & set(blocks[rest].tolist())
    assert len(taken) + len(rest) == len(candidates)
    if want >= len(candidates):
        assert len(rest) == 0
    elif want > 0:
        assert want <= len(taken) < want + max(sizes)


@given(
    n=st.integers(1, 60),
    names=st.sampled_from([("a",), ("a", "b"), ("acc", "gyro", "mag")]),
    rate=st.floats(0, 0.99),
    seed=st.integers(0, 2**16),
)
def test_drop_rate_never_drops_everything(n: int, names: tuple[str, ...], rate: float, seed: int) -> None:
    held = drop_modalities(n, names, rate, np.random.default_rng(seed))
    assert len(held) == n
    assert all(h and h <= set(names) for h in held)
    assert held == drop_modalities(n, names, rate, np.random.default_rng(seed))


def test_drop_rate_matches_its_probability() -> None:
    held = drop_modalities(4000, ("a", "b"), 0.3, np.random.default_rng(1))
    full = sum(h == {"a", "b"} for h in held) / len(held)
    assert abs(full - 0.49) < 0.03  # both kept: 0.7^2; all-dropped clients are re-assigned a single one


def test_each_and_all_expand_for_any_modalities() -> None:
    assert parse_mix({"each": 2, "all": 6}, ("acc", "gyro")) == [
        (frozenset({"acc"}), 2),
        (frozenset({"gyro"}), 2),
        (frozenset({"acc", "gyro"}), 6),
    ]
    assert parse_mix({"each": 2, "all": 3}, ("x",)) == [(frozenset({"x"}), 5)]
    with pytest.raises(ValueError, match="listed twice"):
        parse_mix({"each": 1, "acc": 1}, ("acc", "gyro"))


def test_split_natural_one_part_per_owner() -> None:
    groups = np.array([2, 0, 2, 1, 0, 2])
    owners, parts = split_natural(np.array([0, 1, 2, 4, 5]), groups)
    assert owners == [0, 2]
    assert [p.tolist() for p in parts] == [[1, 4], [0, 2, 5]]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 1000),
    partition=st.sampled_from(["iid", "dirichlet", "natural"]),
    mix=st.sampled_from(["a:1,b:1,a+b:4", "each:2,all:2", None]),
    block_size=st.integers(1, 6),
)
def test_split_properties(seed: int, partition: str, mix: str | None, block_size: int) -> None:
    """Parts are disjoint, whole blocks stay in one part, no client is empty, the mix is honoured,
    and the same seed gives the same split."""
    overrides = [f"seed={seed}", f"task.partition={partition}", f"task.options.block_size={block_size}"]
    overrides.append("clients.mix=" + (mix or '""'))
    try:
        task = _task(*overrides)
    except TaskSplitError as exc:
        assert "clients" in str(exc) or "task." in str(exc)
        return
    task.check_disjoint()
    loaded = _toy_load(ToyOptions(block_size=block_size), LoadContext(seed=seed))
    _block_owner(task, loaded.blocks, clients_apart=partition == "natural")
    assert all(len(c.train) > 0 for c in task.clients)
    groups = [c.spec.group for c in task.clients]
    if mix == "a:1,b:1,a+b:4" or mix == "each:2,all:2":
        expected = {"a": 1, "b": 1, "a+b": 4} if mix.startswith("a:") else {"a": 2, "b": 2, "a+b": 2}
        assert {g: groups.count(g) for g in set(groups)} == expected
    for c in task.clients:
        held = [j for j, m in enumerate(task.info.modality_names) if m in c.spec.modalities]
        assert c.train.mask[:, held].all() and not np.delete(c.train.mask, held, axis=1).any()
    again = _task(*overrides)
    assert all(
        np.array_equal(a.train.indices, b.train.indices) and a.spec == b.spec
        for a, b in zip(task.clients, again.clients, strict=True)
    )
    assert np.array_equal(task.test.indices, again.test.indices)


def test_natural_split_one_client_per_owner_named_after_it() -> None:
    task = _task(
        "task.partition=natural", "task.test_fraction=0.1", "task.proxy_size=10", "task.labelled_size=10"
    )
    assert [c.spec.id for c in task.clients] == [f"owner_{k}" for k in range(6)]
    loaded = _toy_load(ToyOptions(), LoadContext())
    for c in task.clients:
        owner = int(c.spec.id.split("_")[1])
        assert set(loaded.groups[c.train.indices].tolist()) == {owner}


def test_natural_split_count_mismatch_names_the_key() -> None:
    with pytest.raises(
        TaskSplitError, match=r"clients.mix: the natural split of 'toy-blocks' gives 6 clients.*asks for 3"
    ):
        _task("task.partition=natural", "clients.mix=each:1,all:1")


def test_natural_needs_owners() -> None:
    with pytest.raises(ConfigError, match=r"task.partition: data set 'synthetic' has no natural clients"):
        load_config(None, ["task.partition=natural"])


def test_fixed_roles_are_respected() -> None:
    task = _task(
        "task.partition=natural", "task.options.fixed_test_owner=true", "task.options.fixed_val=true"
    )
    loaded = _toy_load(ToyOptions(fixed_test_owner=True, fixed_val=True), LoadContext())
    assert set(task.test.indices.tolist()) == set(np.flatnonzero(loaded.role == ROLE_TEST).tolist())
    assert len(task.clients) == 5  # the test owner is not a client
    for c in task.clients:
        assert (loaded.role[c.val.indices] == ROLE_VAL).all()
        assert (loaded.role[c.train.indices] != ROLE_VAL).all()


def test_absent_modalities_stay_absent() -> None:
    task = _task("task.partition=natural", "task.options.missing_b_owner=2")
    owner2 = next(c for c in task.clients if c.spec.id == "owner_2")
    assert not owner2.train.mask[:, 1].any()
    for inputs, _ in owner2.train.batches(8):
        assert set(inputs) == {"a"}


def test_a_client_without_its_modalities_is_an_error() -> None:
    # owner 2 has no "b"; with every client b-only, owner 2 would be empty
    with pytest.raises(TaskSplitError, match="owner_2 holds b but none of its samples"):
        _task("task.partition=natural", "task.options.missing_b_owner=2", "clients.mix=b:6")


def test_standardisation_uses_client_data_only() -> None:
    task = _task()
    train = np.concatenate([c.train.indices for c in task.clients] + [c.val.indices for c in task.clients])
    a = task.store["a"][train]
    assert np.allclose(a.mean(axis=(0, 2)), 0, atol=1e-4)
    assert np.allclose(a.std(axis=(0, 2)), 1, atol=1e-3)
    stats = task.extras["normalisation"]["a"]
    assert stats["mean"][0] == pytest.approx(5, abs=0.2) and stats["std"][0] == pytest.approx(3, abs=0.2)
    # the test set was not used: its own mean is not forced to 0 exactly
    assert not np.allclose(task.store["a"][task.test.indices].mean(axis=(0, 2)), 0, atol=1e-6)


def test_drop_rate_config() -> None:
    task = _task('clients.mix=""', "clients.drop_rate=0.5", "clients.count=20")
    assert len(task.clients) == 20
    assert {c.spec.group for c in task.clients} <= {"a", "b", "a+b"}
    assert len({c.spec.group for c in task.clients}) > 1
    with pytest.raises(ConfigError, match=r"clients.drop_rate: give either clients.mix or clients.drop_rate"):
        load_config(None, ["clients.drop_rate=0.5"])  # the default config has a mix
