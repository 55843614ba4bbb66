"""``model.fusion = mean | concat | attention``: shapes, masking of absent modalities, and a short run
of each fusion through the multimodal classifier."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedmosaic.config import ConfigError, load_config
from fedmosaic.core.seeding import torch_seeded
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.federation import Federation
from fedmosaic.models.multimodal import MultimodalClassifier
from fedmosaic.testing import tiny_config

FUSIONS = ["mean", "concat", "attention"]
DIM, CLASSES, BATCH = 8, 3, 5


def _model(fusion: str) -> MultimodalClassifier:
    with torch_seeded(0):
        encoders = {"a": nn.Linear(4, DIM), "b": nn.Linear(6, DIM), "c": nn.Linear(2, DIM)}
        return MultimodalClassifier(encoders, DIM, CLASSES, fusion=fusion).eval()


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"a": torch.randn(BATCH, 4, generator=g), "b": torch.randn(BATCH, 6, generator=g)}


@pytest.mark.parametrize("fusion", FUSIONS)
def test_shapes(fusion: str) -> None:
    model = _model(fusion)
    inputs = _inputs()
    assert model.fuse(model.embed(inputs)).shape == (BATCH, DIM)
    assert model(inputs).shape == (BATCH, CLASSES)
    assert model({"c": torch.randn(BATCH, 2)}).shape == (BATCH, CLASSES)  # one modality alone
    fusion_params = [n for n, _ in model.named_parameters() if n.startswith("fusion.")]
    assert bool(fusion_params) == (fusion != "mean")  # mean has none; the others are shared "fusion.*"


@pytest.mark.parametrize("fusion", FUSIONS)
def test_a_samples_output_does_not_depend_on_an_absent_modality(fusion: str) -> None:
    model = _model(fusion)
    inputs = _inputs()
    present = {"a": torch.ones(BATCH, dtype=torch.bool), "b": torch.tensor([False, True, False, True, True])}
    out = model(inputs, present)
    garbage = {**inputs, "b": inputs["b"].clone()}
    garbage["b"][[0, 2]] = torch.tensor([float("nan"), 1e30, -7.0, 0.0, float("inf"), 3.0])
    again = model(garbage, present)
    assert torch.isfinite(again).all()
    torch.testing.assert_close(again[[0, 2]], out[[0, 2]], rtol=0, atol=0)  # exactly: never seen
    # a masked sample is the same sample sent without the modality's key at all
    alone = model({"a": inputs["a"][[0, 2]]})
    torch.testing.assert_close(out[[0, 2]], alone, rtol=1e-6, atol=1e-6)
    # and a present one is the same as in a batch with no mask
    full = model({"a": inputs["a"][[1, 3]], "b": inputs["b"][[1, 3]]})
    torch.testing.assert_close(out[[1, 3]], full, rtol=1e-6, atol=1e-6)


def test_mean_fusion_by_hand_and_a_sample_with_nothing_is_refused() -> None:
    model = _model("mean")
    e = {"a": torch.tensor([[1.0, 3.0], [2.0, 2.0]]), "b": torch.tensor([[5.0, 7.0], [9.0, 9.0]])}
    present = {"b": torch.tensor([True, False])}
    torch.testing.assert_close(model.fuse(e, present), torch.tensor([[3.0, 5.0], [2.0, 2.0]]))
    with pytest.raises(ValueError, match="at least one modality"):
        model.fuse(e, {"a": torch.tensor([True, False]), "b": torch.tensor([True, False])})


def test_concat_uses_learned_absent_vectors_that_train() -> None:
    model = _model("concat").train()
    inputs = {"a": _inputs()["a"]}  # b and c absent: their slots hold the learned absent vectors
    nn.functional.cross_entropy(model(inputs), torch.zeros(BATCH, dtype=torch.long)).backward()
    absent = model.fusion.absent
    assert absent["b"].grad is not None and absent["b"].grad.abs().sum() > 0
    assert absent["a"].grad is None or absent["a"].grad.abs().sum() == 0  # a is present: its slot is real


def test_attention_gives_an_absent_modality_zero_weight() -> None:
    model = _model("attention")
    embeddings = model.embed(_inputs())
    present = {"a": torch.ones(BATCH, dtype=torch.bool), "b": torch.tensor([False] * BATCH)}
    fusion = model.fusion
    keys = (embeddings["a"] + fusion.kind[0])[:, None]  # the present key alone
    pooled, weights = fusion.attention(fusion.query.expand(BATCH, -1, -1), keys, keys)
    torch.testing.assert_close(weights, torch.ones(BATCH, 1, 1))  # one present key takes all the weight
    torch.testing.assert_close(
        model.fuse(embeddings, present), fusion.norm(pooled[:, 0]), rtol=1e-5, atol=1e-6
    )


def test_an_unknown_fusion_is_one_line_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^model\.fusion: "):
        load_config(None, ["model.fusion=sum"])


@pytest.mark.parametrize("fusion", ["concat", "attention"])
def test_a_run_per_fusion(fusion: str) -> None:
    # (mean is every other test's default; its metrics are byte-identical to before fusion existed)
    cfg = tiny_config("fedavg", [f"model.fusion={fusion}", "rounds=2"])
    fed = Federation.from_config(cfg, build_task(cfg))
    results = list(fed.rounds())
    assert len(results) == 2 and all(r.skipped is None and not r.rejected for r in results)
    accuracy = results[-1].eval["overall"]["accuracy"]
    assert math.isfinite(accuracy) and 0 <= accuracy <= 1
    assert any(n.startswith("fusion.") for n in fed.server.state().arrays)  # checkpointed, shared
    assert np.isfinite(results[-1].train["train_loss"])
