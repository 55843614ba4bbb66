"""Data confined to its site: paths stay inside the data root, images have a size cap, and test
classes that no client holds are named.

1. Every file a loader reads resolves inside its root (``data/paths.py``). For every loader, each of
   its files in turn is moved out of the tree and replaced by a symlink to it: the load must refuse it
   (one line saying "outside"), as a skippable bad sample where the file is one sample. The ``folder``
   loader is also fed ``../``, absolute paths, another client's file and symlinked folders, and
   hypothesis draws image paths: no pixel from outside a client's folder is ever loaded.
2. A PNG of a few KB that declares 169 megapixels is refused from its header, before decoding: a
   child process reads it and its peak memory stays far below the 0.8 GB a decode costs.
3. A test class no client has a training sample of is recorded in the data summary and warned about
   on the terminal of a real ``fedmosaic run``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError

from fedmosaic.config import load_config
from fedmosaic.data.coco import CocoOptions
from fedmosaic.data.coco import load as load_coco
from fedmosaic.data.folder import FolderOptions
from fedmosaic.data.folder import load as load_folder
from fedmosaic.data.images import ImageReadError, read_image
from fedmosaic.data.paths import PathEscapeError, confined
from fedmosaic.data.registry import DataError, LoadContext, get_dataset
from fedmosaic.data.tasks import build_task
from test_loader_fuzz import TREES
from test_media_loaders import _coco_tree, _write_samples
from test_sensor_loaders import SMALL, write_hapt

SRC = Path(__file__).resolve().parent.parent / "src"
INSIDE, OUTSIDE = 100, 250  # pixel values of images inside a client folder and outside it


def _png(path: Path, value: int, size: tuple[int, int] = (12, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def _one_line(exc: pytest.ExceptionInfo[BaseException], *parts: object) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    for part in parts:
        assert str(part) in text, f"{part!r} not in {text!r}"
    return text


def _move_out(path: Path, outside: Path) -> Path:
    """Move ``path`` to ``outside`` and leave a symlink to it in its place; returns the target."""
    target = outside / path.name
    outside.mkdir(parents=True, exist_ok=True)
    shutil.move(path, target)
    path.symlink_to(target)
    return target


# ---------------------------------------------------------------- every loader, every file

# Files a loader's small tree holds but that loader never reads with these options.
UNREAD = {
    "uci-har": lambda p: p.name.startswith("body_acc"),  # acc = "total" reads total_acc
    "coco": lambda p: p.name == f"{3:012d}.jpg",  # photo 3 has no instances: unlabelled, never decoded
}


@pytest.mark.parametrize("dataset", sorted(TREES))
def test_every_file_symlinked_out_of_the_root_is_refused(tmp_path: Path, dataset: str) -> None:
    write, options, files = TREES[dataset]
    data_dir = write(tmp_path / "site")
    entry = get_dataset(dataset)
    checked = 0
    for i, path in enumerate(files(data_dir)):
        if UNREAD.get(dataset, lambda _: False)(path):
            continue
        target = _move_out(path, tmp_path / f"elsewhere{i}")
        with pytest.raises(DataError) as exc:
            entry.load(options, LoadContext(data_dir))
        _one_line(exc, "outside", target)
        ctx = LoadContext(data_dir, on_bad_sample="skip")
        try:  # one sample's file: skipped and counted; a whole table or samples file: still an error
            entry.load(options, ctx)
            assert any("outside" in s and str(target) in s for s in ctx.skipped), ctx.skipped
        except DataError as err:
            assert "outside" in str(err) and "\n" not in str(err)
        path.unlink()
        shutil.move(target, path)
        checked += 1
    assert checked >= 2
    entry.load(options, LoadContext(data_dir))  # restored: loads again


def test_a_data_root_reached_through_a_symlink_is_one_tree(tmp_path: Path) -> None:
    write, options, _ = TREES["folder"]
    real = write(tmp_path / "real")
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    assert len(get_dataset("folder").load(options, LoadContext(tmp_path / "link"))) == 10


# ---------------------------------------------------------------- folder: named paths


def _client(root: Path, image: str) -> Path:
    """``root/c1`` with one good row and one row naming ``image``; pictures inside and outside."""
    train = root / "c1" / "train"
    _png(train / "good.png", INSIDE)
    _png(root / "c1" / "shared" / "in.png", INSIDE)
    _png(root / "c2" / "train" / "theirs.png", OUTSIDE)
    _write_samples(root / "c2" / "train", [{"image": "theirs.png", "text": "", "label": "b"}])
    _png(root.parent / "outside" / "secret.png", OUTSIDE)
    rows = [{"image": "good.png", "text": "", "label": "a"}, {"image": image, "text": "", "label": "b"}]
    return _write_samples(train, rows)


@pytest.mark.parametrize(
    "kind", ["dotdot", "absolute", "other_client", "symlinked_file", "symlinked_folder", "missing"]
)
def test_folder_image_out_of_its_client_folder_is_a_bad_row(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "root"
    secret = tmp_path / "outside" / "secret.png"
    train = root / "c1" / "train"
    image = {
        "dotdot": "../../../outside/secret.png",
        "absolute": str(secret),
        "other_client": "../../c2/train/theirs.png",
        "symlinked_file": "link.png",
        "symlinked_folder": "pics/secret.png",
        "missing": "../../../outside/nothing.png",  # escapes are refused before existence is tested
    }[kind]
    samples = _client(root, image)
    if kind == "symlinked_file":
        (train / "link.png").symlink_to(secret)
    if kind == "symlinked_folder":
        (train / "pics").symlink_to(secret.parent, target_is_directory=True)
    with pytest.raises(DataError) as exc:
        load_folder(FolderOptions(image_size=8), LoadContext(root))
    _one_line(exc, f"{samples}:3", repr(image), "outside its client folder", root / "c1")
    ctx = LoadContext(root, on_bad_sample="skip")
    d = load_folder(FolderOptions(image_size=8), ctx)
    assert len(ctx.skipped) == 1 and "outside its client folder" in ctx.skipped[0]
    assert d.extras["source"] == [f"{samples}:2", f"{root / 'c2' / 'train' / 'samples.csv'}:2"]
    assert d.store["image"][0].max() == INSIDE


def test_folder_paths_that_stay_inside_the_client_folder_load(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _client(root, "../shared/in.png")  # up out of train/, still inside c1/
    (root / "c1" / "train" / "alias.png").symlink_to(root / "c1" / "shared" / "in.png")
    _write_samples(
        root / "c1" / "val",
        [
            {"image": "../train/alias.png", "text": "", "label": "a"},
            {"image": "./../shared/in.png", "label": "a"},
        ],
    )
    d = load_folder(FolderOptions(image_size=8), LoadContext(root))
    assert len(d) == 5 and d.skipped == []


def test_folder_client_folder_or_samples_file_out_of_the_root_stops_the_load(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _client(root, "good.png")
    elsewhere = tmp_path / "elsewhere"
    _write_samples(elsewhere / "train", [{"image": "", "text": "hi", "label": "a"}])
    (root / "c3").symlink_to(elsewhere, target_is_directory=True)
    for policy in ("error", "skip"):
        with pytest.raises(DataError) as exc:
            load_folder(FolderOptions(image_size=8), LoadContext(root, on_bad_sample=policy))
        _one_line(exc, root / "c3", "outside the data root", elsewhere)
    (root / "c3").unlink()
    samples = root / "c2" / "train" / "samples.csv"
    shutil.move(samples, elsewhere / "samples.csv")
    samples.symlink_to(elsewhere / "samples.csv")
    with pytest.raises(DataError) as exc:
        load_folder(FolderOptions(image_size=8), LoadContext(root, on_bad_sample="skip"))
    _one_line(exc, samples, "outside its client folder")


SEGMENTS = ["..", ".", "train", "shared", "c1", "c2", "in.png", "good.png", "link_out.png", "secret.png"]


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "root"
    _client(root, "good.png")
    _png(root / "secret.png", OUTSIDE)  # inside the data root but outside c1: refused all the same
    (root / "c1" / "train" / "link_out.png").symlink_to(root.parent / "outside" / "secret.png")
    return root


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=6), absolute=st.booleans())
def test_folder_never_loads_a_pixel_from_outside_the_client_folder(
    fuzz_root: Path, parts: list[str], absolute: bool
) -> None:
    image = "/".join(parts)
    if absolute:
        image = str(fuzz_root / "c1" / "train" / image)
    _write_samples(fuzz_root / "c1" / "train", [{"image": image, "text": "t", "label": "a"}])
    ctx = LoadContext(fuzz_root, on_bad_sample="skip")
    d = load_folder(FolderOptions(image_size=8), ctx)
    c1 = d.groups == d.group_names.index("c1")
    assert OUTSIDE not in d.store["image"][c1]  # nothing from c2, the root or beyond ever enters c1
    # Independent oracle, os.path.realpath: a file inside c1 <=> the row loaded, else it was skipped.
    real = Path(os.path.realpath(fuzz_root / "c1" / "train" / image))
    inside = real.is_relative_to(fuzz_root / "c1") and real.is_file()
    assert d.present[c1, 0].tolist() == ([True] if inside else [])
    assert len(ctx.skipped) == (0 if inside else 1)


def test_confined_cannot_resolve_is_an_escape_too(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for bad in (tmp_path / "loop" / "x.png", tmp_path / "nul\x00.png"):
        with pytest.raises(PathEscapeError) as exc:
            confined(bad, tmp_path)
        assert "cannot resolve" in exc.value.reason or "outside" in exc.value.reason


# ---------------------------------------------------------------- coco: named paths

MINI = CocoOptions(splits=["mini"], test_split=None, image_size=16, captions_per_image=2)


@pytest.mark.parametrize("kind", ["other_split", "absolute", "symlink"])
def test_coco_file_name_out_of_its_split_folder_is_a_bad_sample(tmp_path: Path, kind: str) -> None:
    root = _coco_tree(tmp_path / "coco")
    other = _png(root / "val" / "photo.jpg", OUTSIDE, (60, 40))  # inside the root, in another split
    name = {"other_split": "../val/photo.jpg", "absolute": str(other), "symlink": "link.jpg"}[kind]
    if kind == "symlink":
        (root / "mini" / "link.jpg").symlink_to(other)
    path = root / "annotations" / "captions_mini.json"
    captions = json.loads(path.read_text())
    captions["images"][1]["file_name"] = name  # photo 2
    path.write_text(json.dumps(captions))
    with pytest.raises(DataError) as exc:
        load_coco(MINI, LoadContext(root))
    _one_line(exc, path, "image id 2", repr(name), "outside its split folder", root / "mini")
    ctx = LoadContext(root, on_bad_sample="skip")
    d = load_coco(MINI, ctx)
    assert d.extras["image_id"].tolist() == [1, 1] and len(ctx.skipped) == 1
    assert OUTSIDE not in d.store["image"]


# ---------------------------------------------------------------- fixed names: hapt's parent folder


def test_hapt_rawdata_as_data_dir_does_not_read_the_parent_folder(tmp_path: Path) -> None:
    hapt = write_hapt(tmp_path)
    (hapt / "activity_labels.txt").write_text("not a labels file\n")  # outside RawData/
    data = get_dataset("uci-hapt").load(
        get_dataset("uci-hapt").options(**SMALL), LoadContext(hapt / "RawData")
    )
    assert data.class_names[0] == "WALKING"
    with pytest.raises(DataError, match="activity_labels"):  # as the HAPT folder it is read, and bad
        get_dataset("uci-hapt").load(get_dataset("uci-hapt").options(**SMALL), LoadContext(hapt))


# ---------------------------------------------------------------- image size cap


def _bomb_png(path: Path, width: int, height: int) -> Path:
    """A one-bit greyscale PNG of ``width`` x ``height`` black pixels, written row by row: a few KB on
    disk (zeros compress ~1000:1) and in memory, however many pixels it declares."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_huge_png_is_refused_from_its_header_before_decoding(tmp_path: Path) -> None:
    # 49 MP (under Pillow's own 89.5 MP limit: only the cap stops it), 169 MP (Pillow merely warns),
    # 400 MP (Pillow refuses). A child process reads them and reports its memory high-water mark
    # (VmHWM, which exec resets, unlike ru_maxrss) after importing and after reading.
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs Linux /proc to read the memory high-water mark")
    sizes = [(7000, 7000), (13000, 13000), (20000, 20000)]
    paths = [_bomb_png(tmp_path / f"{w}.png", w, h) for w, h in sizes]
    assert max(p.stat().st_size for p in paths) < 64_000  # 6 KB, 21 KB, 49 KB
    code = (
        "import re, sys, warnings\n"
        "def peak():\n"
        "    with open('/proc/self/status') as status:\n"
        "        return int(re.search(r'VmHWM:\\s+(\\d+) kB', status.read())[1])\n"
        "warnings.simplefilter('always')\n"  # shown on stderr: a DecompressionBombWarning must not leak
        "from fedmosaic.data.images import ImageReadError, read_image\n"
        "before = peak()\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        read_image(path, 64)\n"
        "        print('DECODED', path)\n"
        "    except ImageReadError as exc:\n"
        "        print('REFUSED', exc)\n"
        "print('GROWTH_KB', peak() - before)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["REFUSED"] * 3 + ["GROWTH_KB"], proc.stdout
    assert "DecompressionBombWarning" not in proc.stderr, proc.stderr
    for path, line in zip(paths, lines, strict=False):
        assert f"REFUSED {path}: image too large: " in line
    assert "7000 x 7000 pixels (49.0 megapixels) exceeds the cap of 40 megapixels" in lines[0]
    assert "more than 89.5 megapixels declared" in lines[1] and "the cap is 40 megapixels" in lines[2]
    # Decoding the 169 MP image alone takes about 0.8 GB; refused from the header, the peak barely moves.
    assert int(lines[-1].split()[1]) < 20_000, lines[-1]


def test_folder_counts_an_oversized_image_as_a_bad_row(tmp_path: Path) -> None:
    root = tmp_path / "root"
    samples = _client(root, "bomb.png")
    _bomb_png(root / "c1" / "train" / "bomb.png", 13000, 13000)
    with pytest.raises(DataError) as exc:
        load_folder(FolderOptions(image_size=8), LoadContext(root))
    _one_line(exc, f"{samples}:3", "'bomb.png'", "image too large")
    ctx = LoadContext(root, on_bad_sample="skip")
    assert len(load_folder(FolderOptions(image_size=8), ctx)) == 2 and len(ctx.skipped) == 1
    # the cap is an option of the image loaders, up to Pillow's own limit
    _png(root / "c1" / "train" / "good.png", INSIDE, (1200, 1000))
    ctx = LoadContext(root, on_bad_sample="skip")
    assert len(load_folder(FolderOptions(image_size=8, max_megapixels=1), ctx)) == 1
    assert "1200 x 1000 pixels (1.2 megapixels) exceeds the cap of 1 megapixels" in ctx.skipped[0]
    for options in (FolderOptions, CocoOptions):
        with pytest.raises(ValidationError, match="max_megapixels"):
            options(max_megapixels=100)
    with pytest.raises(DataError) as exc:
        load_coco(
            CocoOptions(**{**MINI.model_dump(), "max_megapixels": 0.001}),
            LoadContext(_coco_tree(tmp_path / "coco")),
        )
    _one_line(exc, "image id 1", "60 x 40 pixels", "exceeds the cap of 0.001 megapixels")


def test_read_image_under_the_cap_still_decodes(tmp_path: Path) -> None:
    path = _png(tmp_path / "ok.png", 7, (300, 200))
    assert read_image(path, 8, 1, max_megapixels=0.06).shape == (1, 8, 8)
    with pytest.raises(ImageReadError, match="300 x 200 pixels"):
        read_image(path, 8, 1, max_megapixels=0.05)


# ---------------------------------------------------------------- test classes no client holds


def _starved_tree(root: Path) -> Path:
    """Two clients with classes cat and dog; the server's test folder also has 'bird' (2 samples)."""
    for client in ("c1", "c2"):
        rows = [{"image": "p.png", "text": f"a {label}", "label": label} for label in ("cat", "dog", "cat")]
        _png(root / client / "train" / "p.png", INSIDE)
        _write_samples(root / client / "train", rows)
    _png(root / "server" / "test" / "p.png", INSIDE)
    rows = [
        {"image": "p.png", "text": f"a {label}", "label": label} for label in ("cat", "dog", "bird", "bird")
    ]
    _write_samples(root / "server" / "test", rows)
    return root


STARVED = [
    "task.dataset=folder",
    "task.partition=natural",
    'clients.mix=""',
    "task.proxy_size=0",
    "task.labelled_size=0",
    "task.val_fraction=0",
    "task.options.image_size=8",
]


def test_a_test_class_no_client_holds_is_recorded_and_warned(tmp_path: Path, caplog) -> None:
    root = _starved_tree(tmp_path / "root")
    with caplog.at_level(logging.WARNING, logger="fedmosaic.data"):
        task = build_task(load_config(None, [*STARVED, f"task.data_dir={root}"]))
    assert task.data_summary()["test_classes_without_clients"] == {"bird": 2}
    [record] = [r for r in caplog.records if r.name == "fedmosaic.data"]
    assert (
        "test class 'bird' (2 test samples)" in record.getMessage() and "only score 0" in record.getMessage()
    )
    # A class a client holds only in its validation folder is still never trained on.
    _write_samples(root / "c1" / "val", [{"image": "", "text": "a bird", "label": "bird"}])
    task = build_task(load_config(None, [*STARVED, f"task.data_dir={root}"]))
    assert task.data_summary()["test_classes_without_clients"] == {"bird": 2}
    # Every test class held: nothing recorded, nothing said.
    (root / "c1" / "val" / "samples.csv").unlink()
    (root / "c1" / "val").rmdir()
    _write_samples(root / "c2" / "train", [{"image": "p.png", "text": "a bird", "label": "bird"}] * 2)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fedmosaic.data"):
        task = build_task(load_config(None, [*STARVED, f"task.data_dir={root}"]))
    assert task.data_summary()["test_classes_without_clients"] == {}
    assert not [r for r in caplog.records if r.name == "fedmosaic.data"]


def test_the_cli_warns_on_the_terminal_and_summary_json_records_it(tmp_path: Path) -> None:
    root = _starved_tree(tmp_path / "root")
    out = tmp_path / "run"
    args = ["run", "-q", "--out", str(out)]
    for item in [*STARVED, f"task.data_dir={root}", "rounds=1", "compare=[]", "algorithm.name=local"]:
        args += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "FLWR_TELEMETRY_ENABLED": "0"}
    code = "import sys; from fedmosaic.cli import app; sys.argv[0] = 'fedmosaic'; app()"
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tempfile.gettempdir(),
    )
    assert proc.returncode == 0, proc.stderr
    assert "no client has a training sample of test class 'bird' (2 test samples)" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["test_classes_without_clients"] == {"bird": 2}
