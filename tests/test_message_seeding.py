"""Message, checkpoint I/O, derived seeding and client sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedmosaic.core import checkpoint
from fedmosaic.core.algorithm import sample_clients
from fedmosaic.core.checkpoint import atomic_write_bytes, atomic_write_json, load_message, save_message
from fedmosaic.core.message import Message
from fedmosaic.core.modality import ClientSpec
from fedmosaic.core.seeding import SERVER, Rng, numpy_rng, torch_seed

DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_]

# ---------------------------------------------------------------------------------------------- Message


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.text(alphabet="abcdefgh._", min_size=1, max_size=8),
        hnp.arrays(
            dtype=st.sampled_from(DTYPES),
            shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
        ),
        max_size=6,
    ),
    st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5) | st.booleans(), max_size=4),
)
def test_nbytes_is_exact_sum_of_array_bytes(arrays: dict[str, np.ndarray], meta: dict) -> None:
    message = Message(arrays, meta)
    expected = sum(
        int(np.prod(a.shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize for a in arrays.values()
    )
    assert message.nbytes == expected
    assert isinstance(message.nbytes, int)


def test_nbytes_known_values_and_meta_not_counted() -> None:
    message = Message.of(
        {"w": np.zeros((3, 4), np.float32), "b": np.zeros(5, np.float64), "i": np.zeros((2, 2), np.int8)},
        note="x" * 1000,
        step=7,
    )
    assert message.nbytes == 3 * 4 * 4 + 5 * 8 + 4 * 1
    assert Message().nbytes == 0
    assert Message().is_empty()
    assert not Message.of(step=1).is_empty()
    assert not Message.of({"a": np.zeros(0)}).is_empty()


def test_nbytes_counts_views_by_their_own_size() -> None:
    base = np.zeros((10, 10), np.float64)
    assert Message({"v": base[::2, :3]}).nbytes == 5 * 3 * 8


@pytest.mark.parametrize(
    "bad",
    [[1.0, 2.0], (1, 2), 3.0, torch.zeros(3), None],
    ids=["list", "tuple", "float", "torch", "none"],
)
def test_message_rejects_non_numpy_arrays(bad: object) -> None:
    with pytest.raises(TypeError, match=r"Message\.arrays\['x'\]"):
        Message({"x": bad})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "bad",
    [{"a": 1}, [1, 2], (1,), None, np.zeros(2), b"bytes"],
    ids=["dict", "list", "tuple", "none", "ndarray", "bytes"],
)
def test_message_rejects_non_flat_meta(bad: object) -> None:
    with pytest.raises(TypeError, match=r"Message\.meta\['k'\]"):
        Message({}, {"k": bad})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        Message.of(None, k=bad)  # type: ignore[arg-type]


def test_message_select_by_prefix() -> None:
    message = Message.of({"enc.image.w": np.zeros(1), "enc.text.w": np.zeros(2), "head.w": np.zeros(3)})
    assert set(message.select(("enc.image.", "head."))) == {"enc.image.w", "head.w"}
    assert message.select(("nothing",)) == {}


# ------------------------------------------------------------------------------------------- checkpoint


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_save_load_message_round_trips_arrays(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(0)
    if dtype is np.bool_:
        value = rng.random((3, 5)) > 0.5
    elif np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        value = rng.integers(info.min, info.max, size=(3, 5), dtype=dtype, endpoint=True)
    else:
        value = rng.standard_normal((3, 5)).astype(dtype)
    message = Message.of({"x": value, "empty": np.zeros((0, 4), dtype=dtype)})
    path = tmp_path / "m.safetensors"
    save_message(path, message)
    loaded = load_message(path)
    assert set(loaded.arrays) == {"x", "empty"}
    assert loaded.arrays["x"].dtype == np.dtype(dtype)
    assert loaded.arrays["x"].shape == (3, 5)
    np.testing.assert_array_equal(loaded.arrays["x"], value)
    assert loaded.arrays["empty"].shape == (0, 4)
    assert loaded.arrays["empty"].dtype == np.dtype(dtype)
    assert loaded.nbytes == message.nbytes


def test_save_load_message_non_contiguous_arrays(tmp_path: Path) -> None:
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    message = Message.of({"t": base.T, "s": base[:, ::2], "f": np.asfortranarray(base)})
    save_message(tmp_path / "m.safetensors", message)
    loaded = load_message(tmp_path / "m.safetensors")
    for name, value in message.arrays.items():
        assert loaded.arrays[name].shape == value.shape
        np.testing.assert_array_equal(loaded.arrays[name], value)


def test_save_load_message_keeps_meta_types(tmp_path: Path) -> None:
    meta = {"i": 3, "neg": -12, "f": 2.0, "g": 0.125, "s": "image+text", "t": True, "u": False, "e": ""}
    save_message(tmp_path / "m.safetensors", Message({"a": np.ones(2, np.float32)}, dict(meta)))
    loaded = load_message(tmp_path / "m.safetensors")
    assert loaded.meta == meta
    for key, value in meta.items():
        assert type(loaded.meta[key]) is type(value), key


def test_save_load_empty_message(tmp_path: Path) -> None:
    save_message(tmp_path / "e.safetensors", Message())
    loaded = load_message(tmp_path / "e.safetensors")
    assert loaded.arrays == {}
    assert loaded.meta == {}
    assert loaded.is_empty()


def test_save_load_meta_only_message(tmp_path: Path) -> None:
    save_message(tmp_path / "m.safetensors", Message.of(round=4, loss=0.5))
    loaded = load_message(tmp_path / "m.safetensors")
    assert loaded.arrays == {}
    assert loaded.meta == {"round": 4, "loss": 0.5}


def test_save_load_message_keeps_zero_dim_shape(tmp_path: Path) -> None:
    # A 0-d array is a realistic state entry: torch's BatchNorm `num_batches_tracked` buffer is one.
    message = Message.of({"count": np.array(7, dtype=np.int64), "scale": np.array(0.5, dtype=np.float32)})
    save_message(tmp_path / "m.safetensors", message)
    loaded = load_message(tmp_path / "m.safetensors")
    assert loaded.arrays["count"].shape == ()
    assert loaded.arrays["scale"].shape == ()


def test_save_message_creates_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "m.safetensors"
    save_message(path, Message.of({"x": np.arange(3)}))
    np.testing.assert_array_equal(load_message(path).arrays["x"], np.arange(3))


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")
    atomic_write_bytes(path, b"new contents")
    assert path.read_bytes() == b"new contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_atomic_write_json_is_sorted_and_readable(tmp_path: Path) -> None:
    import json

    atomic_write_json(tmp_path / "x.json", {"b": 1, "a": [1, 2]})
    text = (tmp_path / "x.json").read_text()
    assert json.loads(text) == {"b": 1, "a": [1, 2]}
    assert text.index('"a"') < text.index('"b"')
    assert text.endswith("\n")


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_atomic_write_failure_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "state.safetensors"
    path.write_bytes(b"old contents")

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(f"simulated {failing} failure")

    monkeypatch.setattr(checkpoint.os, failing, boom)
    with pytest.raises(OSError, match="simulated"):
        atomic_write_bytes(path, b"new contents that must never be seen")
    monkeypatch.undo()
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.safetensors"]


def test_atomic_write_failure_on_new_file_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # BaseException: Ctrl-C mid-write must clean up too

    monkeypatch.setattr(checkpoint.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        save_message(tmp_path / "m.safetensors", Message.of({"x": np.ones(3)}))
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- seeding


def test_same_key_same_numbers() -> None:
    a = numpy_rng(3, 2, "client_1", "batches").random(8)
    b = numpy_rng(3, 2, "client_1", "batches").random(8)
    np.testing.assert_array_equal(a, b)
    assert torch_seed(3, 2, "client_1", "init") == torch_seed(3, 2, "client_1", "init")
    rng = Rng(3, 2, "client_1")
    np.testing.assert_array_equal(rng.numpy("batches").random(8), a)
    assert rng.torch_seed("init") == torch_seed(3, 2, "client_1", "init")


@pytest.mark.parametrize(
    "other",
    [
        (4, 2, "client_1", "batches"),
        (3, 3, "client_1", "batches"),
        (3, 2, "client_2", "batches"),
        (3, 2, "client_1", "dropout"),
        (3, 2, SERVER, "batches"),
    ],
    ids=["seed", "round", "client", "purpose", "server"],
)
def test_different_key_different_numbers(other: tuple[int, int, str, str]) -> None:
    base = (3, 2, "client_1", "batches")
    assert not np.array_equal(numpy_rng(*base).random(8), numpy_rng(*other).random(8))
    assert torch_seed(*base) != torch_seed(*other)


def test_seed_is_stable_across_processes() -> None:
    # The client/purpose words come from blake2b, not Python's salted hash(): another process agrees.
    import subprocess
    import sys

    code = "from fedmosaic.core.seeding import torch_seed;print(torch_seed(5, 1, 'client_3', 'init'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout.strip()) == torch_seed(5, 1, "client_3", "init")


def test_torch_seed_range() -> None:
    for r in range(20):
        value = torch_seed(0, r, "c", "p")
        assert 0 <= value < 2**63


def test_negative_seed_rejected() -> None:
    with pytest.raises(ValueError, match="seed"):
        numpy_rng(-1, 0, "c", "p")


def test_rng_seeded_is_reproducible_and_restores_global_state() -> None:
    rng = Rng(1, 4, "client_0")
    torch.manual_seed(1234)
    before = torch.get_rng_state().clone()
    with rng.seeded("dropout"):
        first = torch.rand(5)
    assert torch.equal(torch.get_rng_state(), before)
    with rng.seeded("dropout"):
        second = torch.rand(5)
    assert torch.equal(first, second)
    with Rng(1, 5, "client_0").seeded("dropout"):
        other_round = torch.rand(5)
    assert not torch.equal(first, other_round)
    # What runs next is unaffected: same draws as if the seeded blocks never happened.
    after = torch.rand(5)
    torch.manual_seed(1234)
    assert torch.equal(after, torch.rand(5))


def test_rng_seeded_restores_state_on_exception() -> None:
    torch.manual_seed(99)
    before = torch.get_rng_state().clone()
    with pytest.raises(RuntimeError), Rng(0, 0, "c").seeded("x"):
        torch.rand(3)
        raise RuntimeError("inside")
    assert torch.equal(torch.get_rng_state(), before)


# ------------------------------------------------------------------------------------------ sampling


def _specs(n: int) -> list[ClientSpec]:
    return [ClientSpec(f"client_{i}", frozenset({"image"}), 10, "image") for i in range(n)]


def test_sample_clients_deterministic_per_round() -> None:
    clients = _specs(10)
    a = sample_clients(clients, 3, Rng(0, 1, SERVER))
    b = sample_clients(clients, 3, Rng(0, 1, SERVER))
    assert [c.id for c in a] == [c.id for c in b]
    assert len(a) == 3
    assert len({c.id for c in a}) == 3
    assert all(c in clients for c in a)
    positions = [clients.index(c) for c in a]
    assert positions == sorted(positions)


def test_sample_clients_differs_across_rounds() -> None:
    clients = _specs(10)
    picks = {tuple(c.id for c in sample_clients(clients, 3, Rng(0, r, SERVER))) for r in range(10)}
    assert len(picks) > 1
    seeds = {tuple(c.id for c in sample_clients(clients, 3, Rng(s, 1, SERVER))) for s in range(10)}
    assert len(seeds) > 1


def test_sample_clients_covers_everyone_eventually() -> None:
    clients = _specs(10)
    seen = {c.id for r in range(30) for c in sample_clients(clients, 2, Rng(0, r, SERVER))}
    assert seen == {c.id for c in clients}


@pytest.mark.parametrize("k", [10, 11, 100])
def test_sample_clients_returns_all_when_k_at_least_n(k: int) -> None:
    clients = _specs(10)
    assert sample_clients(clients, k, Rng(0, 3, SERVER)) == clients
