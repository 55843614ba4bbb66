"""Image+audio and image+text loaders: fsdd-digits, coco, folder, and the shared image/audio decoders.

Real data (../shared/datasets/fsdd, coco-mini) proves counts, shapes and the split rules; small
trees written here prove every bad-input path: a one-line error naming the file (and line), or,
with ``on_bad_sample = "skip"``, the sample dropped and counted.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError
from sklearn.datasets import load_digits

from fedmosaic.data.audio import AudioReadError, MelSettings, log_mel, read_wav
from fedmosaic.data.coco import CocoOptions
from fedmosaic.data.coco import load as load_coco
from fedmosaic.data.folder import FolderOptions, natural_key
from fedmosaic.data.folder import load as load_folder
from fedmosaic.data.fsdd_digits import FsddDigitsOptions, _pair_images
from fedmosaic.data.fsdd_digits import load as load_fsdd
from fedmosaic.data.images import ImageReadError, read_image
from fedmosaic.data.registry import (
    ROLE_FREE,
    ROLE_PROXY,
    ROLE_TEST,
    ROLE_VAL,
    DataError,
    LoadContext,
    get_dataset,
)

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"
FSDD = DATASETS / "fsdd"
COCO = DATASETS / "coco-mini"
needs_fsdd = pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason="shared FSDD copy not present")
needs_coco = pytest.mark.skipif(not COCO.is_dir(), reason="shared coco-mini copy not present")


def _one_line(exc: pytest.ExceptionInfo[BaseException], *parts: object) -> str:
    """The error text, checked to be one line naming every part."""
    text = str(exc.value)
    assert "\n" not in text
    for part in parts:
        assert str(part) in text, f"{part!r} not in {text!r}"
    return text


# ---------------------------------------------------------------- images.py


def _save(path: Path, array: np.ndarray, **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def test_read_image_centre_crops_then_resizes(tmp_path: Path) -> None:
    # A 90x30 strip: red | green | blue thirds. The centred square is the green third only.
    strip = np.zeros((30, 90, 3), dtype=np.uint8)
    strip[:, :30, 0] = strip[:, 30:60, 1] = strip[:, 60:, 2] = 255
    out = read_image(_save(tmp_path / "strip.png", strip), 8)
    assert out.shape == (3, 8, 8) and out.dtype == np.uint8
    # The antialiasing filter reaches one source pixel past the crop at the edges, hence the margins.
    assert out[1].min() >= 200 and out[0].max() <= 40 and out[2].max() <= 40
    assert (out[1, :, 1:-1] == 255).all()


def test_read_image_converts_modes(tmp_path: Path) -> None:
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10  # red, almost transparent: alpha is dropped, not blended
    assert (read_image(_save(tmp_path / "a.png", rgba), 4)[0] == 200).all()
    grey = np.full((10, 10), 77, dtype=np.uint8)
    assert read_image(_save(tmp_path / "g.png", grey), 5).shape == (3, 5, 5)
    one = read_image(_save(tmp_path / "c.png", np.full((10, 10, 3), 120, np.uint8)), 5, channels=1)
    assert one.shape == (1, 5, 5) and (one == 120).all()


@settings(max_examples=25, deadline=None)
@given(
    w=st.integers(1, 300),
    h=st.integers(1, 300),
    size=st.integers(1, 64),
    channels=st.sampled_from([1, 3]),
    fmt=st.sampled_from(["PNG", "JPEG"]),
)
def test_read_image_shape_property(tmp_path_factory, w, h, size, channels, fmt) -> None:
    rng = np.random.default_rng(w * 1000 + h)
    path = tmp_path_factory.mktemp("img") / f"x.{fmt.lower()}"
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, format=fmt)
    out = read_image(path, size, channels)
    assert out.shape == (channels, size, size) and out.dtype == np.uint8 and out.flags.c_contiguous


def test_read_image_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError) as exc:
        read_image(tmp_path / "nope.jpg", 8)
    _one_line(exc, tmp_path / "nope.jpg", "not found")
    (tmp_path / "text.jpg").write_text("hello, not a picture")
    with pytest.raises(ImageReadError) as exc:
        read_image(tmp_path / "text.jpg", 8)
    _one_line(exc, tmp_path / "text.jpg", "cannot decode")
    good = _save(tmp_path / "good.jpg", np.full((64, 64, 3), 90, np.uint8))
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:300])
    with pytest.raises(ImageReadError) as exc:
        read_image(tmp_path / "cut.jpg", 8)
    _one_line(exc, tmp_path / "cut.jpg", "cannot decode")
    assert isinstance(exc.value, DataError)


# ---------------------------------------------------------------- audio.py

MEL = MelSettings(sample_rate=8000, n_fft=256, hop_length=64, n_mels=16, frames=20)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 12000), seed=st.integers(0, 2**16))
def test_log_mel_shape_and_padding_property(n: int, seed: int) -> None:
    samples = np.random.default_rng(seed).normal(0, 0.1, n).astype(np.float32)
    out = log_mel(samples, MEL)
    assert out.shape == (1, MEL.n_mels, MEL.frames) and out.dtype == np.float32
    assert np.isfinite(out).all()
    natural_frames = 1 + max(n, MEL.n_fft) // MEL.hop_length  # librosa.stft, centred
    if natural_frames < MEL.frames:  # padded with the clip's own floor, the silence level
        assert (out[0, :, natural_frames:] == out.min()).all()


def test_log_mel_keeps_the_centre_of_long_clips() -> None:
    # A tone only in the middle third: after a centre crop, every kept frame holds the tone.
    t = np.arange(24000) / 8000
    samples = np.where((t > 1.0) & (t < 2.0), np.sin(2 * np.pi * 500 * t), 0.0).astype(np.float32)
    out = log_mel(samples, MEL)[0]
    tone_band = int(np.argmax(out.mean(axis=1)))
    assert (out[tone_band] > out.min() + 40).all()


def _wav(path: Path, samples: np.ndarray, rate: int = 8000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, rate, subtype="PCM_16")
    return path


def test_read_wav_mono_resample_and_bad_files(tmp_path: Path) -> None:
    stereo = np.stack([np.full(800, 0.5), np.full(800, -0.25)], axis=1)
    mono = read_wav(_wav(tmp_path / "s.wav", stereo), 8000)
    assert mono.shape == (800,) and np.allclose(mono, 0.125, atol=1e-3)
    assert read_wav(_wav(tmp_path / "r.wav", np.zeros(1600), rate=16000), 8000).shape == (800,)
    good = _wav(tmp_path / "good.wav", np.random.default_rng(0).normal(0, 0.1, 4000))
    (tmp_path / "cut.wav").write_bytes(good.read_bytes()[:3000])
    (tmp_path / "junk.wav").write_bytes(b"RIFF....not really")
    _wav(tmp_path / "empty.wav", np.zeros(0))
    for name, reason in [
        ("cut.wav", "truncated"),
        ("junk.wav", "cannot read"),
        ("empty.wav", "empty"),
        ("gone.wav", "not found"),
    ]:
        with pytest.raises(AudioReadError) as exc:
            read_wav(tmp_path / name, 8000)
        _one_line(exc, tmp_path / name, reason)


# ---------------------------------------------------------------- fsdd-digits


@pytest.fixture(scope="module")
def fsdd_real():
    start = time.perf_counter()
    loaded = load_fsdd(FsddDigitsOptions(), LoadContext(FSDD, seed=0))
    return loaded, time.perf_counter() - start


@needs_fsdd
def test_fsdd_real_counts_shapes_and_split(fsdd_real) -> None:
    d, seconds = fsdd_real
    assert seconds < 30  # ~2 s measured; generous for a shared machine
    assert len(d) == 3000 and d.class_names == tuple("0123456789")
    assert np.bincount(d.labels).tolist() == [300] * 10
    assert d.group_names == ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
    assert np.bincount(d.groups).tolist() == [500] * 6
    assert d.store["image"].shape == (3000, 1, 8, 8) and d.store["image"].dtype == np.uint8
    assert d.store["audio"].shape == (3000, 1, 32, 32) and d.store["audio"].dtype == np.float32
    assert np.isfinite(d.store["audio"]).all()
    # FSDD's documented split: takes 0-4 of each speaker and digit are the test set.
    assert ((d.role == ROLE_TEST) == (d.extras["take"] < 5)).all() and (d.role == ROLE_TEST).sum() == 300
    assert [d.group_names[g] for g in d.groups] == d.extras["speaker"].tolist()
    assert get_dataset("fsdd-digits").natural_unit == "speaker"


@needs_fsdd
def test_fsdd_real_pairs_images_without_leaks(fsdd_real) -> None:
    d, _ = fsdd_real
    digits = load_digits()
    idx = d.extras["image_index"]
    assert (digits.target[idx] == d.labels).all()  # the image shows the spoken digit
    expected = np.round(digits.images[idx] * 255 / 16).astype(np.uint8)
    assert np.array_equal(d.store["image"][:, 0], expected)
    test = d.role == ROLE_TEST
    assert not set(idx[test]) & set(idx[~test])  # no training image appears in a test pair
    assert (d.blocks == idx).all()
    speakers_per_image = defaultdict(set)
    for image, speaker in zip(idx, d.groups, strict=True):
        speakers_per_image[image].add(speaker)
    assert max(len(s) for s in speakers_per_image.values()) == 1  # blocks never straddle speakers


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_speakers=st.integers(1, 12), n=st.integers(1, 400))
def test_pairing_property(seed: int, n_speakers: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 10, 300)
    order = rng.permutation(300)
    pools = {False: order[:200], True: order[200:]}
    digit = rng.integers(0, 10, n)
    speaker = rng.integers(0, n_speakers, n)
    in_test = rng.random(n) < 0.3
    digit = np.where(np.isin(digit, targets[pools[True]]) & np.isin(digit, targets[pools[False]]), digit, -1)
    keep = digit >= 0
    out = _pair_images(digit[keep], speaker[keep], in_test[keep], pools, targets, rng)
    assert (targets[out] == digit[keep]).all()
    assert np.isin(out[in_test[keep]], pools[True]).all()
    assert np.isin(out[~in_test[keep]], pools[False]).all()


@pytest.fixture(scope="module")
def fsdd_subset(tmp_path_factory) -> Path:
    """2 speakers x 10 digits x takes 0-6 of the real recordings (140 files), copied once."""
    if not (FSDD / "recordings").is_dir():
        pytest.skip("shared FSDD copy not present")
    src = tmp_path_factory.mktemp("fsdd_src") / "recordings"
    src.mkdir()
    for speaker in ("george", "theo"):
        for digit in range(10):
            for take in range(7):
                name = f"{digit}_{speaker}_{take}.wav"
                shutil.copy(FSDD / "recordings" / name, src / name)
    return src


@pytest.fixture
def fsdd_copy(fsdd_subset: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "fsdd" / "recordings"
    shutil.copytree(fsdd_subset, dst)
    return dst


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_fsdd_options_seeds_and_folder_forms(fsdd_copy: Path, seed: int) -> None:
    opts = FsddDigitsOptions(n_mels=16, frames=12, hop_length=64, n_fft=256, test_image_fraction=0.5)
    d = load_fsdd(opts, LoadContext(fsdd_copy.parent, seed=seed))  # the folder holding recordings/
    again = load_fsdd(opts, LoadContext(fsdd_copy, seed=seed))  # the recordings folder itself
    assert np.array_equal(d.extras["image_index"], again.extras["image_index"])
    assert len(d) == 140 and d.store["audio"].shape == (140, 1, 16, 12)
    idx, test = d.extras["image_index"], d.role == ROLE_TEST
    assert test.sum() == 100 and not set(idx[test]) & set(idx[~test])


def test_fsdd_no_test_split_keeps_blocks(fsdd_copy: Path) -> None:
    d = load_fsdd(FsddDigitsOptions(test_split="none"), LoadContext(fsdd_copy))
    assert (d.role == ROLE_FREE).all() and (d.blocks == d.extras["image_index"]).all()
    # All 1,797 images form one pool; a block (image) still belongs to a single speaker.
    for image in np.unique(d.blocks):
        assert len(np.unique(d.groups[d.blocks == image])) == 1


def test_fsdd_bad_recordings(fsdd_copy: Path) -> None:
    bad_name = fsdd_copy / "seven_george_1.wav"
    shutil.copy(fsdd_copy / "7_george_1.wav", bad_name)
    with pytest.raises(DataError) as exc:
        load_fsdd(FsddDigitsOptions(), LoadContext(fsdd_copy))
    _one_line(exc, bad_name, "does not match")
    bad_name.unlink()

    cut = fsdd_copy / "3_theo_2.wav"
    cut.write_bytes(cut.read_bytes()[:200])
    _wav(fsdd_copy / "4_theo_2.wav", np.zeros(0))
    with pytest.raises(DataError) as exc:
        load_fsdd(FsddDigitsOptions(), LoadContext(fsdd_copy))
    _one_line(exc, cut, "truncated")
    ctx = LoadContext(fsdd_copy, on_bad_sample="skip")
    d = load_fsdd(FsddDigitsOptions(), ctx)
    assert len(d) == 138 and len(ctx.skipped) == 2 and d.skipped == ctx.skipped
    assert "4_theo_2.wav" not in d.extras["files"] and any("empty" in s for s in ctx.skipped)


def test_fsdd_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"task\.data_dir"):
        load_fsdd(FsddDigitsOptions(), LoadContext(tmp_path / "absent"))
    with pytest.raises(DataError) as exc:
        load_fsdd(FsddDigitsOptions(), LoadContext(tmp_path))
    _one_line(exc, tmp_path, "no .wav")
    with pytest.raises(ValidationError):
        FsddDigitsOptions(hop_length=1024, n_fft=512)


# ---------------------------------------------------------------- coco


def _expected_label(instances: dict, image_id: int) -> str:
    """The label rule, restated: summed area per supercategory, largest wins, ties by name."""
    sup = {c["id"]: c["supercategory"] for c in instances["categories"]}
    areas: dict[str, float] = defaultdict(float)
    for a in instances["annotations"]:
        if a["image_id"] == image_id:
            areas[sup[a["category_id"]]] += a["area"]
    best = max(areas.values())
    return sorted(name for name, area in areas.items() if area == best)[0]


@needs_coco
def test_coco_real_counts_labels_and_roles() -> None:
    d = load_coco(CocoOptions(), LoadContext(COCO))
    assert len(d) == 159 and (d.role == ROLE_TEST).sum() == 79
    assert ((d.role == ROLE_TEST) == (d.extras["split"] == "val2017")).all()
    assert d.store["image"].shape == (159, 3, 64, 64) and d.store["image"].dtype == np.uint8
    assert d.modalities[1].shape == (32,) and d.modalities[1].vocab_size is None
    assert all(isinstance(t, str) and t.strip() == t and t for t in d.texts["text"])
    assert list(d.class_names) == sorted(d.class_names) and len(d.class_names) == 12
    assert d.extras["unlabelled_images"] == 0
    for split in ("train2017", "val2017"):
        instances = json.loads((COCO / "annotations" / f"instances_{split}.json").read_text())
        rows = np.flatnonzero(d.extras["split"] == split)
        for i in rows:
            assert d.class_names[d.labels[i]] == _expected_label(instances, int(d.extras["image_id"][i]))
    multilabel = d.extras["multilabel"]
    assert multilabel.shape == (159, 12) and multilabel[np.arange(159), d.labels].all()
    # The first caption by annotation id is the one used.
    captions = json.loads((COCO / "annotations" / "captions_val2017.json").read_text())["annotations"]
    first = {}
    for a in sorted(captions, key=lambda a: a["id"]):
        first.setdefault(a["image_id"], a["caption"].strip())
    val = np.flatnonzero(d.extras["split"] == "val2017")
    assert [d.texts["text"][i] for i in val] == [first[int(d.extras["image_id"][i])] for i in val]


@needs_coco
def test_coco_real_five_captions_share_a_block() -> None:
    d = load_coco(CocoOptions(captions_per_image=5, splits=["val2017"], image_size=32), LoadContext(COCO))
    assert len(d) == 395 and (d.role == ROLE_TEST).all()
    assert np.array_equal(d.blocks, d.extras["image_id"])
    for block in np.unique(d.blocks):
        rows = np.flatnonzero(d.blocks == block)
        assert len(rows) == 5 and len({d.texts["text"][i] for i in rows}) == 5
        assert (d.store["image"][rows] == d.store["image"][rows[0]]).all()


def _coco_tree(root: Path) -> Path:
    """One split, 'mini': photo 1 (two small animals outweigh one car), photo 2 (a tie), photo 3
    (no instances: unlabelled)."""
    (root / "annotations").mkdir(parents=True)
    for i in (1, 2, 3):
        _save(root / "mini" / f"{i:012d}.jpg", np.full((40, 60, 3), 40 * i, np.uint8))
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": 40, "width": 60} for i in (1, 2, 3)]
    captions = [
        {"id": 10 * i + k, "image_id": i, "caption": f"photo {i} caption {k}"}
        for i in (1, 2, 3)
        for k in range(3)
    ]
    categories = [
        {"id": 1, "name": "dog", "supercategory": "animal"},
        {"id": 2, "name": "cat", "supercategory": "animal"},
        {"id": 3, "name": "car", "supercategory": "vehicle"},
        {"id": 4, "name": "kite", "supercategory": "sports"},
    ]
    instances = [
        {"id": 1, "image_id": 1, "category_id": 1, "area": 30.0, "bbox": [0, 0, 1, 1]},
        {"id": 2, "image_id": 1, "category_id": 2, "area": 30.0, "bbox": [0, 0, 1, 1]},
        {"id": 3, "image_id": 1, "category_id": 3, "area": 50.0, "bbox": [0, 0, 1, 1]},
        {"id": 4, "image_id": 2, "category_id": 4, "area": 20.0, "bbox": [0, 0, 1, 1]},
        {"id": 5, "image_id": 2, "category_id": 3, "area": 20.0, "bbox": [0, 0, 1, 1]},
    ]
    ann = root / "annotations"
    (ann / "captions_mini.json").write_text(json.dumps({"images": images, "annotations": captions}))
    (ann / "instances_mini.json").write_text(
        json.dumps({"images": images, "annotations": instances, "categories": categories})
    )
    return root


MINI = CocoOptions(splits=["mini"], test_split=None, image_size=16, captions_per_image=2)


def test_coco_label_rule_and_unlabelled(tmp_path: Path) -> None:
    d = load_coco(MINI, LoadContext(_coco_tree(tmp_path)))
    assert d.class_names == ("animal", "sports", "vehicle")
    assert d.extras["image_id"].tolist() == [1, 1, 2, 2] and d.extras["unlabelled_images"] == 1
    # photo 1: animal 60 > vehicle 50 (summed); photo 2: sports 20 == vehicle 20, the first name wins.
    assert [d.class_names[c] for c in d.labels] == ["animal", "animal", "sports", "sports"]
    assert d.extras["multilabel"].astype(int).tolist() == [[1, 0, 1], [1, 0, 1], [0, 1, 1], [0, 1, 1]]
    assert d.texts["text"] == [
        "photo 1 caption 0",
        "photo 1 caption 1",
        "photo 2 caption 0",
        "photo 2 caption 1",
    ]
    assert (d.role == ROLE_FREE).all() and d.store["image"].shape == (4, 3, 16, 16)


def test_coco_bad_image_files(tmp_path: Path) -> None:
    root = _coco_tree(tmp_path)
    photo = root / "mini" / f"{2:012d}.jpg"
    photo.write_bytes(photo.read_bytes()[:100])
    with pytest.raises(DataError) as exc:
        load_coco(MINI, LoadContext(root))
    _one_line(exc, photo, "image id 2", "cannot decode")
    ctx = LoadContext(root, on_bad_sample="skip")
    d = load_coco(MINI, ctx)
    assert d.extras["image_id"].tolist() == [1, 1] and len(ctx.skipped) == 1
    photo.unlink()
    with pytest.raises(DataError) as exc:
        load_coco(MINI, LoadContext(root))
    _one_line(exc, photo, "image id 2", "not found")


def test_coco_empty_caption(tmp_path: Path) -> None:
    root = _coco_tree(tmp_path)
    path = root / "annotations" / "captions_mini.json"
    data = json.loads(path.read_text())
    data["annotations"][1]["caption"] = "  \n "  # photo 1, second caption
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as exc:
        load_coco(MINI, LoadContext(root))
    _one_line(exc, path, "empty caption", "image id 1")
    ctx = LoadContext(root, on_bad_sample="skip")
    d = load_coco(MINI, ctx)
    assert d.extras["caption_id"].tolist() == [10, 20, 21] and len(d.skipped) == 1


def test_coco_schema_errors(tmp_path: Path) -> None:
    root = _coco_tree(tmp_path)
    path = root / "annotations" / "captions_mini.json"
    path.write_text(json.dumps({"annotations": []}))
    with pytest.raises(DataError) as exc:
        load_coco(MINI, LoadContext(root))
    _one_line(exc, path, "missing key 'images'")
    path.write_text('{"images": [],\n "annotations": [\n')
    with pytest.raises(DataError) as exc:
        load_coco(MINI, LoadContext(root))
    _one_line(exc, f"{path}:3", "not valid JSON")
    path.write_text(json.dumps({"images": [], "annotations": [{"id": 1, "image_id": 1}]}))
    with pytest.raises(DataError) as exc:
        load_coco(MINI, LoadContext(root))
    _one_line(exc, path, "annotations[0].caption")
    (root / "annotations" / "instances_mini.json").unlink()
    with pytest.raises(DataError) as exc:
        load_coco(MINI, LoadContext(root))
    _one_line(exc, root / "annotations" / "instances_mini.json", "not found")
    with pytest.raises(ValidationError, match="test_split"):
        CocoOptions(splits=["train2017"], test_split="val2017")


# ---------------------------------------------------------------- folder


def _write_samples(
    folder: Path, rows: list[dict], fmt: str = "csv", columns: tuple[str, ...] | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path = folder / "samples.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path
    path = folder / "samples.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns or ("image", "text", "label"))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _pic(folder: Path, name: str, value: int = 100) -> str:
    _save(folder / name, np.full((12, 12, 3), value, np.uint8))
    return name


def _small_tree(root: Path) -> Path:
    """client_10 and client_2 (natural order: 2 first), a val/ folder, server test + proxy."""
    for client in ("client_10", "client_2"):
        train = root / client / "train"
        _write_samples(
            train,
            [
                {"image": _pic(train, "a.png"), "text": "a cat", "label": "cat"},
                {"image": "", "text": "a dog", "label": "dog"},
                {"image": _pic(train, "b.png"), "text": "", "label": "dog"},
            ],
        )
    _write_samples(root / "client_2" / "val", [{"text": "cat again", "label": "cat"}], "jsonl")
    test = root / "server" / "test"
    _write_samples(test, [{"image": _pic(test, "t.png"), "text": "bird", "label": "bird"}])
    _write_samples(
        root / "server" / "proxy", [{"text": "unlabelled"}, {"text": "x", "label": "cat"}], "jsonl"
    )
    return root


def test_folder_layout_roles_groups_and_presence(tmp_path: Path) -> None:
    d = load_folder(FolderOptions(image_size=8), LoadContext(_small_tree(tmp_path)))
    assert d.group_names == ("client_2", "client_10")
    assert d.class_names == ("bird", "cat", "dog")
    assert d.groups.tolist() == [0, 0, 0, 0, 1, 1, 1, -1, -1, -1]
    # Order: clients in natural order (train, then val), then server folders sorted (proxy, test).
    assert d.role.tolist() == [ROLE_FREE] * 3 + [ROLE_VAL] + [ROLE_FREE] * 3 + [ROLE_PROXY] * 2 + [ROLE_TEST]
    assert d.present[:4].tolist() == [[True, True], [False, True], [True, False], [False, True]]
    assert not d.store["image"][1].any() and d.texts["text"][2] == ""  # absent rows: placeholders
    assert d.extras["labelled"].tolist() == [True] * 7 + [False, True, True]
    assert d.store["image"].shape == (10, 3, 8, 8) and d.store["image"][0].max() == 100
    assert get_dataset("folder").natural_unit == "client"
    grey = load_folder(FolderOptions(image_size=8, channels=1), LoadContext(tmp_path))
    assert grey.store["image"].shape == (10, 1, 8, 8)


def test_natural_key_orders_numbers() -> None:
    names = ["client_10", "client_2", "Client_1", "b", "a10b2", "a10b10", "a9"]
    assert sorted(names, key=natural_key) == [
        "a9",
        "a10b2",
        "a10b10",
        "b",
        "Client_1",
        "client_2",
        "client_10",
    ]


def _one_client(root: Path, rows: list[dict], fmt: str = "csv", columns=None) -> Path:
    return _write_samples(root / "c1" / "train", rows, fmt, columns)


def test_folder_missing_label_column_and_train_folder(tmp_path: Path) -> None:
    path = _one_client(tmp_path, [{"image": "", "text": "hi"}], columns=("image", "text"))
    with pytest.raises(DataError) as exc:
        load_folder(FolderOptions(), LoadContext(tmp_path))
    _one_line(exc, f"{path}:1", "no 'label' column")
    path.unlink()
    _write_samples(path.parent, [{"text": "hi", "label": "x"}])
    (tmp_path / "c2" / "val").mkdir(parents=True)
    with pytest.raises(DataError) as exc:
        load_folder(FolderOptions(), LoadContext(tmp_path))
    _one_line(exc, tmp_path / "c2", "no train/")


def test_folder_bad_csv_rows(tmp_path: Path) -> None:
    path = _one_client(tmp_path, [{"text": "ok", "label": "a"}])
    with path.open("a") as f:
        f.write("img.png,too,many,fields\n")  # line 3
        f.write(",,b\n")  # line 4: neither image nor text
        f.write("missing.png,,b\n")  # line 5: image file does not exist
        (path.parent / "junk.png").write_text("not an image")
        f.write("junk.png,,b\n")  # line 6: image does not decode
        f.write(",text,\n")  # line 7: empty label
    reasons = [
        "expected 3 fields",
        "neither an image nor a text",
        "'missing.png'",
        "'junk.png'",
        "empty label",
    ]
    ctx = LoadContext(tmp_path, on_bad_sample="skip")
    d = load_folder(FolderOptions(), ctx)
    assert len(d) == 1 and d.texts["text"] == ["ok"]
    assert [s.split(": ")[0] for s in ctx.skipped] == [f"{path}:{n}" for n in range(3, 8)]
    assert all(reason in s for reason, s in zip(reasons, ctx.skipped, strict=True))
    for reason in reasons:  # under "error", each bad row stops the load; drop it to reach the next
        with pytest.raises(DataError) as exc:
            load_folder(FolderOptions(), LoadContext(tmp_path))
        _one_line(exc, f"{path}:3", reason)
        lines = path.read_text().splitlines()
        path.write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    assert len(load_folder(FolderOptions(), LoadContext(tmp_path))) == 1


def test_folder_bad_jsonl_lines(tmp_path: Path) -> None:
    path = _one_client(tmp_path, [{"text": "ok", "label": "a"}], fmt="jsonl")
    with path.open("a") as f:
        f.write("{not json\n")  # line 2
        f.write('["a", "list"]\n')  # line 3
        f.write('{"text": "no label"}\n')  # line 4
        f.write('{"text": 5, "label": ["a"]}\n')  # line 5: two bad fields, one skipped sample
        f.write('{"text": "numeric label", "label": 3}\n')  # fine: labels become strings
    with pytest.raises(DataError) as exc:
        load_folder(FolderOptions(), LoadContext(tmp_path))
    _one_line(exc, f"{path}:2", "not valid JSON")
    ctx = LoadContext(tmp_path, on_bad_sample="skip")
    d = load_folder(FolderOptions(), ctx)
    assert d.class_names == ("3", "a") and len(d) == 2
    assert [s.split(": ")[0] for s in ctx.skipped] == [f"{path}:{n}" for n in (2, 3, 4, 5)]
    assert d.present.tolist() == [[False, True], [False, True]]


def test_folder_whole_file_problems(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        load_folder(FolderOptions(), LoadContext(tmp_path))
    _one_line(exc, tmp_path, "no client folders")
    (tmp_path / "c1" / "train").mkdir(parents=True)
    with pytest.raises(DataError) as exc:
        load_folder(FolderOptions(), LoadContext(tmp_path))
    _one_line(exc, tmp_path / "c1" / "train", "no samples.csv")
    _one_client(tmp_path, [{"text": "hi", "label": "x"}])
    (tmp_path / "server" / "tests").mkdir(parents=True)
    with pytest.raises(DataError) as exc:
        load_folder(FolderOptions(), LoadContext(tmp_path))
    _one_line(exc, tmp_path / "server" / "tests", "unknown server folder")


def _load_example_script():
    spec = importlib.util.spec_from_file_location(
        "make_folder_tree", ROOT / "examples" / "make_folder_tree.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_tree_loads_with_matching_presence(tmp_path: Path, capsys) -> None:
    script = _load_example_script()
    root = tmp_path / "tree"
    assert script.main([str(root), "--clients", "6", "--per-client", "10", "--test", "8"]) == 0
    assert f"--set task.dataset=folder --set task.data_dir={root} --set task.partition=natural" in (
        capsys.readouterr().out
    )
    d = load_folder(FolderOptions(image_size=24), LoadContext(root))
    assert d.group_names == tuple(f"client_{k}" for k in range(1, 7)) and len(d) == 68
    assert (d.role[d.groups == -1] == ROLE_TEST).all() and (d.groups == -1).sum() == 8
    for k, name in enumerate(d.group_names):
        train = root / name / "train"
        sample_file = next(train.glob("samples.*"))
        if sample_file.suffix == ".csv":
            columns = set(sample_file.read_text().splitlines()[0].split(","))
        else:
            columns = set(json.loads(sample_file.read_text().splitlines()[0]))
        mask = d.present[d.groups == k]
        assert (mask[:, 0] == ("image" in columns)).all() and (mask[:, 1] == ("text" in columns)).all()
    kinds = [tuple(d.present[d.groups == k][0]) for k in range(6)]
    assert kinds == [(True, False)] * 2 + [(False, True)] * 2 + [(True, True)] * 2
    with pytest.raises(SystemExit):
        script.main([str(root)])  # refuses to write into a non-empty folder
