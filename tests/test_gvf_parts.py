"""gvf's parts one by one: the wire records, the formulas of ``gvf.maths``, the registered variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from fedmosaic.algorithms import gvf
from fedmosaic.algorithms.registry import get_algorithm
from fedmosaic.config import ConfigError, load_config
from fedmosaic.core.message import Message

GVF_TINY = ["algorithm.name=gvf", "algorithm.dim=16"]


def _arrays(*names: str) -> dict[str, np.ndarray]:
    return {name: np.full((2, 3), i, np.float32) for i, name in enumerate(names)}


# --------------------------------------------------------------------------- wire


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_each_record_round_trips_through_its_message() -> None:
    instruction = gvf.FitInstruction(
        3,
        shared=_arrays("adapters.image.0.weight", "gate.linear.bias"),
        bank=_arrays("image", "text"),
        pseudo={"text": np.array([1, -1], np.int64)},
        anchor=_arrays("text"),
        proxy=_arrays("image"),
    )
    message = instruction.to_message()
    assert message.meta == {"round": 3}
    assert {"gv/image", "gv/text", "pseudo/text", "anchor/text", "proxy/image"} < set(message.arrays)
    back = gvf.FitInstruction.from_message(message)
    assert back.round == 3
    for part in ("shared", "bank", "pseudo", "anchor", "proxy"):
        assert _same(getattr(back, part), getattr(instruction, part)), part

    reply = gvf.FitReply(10, 0.5, -0.1, _arrays("classifier.net.3.bias"), _arrays("image"), _arrays("text"))
    reply.val_loss_local, reply.val_loss_global = 1.0, 0.9
    message = reply.to_message()
    assert set(message.arrays) == {"classifier.net.3.bias", "vec/image", "priv/text"}
    assert tuple(message.meta) == gvf.FitReply.META
    back = gvf.FitReply.from_message(message)
    assert (back.n_train, back.train_loss, back.delta, back.val_loss_local) == (10, 0.5, -0.1, 1.0)
    assert _same(back.vectors, reply.vectors) and _same(back.private, reply.private)

    update = gvf.Update(_arrays("fusion.norm.weight"), _arrays("image"))
    assert not gvf.Update.from_message(Message()).shared  # no update step: nothing to take in
    assert _same(gvf.Update.from_message(update.to_message()).bank, update.bank)
    state = gvf.ClientState(_arrays("encoders.image.0.weight"), _arrays("image"), _arrays("image", "text"))
    back_state = gvf.ClientState.from_message(state.to_message())
    assert _same(back_state.params, state.params) and _same(back_state.proxy, state.proxy)


def test_a_record_refuses_an_array_of_another_kind() -> None:
    with pytest.raises(ValueError, match="'vec/image'"):
        gvf.FitInstruction.from_message(Message(_arrays("vec/image")))
    with pytest.raises(ValueError, match="'proxy/image'"):
        gvf.FitReply.from_message(
            Message(_arrays("proxy/image"), {"n_train": 1, "train_loss": 0, "delta": 0})
        )


# --------------------------------------------------------------------------- maths


def test_weighted_sum_is_the_weighted_mean_in_float64() -> None:
    a, b = np.float32([1.0, 2.0]), np.float32([3.0, 6.0])
    out = gvf.weighted_sum([a, b], [0.25, 0.75])
    assert out.dtype == np.float64 and np.allclose(out, [2.5, 5.0])


def test_sample_means_average_every_vector_of_a_sample_and_leave_unseen_ones_nan() -> None:
    ones, threes = np.ones((2, 4)), np.full((2, 4), 3.0)
    out = gvf.sample_means(4, 4, [(np.array([0, 1]), ones), (np.array([1, 2]), threes)])
    assert out.dtype == np.float32
    assert np.allclose(out[0], 1) and np.allclose(out[1], 2) and np.allclose(out[2], 3)
    assert np.isnan(out[3]).all()  # no client sent a vector of sample 3: clients skip it


def test_info_nce_one_sided_and_symmetric() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(6, 5), torch.randn(6, 5)
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / 0.1
    target = torch.arange(6)
    one = gvf.info_nce(a, b, 0.1, symmetric=False)
    assert torch.allclose(one, F.cross_entropy(logits, target))
    both = gvf.info_nce(a, b, 0.1)
    assert torch.allclose(both, 0.5 * (one + F.cross_entropy(logits.T, target)))
    assert not torch.allclose(both, one)  # the reverse direction counts
    assert gvf.info_nce(a, a, 0.1) < 0.1 < one  # matched rows: near zero


def test_choose_k_finds_the_planted_number_of_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = 10 * rng.normal(size=(5, 8))
    vectors = {m: centres[np.repeat(np.arange(5), 20)] + rng.normal(size=(100, 8)) for m in ("a", "b")}
    assert gvf.choose_k(vectors, 2, 8, seed=0, n_init=2) == 5


# --------------------------------------------------------------------------- variants


@pytest.mark.parametrize(
    ("switch", "variant"),
    [("algorithm.federate=false", "gvf-local"), ("algorithm.share_encoders=true", "gvf-shared-encoders")],
)
def test_a_removed_switch_is_one_line_naming_its_variant(switch: str, variant: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [*GVF_TINY, switch])
    message = str(err.value)
    assert "\n" not in message and message.startswith(switch.split("=")[0] + ": "), message
    assert f'algorithm.name = "{variant}"' in message
    assert load_config(None, [f"algorithm.name={variant}", "algorithm.dim=16"]).algorithm.name == variant


def test_the_variants_declare_what_they_upload() -> None:
    def arrays(name: str, *extra: str) -> tuple[str, ...]:
        cls = get_algorithm(name)
        return cls.declared_uploads(
            load_config(None, [f"algorithm.name={name}", *extra]).algorithm
        ).fit_arrays

    assert arrays("gvf-local") == ()  # the control uploads no array at all
    assert "encoders.{m}.*" in arrays("gvf-shared-encoders") and "encoders.{m}.*" not in arrays("gvf")
    assert "priv/{m}" in arrays("gvf-shared-encoders", "algorithm.allow_private_vectors=true")
    with pytest.raises(ConfigError, match=r"^algorithm\.allow_private_vectors: gvf-local"):
        load_config(None, ["algorithm.name=gvf-local", "algorithm.allow_private_vectors=true"])
