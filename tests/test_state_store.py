"""ClientStateStore: versioned client states on disk with a bounded in-memory cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedmosaic.core.message import Message
from fedmosaic.engines.state_store import ClientStateStore


def state(value: float, round: int) -> Message:
    return Message.of({"w": np.full((2, 3), value, np.float32), "n": np.arange(4)}, round=round, tag="s")


def files(root: Path, client: str) -> list[str]:
    folder = root / client
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def assert_state(message: Message, value: float, round: int) -> None:
    np.testing.assert_array_equal(message.arrays["w"], np.full((2, 3), value, np.float32))
    assert message.arrays["w"].dtype == np.float32
    np.testing.assert_array_equal(message.arrays["n"], np.arange(4))
    assert message.meta == {"round": round, "tag": "s"}


@pytest.mark.parametrize("cache_size", [64, 1, 0])
def test_put_get_round_trip(tmp_path: Path, cache_size: int) -> None:
    store = ClientStateStore(tmp_path, cache_size=cache_size)
    store.put("client_0", 1, state(1.5, 1))
    store.put("client_1", 1, state(-2.0, 1))
    assert_state(store.get("client_0"), 1.5, 1)
    assert_state(store.get("client_1"), -2.0, 1)
    assert files(tmp_path, "client_0") == ["r00001.safetensors"]
    # A fresh store over the same folder (a resumed process) sees the same states.
    reopened = ClientStateStore(tmp_path, cache_size=cache_size)
    assert_state(reopened.get("client_0"), 1.5, 1)
    assert_state(reopened.get("client_1"), -2.0, 1)


def test_unknown_client_gets_empty_message(tmp_path: Path) -> None:
    store = ClientStateStore(tmp_path)
    got = store.get("nobody")
    assert isinstance(got, Message)
    assert got.is_empty()
    assert not (tmp_path / "nobody").exists()


def test_cache_size_zero_reads_from_disk(tmp_path: Path) -> None:
    store = ClientStateStore(tmp_path, cache_size=0)
    store.put("c", 1, state(3.0, 1))
    assert store._cache == {}
    # Change the file behind the store's back: a store without a cache must see it.
    other = ClientStateStore(tmp_path, cache_size=0)
    other.put("c", 2, state(4.0, 2))
    assert_state(store.get("c"), 4.0, 2)
    assert store._cache == {}


def test_cache_serves_without_disk_and_is_bounded(tmp_path: Path) -> None:
    store = ClientStateStore(tmp_path, cache_size=2)
    for k in range(3):
        store.put(f"c{k}", 1, state(float(k), 1))
    assert list(store._cache) == ["c1", "c2"]
    assert_state(store.get("c0"), 0.0, 1)  # evicted: read back from disk
    assert list(store._cache) == ["c2", "c0"]
    (tmp_path / "c2" / "r00001.safetensors").unlink()
    assert_state(store.get("c2"), 2.0, 1)  # cached: no disk read


def test_versions_keep_the_states_two_checkpoints_back(tmp_path: Path) -> None:
    """A state of round r is kept with round r - 1's and the newest one before that (what a damaged
    checkpoint of round r - 1 falls back to); older ones go."""
    store = ClientStateStore(tmp_path)
    store.put("c", 1, state(1.0, 1))
    assert files(tmp_path, "c") == ["r00001.safetensors"]
    store.put("c", 2, state(2.0, 2))
    assert files(tmp_path, "c") == ["r00001.safetensors", "r00002.safetensors"]
    store.put("c", 3, state(3.0, 3))
    assert files(tmp_path, "c") == ["r00001.safetensors", "r00002.safetensors", "r00003.safetensors"]
    store.put("c", 4, state(4.0, 4))
    assert files(tmp_path, "c") == ["r00002.safetensors", "r00003.safetensors", "r00004.safetensors"]
    store.put("d", 1, state(1.0, 1))
    store.put("d", 4, state(4.0, 4))  # idle in rounds 2-3: round 1's state is its state after round 2
    assert files(tmp_path, "d") == ["r00001.safetensors", "r00004.safetensors"]
    store.put("d", 6, state(6.0, 6))
    assert files(tmp_path, "d") == ["r00004.safetensors", "r00006.safetensors"]
    assert_state(store.get("c"), 4.0, 4)
    assert_state(ClientStateStore(tmp_path, cache_size=0).get("c"), 4.0, 4)
    store.rollback(3)  # a damaged checkpoint of round 4 fell back to round 3
    assert_state(store.get("c"), 3.0, 3)


def test_rollback_restores_committed_round(tmp_path: Path) -> None:
    store = ClientStateStore(tmp_path)
    for r in (1, 2, 3):
        store.put("c", r, state(float(r), r))
    store.put("d", 3, state(30.0, 3))  # a client first seen in the interrupted round
    store.rollback(2)
    assert files(tmp_path, "c") == ["r00001.safetensors", "r00002.safetensors"]
    assert_state(store.get("c"), 2.0, 2)
    assert not (tmp_path / "d").exists()
    assert store.get("d").is_empty()


def test_rollback_on_missing_root_is_a_no_op(tmp_path: Path) -> None:
    store = ClientStateStore(tmp_path / "never-created")
    store.rollback(5)
    assert not (tmp_path / "never-created").exists()


def test_rewrite_same_round_after_rollback(tmp_path: Path) -> None:
    store = ClientStateStore(tmp_path)
    store.put("c", 1, state(1.0, 1))
    store.put("c", 2, state(2.0, 2))
    store.rollback(1)
    assert_state(store.get("c"), 1.0, 1)
    store.put("c", 2, state(22.0, 2))
    assert_state(store.get("c"), 22.0, 2)
    assert files(tmp_path, "c") == ["r00001.safetensors", "r00002.safetensors"]


def test_empty_state_for_new_client_writes_no_file(tmp_path: Path) -> None:
    store = ClientStateStore(tmp_path)
    store.put("fresh", 1, Message())
    assert not (tmp_path / "fresh").exists()
    assert store.get("fresh").is_empty()
    assert ClientStateStore(tmp_path, cache_size=0).get("fresh").is_empty()


def test_empty_state_after_a_real_one_is_recorded(tmp_path: Path) -> None:
    store = ClientStateStore(tmp_path, cache_size=0)
    store.put("c", 1, state(1.0, 1))
    store.put("c", 2, Message())
    assert "r00002.safetensors" in files(tmp_path, "c")
    assert store.get("c").is_empty()
