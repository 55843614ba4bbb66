"""Loader fuzzing: hypothesis corrupts one file of a small valid data set for every loader.

For each loader (uci-hapt, uci-har, mhealth, fsdd-digits, coco, folder) a small tree in the
publisher's layout is written (the writers of test_sensor_loaders.py / test_media_loaders.py), then
one of its files is damaged by one *kind* of corruption: truncated, garbage bytes, wrong encoding,
wrong column/field counts, NaN/Inf, huge values, emptied, deleted. The loader runs under both
bad-sample policies and must end in one of two ways only:

- a :class:`~fedmosaic.data.registry.DataError`: one line naming a file (or ``task.data_dir``);
- data (``LoadedData.check`` passes, every float store finite); and whatever ``"error"`` refused
  but ``"skip"`` loaded was counted as skipped.

Anything else -- a traceback from numpy, Pillow, soundfile, librosa, json -- fails the test. The
last test prints how many malformed inputs were tried, by kind (``pytest -rP``); docs/data.md
quotes it.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedmosaic.data.coco import CocoOptions
from fedmosaic.data.folder import FolderOptions
from fedmosaic.data.fsdd_digits import FsddDigitsOptions
from fedmosaic.data.mhealth import MhealthOptions
from fedmosaic.data.registry import DataError, LoadContext, dataset_names, get_dataset
from fedmosaic.data.uci_hapt import HaptOptions
from fedmosaic.data.uci_har import HarOptions
from test_media_loaders import _coco_tree, _small_tree
from test_sensor_loaders import write_hapt, write_har
from test_sensor_loaders import write_mhealth as write_mh

# Per (loader, kind): the whole file stays under a minute on a loaded 2-core machine. A deeper hunt:
# FEDMOSAIC_FUZZ_EXAMPLES=40 pytest tests/test_loader_fuzz.py
EXAMPLES = int(os.environ.get("FEDMOSAIC_FUZZ_EXAMPLES", "6"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same inputs every run, so the counts in docs/data.md reproduce
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
KINDS = ("truncated", "garbage", "encoding", "columns", "nan", "huge", "empty", "missing")
TRIED: Counter[tuple[str, str]] = Counter()


# ---------------------------------------------------------------------------- valid trees


def _wav_tree(root: Path) -> Path:
    """FSDD-style recordings: digits 0-2, two speakers, takes 0 (test) and 5 (train)."""
    folder = root / "recordings"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for digit in range(3):
        for speaker in ("ann", "bob"):
            for take in (0, 5):
                tone = np.sin(np.arange(1200) * (digit + 1) / 9) * 0.3 + 0.01 * rng.normal(size=1200)
                soundfile.write(folder / f"{digit}_{speaker}_{take}.wav", tone, 8000, subtype="PCM_16")
    return root


# loader -> (writes a valid tree under a folder and returns data_dir, options, files to damage)
TREES: dict[str, tuple[Callable[[Path], Path], object, Callable[[Path], list[Path]]]] = {
    "uci-hapt": (
        write_hapt,
        HaptOptions(window=32, overlap=0.5),
        lambda d: [*sorted((d / "RawData").glob("*.txt")), d / "activity_labels.txt"],
    ),
    "uci-har": (
        write_har,
        HarOptions(),
        lambda d: sorted(d.rglob("*.txt")),
    ),
    "mhealth": (
        lambda root: write_mh(root / "mh"),
        MhealthOptions(window=16, modalities=["acc", "gyro"]),
        lambda d: sorted(d.glob("*.log")),
    ),
    "fsdd-digits": (
        _wav_tree,
        FsddDigitsOptions(n_mels=8, frames=8, n_fft=256, hop_length=128),
        lambda d: sorted((d / "recordings").glob("*.wav")),
    ),
    "coco": (
        lambda root: _coco_tree(root / "coco"),
        CocoOptions(splits=["mini"], test_split=None, image_size=16, captions_per_image=2),
        lambda d: sorted((d / "annotations").glob("*.json")) + sorted((d / "mini").glob("*.jpg")),
    ),
    "folder": (
        lambda root: _small_tree(root / "folder"),
        FolderOptions(image_size=8),
        lambda d: sorted(p for p in d.rglob("*") if p.is_file()),
    ),
}


# ---------------------------------------------------------------------------- corruptions

NUMBER = re.compile(rb"-?\d+(\.\d+)?([eE][-+]?\d+)?")
NAN_TOKENS = (b"nan", b"NaN", b"inf", b"-inf", b"Infinity", b"-Infinity", b"1e999")
HUGE_TOKENS = (b"1e39", b"-3.5e38", b"1e308", b"-1.7976931348623157e308", b"9" * 40, b"1e-320")


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    return {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".wav": "wav"}.get(
        suffix, "image" if suffix in (".jpg", ".png") else "table"
    )


def _replace_number(raw: bytes, data: st.DataObject, tokens: tuple[bytes, ...]) -> bytes:
    """One number in ``raw`` replaced by one of ``tokens`` (appended when there is none)."""
    spans = [m.span() for m in NUMBER.finditer(raw)]
    token = data.draw(st.sampled_from(tokens))
    if not spans:
        return raw + b" " + token
    start, end = data.draw(st.sampled_from(spans))
    return raw[:start] + token + raw[end:]


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG declaring ``width`` x ``height`` pixels (a decompression-bomb header), 1 pixel of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: (  # noqa: E731
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    )
    idat = zlib.compress(b"\x00\x00\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _change_columns(raw: bytes, fmt: str, data: st.DataObject) -> bytes:
    """One line/record with a field too many or too few (or a JSON record with a key removed or retyped)."""
    if fmt == "json":
        doc = json.loads(raw)
        lists = [k for k, v in doc.items() if isinstance(v, list) and v]
        key = data.draw(st.sampled_from(sorted(lists)))
        record = data.draw(st.sampled_from(doc[key]))
        field = data.draw(st.sampled_from(sorted(record)))
        if data.draw(st.booleans()):
            del record[field]
        else:
            record[field] = data.draw(st.sampled_from([None, [], {}, "x", -1, True]))
        return json.dumps(doc).encode()
    lines = raw.split(b"\n")
    candidates = [i for i, line in enumerate(lines) if line.strip()]
    i = data.draw(st.sampled_from(candidates))
    sep = b"," if fmt == "csv" else b" "
    if fmt == "jsonl":
        row = json.loads(lines[i])
        row[data.draw(st.sampled_from(["extra", "image", "label", "text"]))] = data.draw(
            st.sampled_from([None, 3, [1], {"a": 1}, "x"])
        )
        if data.draw(st.booleans()) and row:
            del row[data.draw(st.sampled_from(sorted(row)))]
        lines[i] = json.dumps(row).encode()
    elif data.draw(st.booleans()):
        lines[i] = lines[i] + sep + b"1"
    else:
        fields = lines[i].split(sep) if fmt == "csv" else lines[i].split()
        lines[i] = sep.join(fields[:-1])
    return b"\n".join(lines)


def corrupt(path: Path, kind: str, data: st.DataObject) -> None:
    """Damage ``path`` in place with one corruption of ``kind``."""
    fmt = _format(path)
    raw = path.read_bytes()
    if kind == "missing":
        path.unlink()
        return
    if kind == "empty":
        out = b""
    elif kind == "truncated":
        out = raw[: data.draw(st.integers(0, max(0, len(raw) - 1)))]
    elif kind == "garbage":
        blob = data.draw(st.binary(min_size=1, max_size=64))
        at = data.draw(st.integers(0, len(raw)))
        out = raw[:at] + blob + raw[at + len(blob) :]
    elif kind == "encoding":
        choice = data.draw(st.sampled_from(["utf-16", "latin-1-bytes", "nul"]))
        if choice == "utf-16":  # the whole file in another encoding
            out = raw.decode("utf-8", errors="replace").encode("utf-16")
        else:
            bad = b"\xff\xfe\xe9\x80" if choice == "latin-1-bytes" else b"\x00"
            at = data.draw(st.integers(0, len(raw)))
            out = raw[:at] + bad + raw[at:]
    elif kind == "columns":
        # images and WAVs have no columns: a header field is changed instead
        out = _patch_header(raw, fmt, data) if fmt in ("image", "wav") else _change_columns(raw, fmt, data)
    elif kind == "nan":
        if fmt == "wav":
            samples = np.full(800, np.nan if data.draw(st.booleans()) else np.inf, dtype=np.float32)
            soundfile.write(path, samples, 8000, subtype="FLOAT")
            return
        out = raw if fmt == "image" else _replace_number(raw, data, NAN_TOKENS)
        if fmt == "image":
            out = _patch_header(raw, fmt, data)
    else:  # huge
        if fmt == "image":
            out = _png_claiming(data.draw(st.sampled_from([100_000, 2**31 - 1])), 100_000)
        elif fmt == "wav":
            out = _patch_header(raw, fmt, data)
        elif fmt in ("json", "jsonl") and data.draw(st.booleans()):  # huge nesting depth
            depth = data.draw(st.sampled_from([2_000, 100_000]))
            nested = b"[" * depth + b"]" * depth
            out = nested if fmt == "json" else raw + b'{"text": "x", "label": ' + nested + b"}\n"
        else:
            out = _replace_number(raw, data, HUGE_TOKENS)
    path.write_bytes(out)


def _patch_header(raw: bytes, fmt: str, data: st.DataObject) -> bytes:
    """A WAV with an absurd sample rate / channel count / bit depth, or an image with bytes flipped in
    its header."""
    if fmt == "wav" and len(raw) >= 36:
        offset, size = data.draw(st.sampled_from([(22, "<H"), (24, "<I"), (34, "<H")]))
        value = data.draw(st.sampled_from([0, 1, 3, 65535] if size == "<H" else [0, 1, 7, 4_000_000_000]))
        return raw[:offset] + struct.pack(size, value) + raw[offset + struct.calcsize(size) :]
    at = data.draw(st.integers(0, min(len(raw), 64)))
    return raw[:at] + bytes([data.draw(st.integers(0, 255))]) + raw[at + 1 :]


# ---------------------------------------------------------------------------- the property


def _outcome(loader: str, data_dir: Path, options: object, policy: str) -> tuple[str, object]:
    """("error", one-line message) or ("ok", (LoadedData, skipped)); any other exception propagates."""
    ctx = LoadContext(data_dir=data_dir, on_bad_sample=policy)  # type: ignore[arg-type]
    try:
        loaded = get_dataset(loader).load(options, ctx)  # type: ignore[arg-type]
    except DataError as exc:
        message = str(exc)
        assert message.strip() and "\n" not in message, repr(message)
        assert str(data_dir) in message or "task.data_dir" in message, message  # names the file
        return "error", message
    for name, array in loaded.store.items():
        if np.issubdtype(array.dtype, np.floating):
            assert np.isfinite(array).all(), f"{loader}: non-finite values reached store[{name!r}]"
    assert loaded.skipped == ctx.skipped
    return "ok", (loaded, list(ctx.skipped))


def check_loader(loader: str, kind: str, data: st.DataObject) -> None:
    write, options, files = TREES[loader]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = write(Path(tmp))
        target = data.draw(st.sampled_from(files(data_dir)), label="file")
        corrupt(target, kind, data)
        TRIED[(loader, kind)] += 1
        strict = _outcome(loader, data_dir, options, "error")
        lenient = _outcome(loader, data_dir, options, "skip")
    if strict[0] == "ok":  # nothing was refused: nothing may be skipped, the same samples load
        assert lenient[0] == "ok"
        assert lenient[1][1] == [] and len(lenient[1][0]) == len(strict[1][0])
    elif lenient[0] == "ok":  # refused under "error", loaded under "skip": a counted skip
        assert lenient[1][1], f"{loader}/{kind}: {strict[1]} but nothing was counted as skipped"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("loader", sorted(TREES))
@FUZZ
@given(data=st.data())
def test_a_malformed_file_is_a_one_line_error_or_a_counted_skip(loader: str, kind: str, data) -> None:
    check_loader(loader, kind, data)


# ---------------------------------------------------------------------------- what fuzzing found


def test_a_finite_value_beyond_float32_is_a_bad_line(tmp_path: Path) -> None:
    """Found by fuzzing: 1e39 parses as a finite float64 but became inf in the float32 windows."""
    from fedmosaic.data import windows as W

    path = tmp_path / "t.txt"
    path.write_text("1 2 3\n4 1e39 6\n7 8 -3.5e38\n3.4e38 0 0\n")
    table = W.read_table(path, 3)
    assert [line for line, _ in table.bad] == [2, 3] and "float32" in table.bad[0][1]
    write, options, files = TREES["mhealth"]
    data_dir = write(tmp_path)
    log = files(data_dir)[0]
    lines = log.read_text().split("\n")
    lines[40] = "\t".join(["1e39"] * 23 + ["1"])
    log.write_text("\n".join(lines))
    assert _outcome("mhealth", data_dir, options, "error") == (
        "error",
        f'{log}:41: value beyond the float32 range (|x| > 3.4e+38) (set task.on_bad_sample = "skip" '
        "to skip such samples)",
    )
    kind, (_, skipped) = _outcome("mhealth", data_dir, options, "skip")  # finite stores are checked
    assert kind == "ok" and skipped == [f"{log}:41: value beyond the float32 range (|x| > 3.4e+38)"]


def test_json_nested_too_deeply_is_a_one_line_error_or_a_counted_skip(tmp_path: Path) -> None:
    """Found by fuzzing: json's decoder raised RecursionError from deep inside the standard library."""
    nested = "[" * 100_000 + "]" * 100_000
    write, options, _ = TREES["coco"]
    coco = write(tmp_path / "c")
    (coco / "annotations" / "captions_mini.json").write_text(nested)
    for policy in ("error", "skip"):
        kind, message = _outcome("coco", coco, options, policy)
        assert kind == "error" and "nested too deeply" in message
    write, options, _ = TREES["folder"]
    folder = write(tmp_path / "f")
    samples = folder / "server" / "proxy" / "samples.jsonl"
    samples.write_text(samples.read_text() + '{"text": "x", "label": ' + nested + "}\n")
    kind, message = _outcome("folder", folder, options, "error")
    assert kind == "error" and message.startswith(f"{samples}:3: JSON nested too deeply")
    kind, (_, skipped) = _outcome("folder", folder, options, "skip")
    assert kind == "ok" and skipped == [f"{samples}:3: JSON nested too deeply"]


def test_every_loader_is_fuzzed() -> None:
    # built-in loaders only: other test modules register toy data sets as plug-ins would
    builtin = {n for n in dataset_names() if get_dataset(n).load.__module__.startswith("fedmosaic.")}
    assert set(TREES) == builtin - {"synthetic"}  # generated in memory: no file to damage


def test_zz_report_how_many_malformed_inputs_were_tried() -> None:
    """Printed with ``pytest -rP``: the count by kind (and by loader) for docs/data.md."""
    if not TRIED:
        pytest.skip("run together with the fuzz tests")
    by_kind = Counter()
    for (_, kind), n in TRIED.items():
        by_kind[kind] += n
    lines = [f"{kind}: {by_kind[kind]}" for kind in KINDS]
    lines.append(f"total: {sum(by_kind.values())}")
    lines += [
        f"{loader}: {sum(n for (ld, _), n in TRIED.items() if ld == loader)}" for loader in sorted(TREES)
    ]
    print("\n".join(lines))
    assert all(by_kind[kind] > 0 for kind in KINDS)
