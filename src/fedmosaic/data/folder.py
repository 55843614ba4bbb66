"""A user's own image/text data laid out as one folder per client (``task.dataset = "folder"``).

Layout under ``task.data_dir`` (ROOT)::

    ROOT/<client>/train/samples.csv|samples.jsonl   + the image files it names (required)
    ROOT/<client>/val/...                           the client's own validation rows (ROLE_VAL)
    ROOT/server/test/...                            ROLE_TEST       (all three optional)
    ROOT/server/proxy/...                           ROLE_PROXY      (labels may be empty or absent)
    ROOT/server/labelled/...                        ROLE_LABELLED

Each samples file has the columns (CSV header, or JSON keys per line) ``image`` (a path relative to
the file's folder), ``text`` and ``label`` (a string). ``image`` or ``text`` may be missing or empty:
that sample lacks the modality (``LoadedData.present``). Clients are every folder under ROOT but
``server`` (hidden folders ignored), in natural order (``client_2`` before ``client_10``); a sample's
group is its client, server samples have group -1. Class names are the sorted union of the labels.
Proxy rows without a label get label 0 as a placeholder and ``extras["labelled"]`` False.

**Confinement.** A client folder is one site: every file a client's samples name must resolve (``..``
and symlinks followed) inside that client's own folder ``ROOT/<client>/``, and every file a server
part names inside ``ROOT/server/`` (``data/paths.py``). Not merely inside ROOT: a row of one client
naming another client's or the server's file would put one picture in two parts (a test image in
training) and, deployed, read another site's data. An escape is a bad sample naming the samples file
and row; a client folder or samples file that itself resolves out of ROOT stops the load.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fedmosaic.core.modality import Modality
from fedmosaic.data.images import DEFAULT_MAX_MEGAPIXELS, PILLOW_MAX_MEGAPIXELS, ImageReadError, read_image
from fedmosaic.data.paths import PathEscapeError, confined, data_root
from fedmosaic.data.registry import (
    ROLE_FREE,
    ROLE_LABELLED,
    ROLE_PROXY,
    ROLE_TEST,
    ROLE_VAL,
    DataError,
    DatasetEntry,
    LoadContext,
    LoadedData,
    register_dataset,
)

DATASET = "folder"
SERVER = "server"
SAMPLE_FILES = ("samples.csv", "samples.jsonl")
SERVER_PARTS = {"test": ROLE_TEST, "proxy": ROLE_PROXY, "labelled": ROLE_LABELLED}
COLUMNS = ("image", "text", "label")


class FolderOptions(BaseModel):
    """Options of the ``folder`` data set (``[task.options]``)."""

    model_config = ConfigDict(extra="forbid")
    image_size: int = Field(
        64, ge=8, le=512, description="square image side in pixels (centre crop + resize)"
    )
    channels: Literal[1, 3] = Field(3, description="image channels: 1 = greyscale, 3 = RGB")
    max_tokens: int = Field(32, ge=4, le=512, description="text length in tokens after tokenisation")
    max_megapixels: float = Field(
        DEFAULT_MAX_MEGAPIXELS,
        gt=0,
        le=PILLOW_MAX_MEGAPIXELS,
        description="an image whose header declares more pixels is a bad sample, refused before decoding",
    )


@dataclass
class _Sample:
    source: str  # "file:line", for messages and extras
    image: np.ndarray | None
    text: str
    label: str
    group: int
    role: int


def _modality_names(_: BaseModel) -> tuple[str, ...]:
    return ("image", "text")


def _modalities(options: BaseModel) -> tuple[Modality, ...]:
    assert isinstance(options, FolderOptions)
    size = options.image_size
    return (
        Modality("image", "image", (options.channels, size, size)),
        Modality("text", "text", (options.max_tokens,)),
    )


def natural_key(name: str) -> tuple[list[object], str]:
    """Sort key putting ``client_2`` before ``client_10`` (digit runs compare as numbers)."""
    # re.split with a capturing group alternates text, digits, text...: positions always align.
    parts = re.split(r"(\d+)", name)
    return [int(p) if i % 2 else p.lower() for i, p in enumerate(parts)], name


def _samples_file(folder: Path) -> Path:
    found = [folder / name for name in SAMPLE_FILES if (folder / name).is_file()]
    if not found:
        raise DataError(f"{folder}: no samples.csv or samples.jsonl")
    if len(found) > 1:
        raise DataError(f"{folder}: both samples.csv and samples.jsonl; keep one")
    return found[0]


def _csv_rows(path: Path, ctx: LoadContext, label_required: bool) -> Iterator[tuple[int, dict[str, object]]]:
    with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets often write a BOM
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: empty file (expected a header such as image,text,label)")
            header = [h.strip() for h in header]
            if label_required and "label" not in header:
                raise DataError(f"{path}:1: no 'label' column in the header ({','.join(header)})")
            if "image" not in header and "text" not in header:
                raise DataError(
                    f"{path}:1: the header needs an 'image' or a 'text' column ({','.join(header)})"
                )
            for fields in reader:
                if not fields:  # blank line
                    continue
                if len(fields) != len(header):
                    ctx.bad(
                        path,
                        f"expected {len(header)} fields ({','.join(header)}), found {len(fields)}",
                        line=reader.line_num,
                    )
                    continue
                yield reader.line_num, dict(zip(header, fields, strict=True))
        except csv.Error as exc:  # e.g. a NUL byte: the reader cannot resync, so the file is unusable
            raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from exc


def _jsonl_rows(
    path: Path, ctx: LoadContext, label_required: bool
) -> Iterator[tuple[int, dict[str, object]]]:
    with path.open(encoding="utf-8-sig") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                ctx.bad(path, f"not valid JSON ({exc.msg})", line=number)
                continue
            except RecursionError:  # json's decoder recurses once per nesting level
                ctx.bad(path, "JSON nested too deeply", line=number)
                continue
            if not isinstance(row, dict):
                ctx.bad(path, "not a JSON object", line=number)
                continue
            if label_required and "label" not in row:
                ctx.bad(path, "no 'label' key", line=number)
                continue
            if "image" not in row and "text" not in row:
                ctx.bad(path, "neither an 'image' nor a 'text' key", line=number)
                continue
            yield number, row


def _field(row: dict[str, object], key: str, path: Path, line: int, ctx: LoadContext) -> str | None:
    """A column as a stripped string ("" when absent, empty or null); None after reporting a bad type."""
    value = row.get(key)
    if value is None:
        return ""
    if key == "label" and isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)  # JSON labels may be numbers; labels are strings
    if not isinstance(value, str):
        ctx.bad(path, f"'{key}' must be a string, got {type(value).__name__}", line=line)
        return None
    return value.strip()


def _read_part(
    folder: Path, site: Path, group: int, role: int, options: FolderOptions, ctx: LoadContext
) -> list[_Sample]:
    """Every good row of one folder's samples file (bad rows go to ``ctx.bad``); every file it names
    must lie inside ``site`` (the client's or the server's folder)."""
    site_name = "its server folder" if group < 0 else "its client folder"
    path = confined(_samples_file(folder), site, site_name)
    label_required = role != ROLE_PROXY
    reader = _csv_rows if path.suffix == ".csv" else _jsonl_rows
    out: list[_Sample] = []
    try:
        for line, row in reader(path, ctx, label_required):
            values = []
            for key in COLUMNS:  # stop at the first bad field: one bad row is one skipped sample
                value = _field(row, key, path, line, ctx)
                if value is None:
                    break
                values.append(value)
            if len(values) < len(COLUMNS):
                continue
            image_rel, text, label = values
            if not image_rel and not text:
                ctx.bad(path, "row has neither an image nor a text", line=line)
                continue
            if label_required and not label:
                ctx.bad(path, "empty label", line=line)
                continue
            image = None
            if image_rel:
                try:
                    image_path = confined(folder / image_rel, site, site_name)
                    image = read_image(
                        image_path, options.image_size, options.channels, options.max_megapixels
                    )
                except PathEscapeError as exc:
                    ctx.bad(path, f"image {image_rel!r} {exc.reason}", line=line)
                    continue
                except ImageReadError as exc:
                    ctx.bad(path, f"image {image_rel!r}: {exc.reason}", line=line)
                    continue
            out.append(_Sample(f"{path}:{line}", image, text, label, group, role))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return out


def _parts(root: Path) -> tuple[tuple[str, ...], list[tuple[Path, Path, int, int]]]:
    """Client names and every ``(folder, site, group, role)`` to read, checking the layout.

    ``site`` is the resolved client (or server) folder the part's files must stay in; a site that
    itself resolves out of ``root`` (a symlinked client folder) is a layout error.
    """
    clients = sorted(
        (p.name for p in root.iterdir() if p.is_dir() and p.name != SERVER and not p.name.startswith(".")),
        key=natural_key,
    )
    if not clients:
        raise DataError(f"{root}: no client folders (expected ROOT/<client>/train/samples.csv)")
    parts: list[tuple[Path, Path, int, int]] = []
    for k, name in enumerate(clients):
        site = confined(root / name, root, "the data root")
        if not (root / name / "train").is_dir():
            raise DataError(f"{root / name}: client folder has no train/ folder")
        parts.append((root / name / "train", site, k, ROLE_FREE))
        if (root / name / "val").is_dir():
            parts.append((root / name / "val", site, k, ROLE_VAL))
    server = root / SERVER
    if server.is_dir():
        site = confined(server, root, "the data root")
        for sub in sorted(p for p in server.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if sub.name not in SERVER_PARTS:
                raise DataError(f"{sub}: unknown server folder (expected {', '.join(SERVER_PARTS)})")
            parts.append((sub, site, -1, SERVER_PARTS[sub.name]))
    return tuple(clients), parts


def load(options: BaseModel, ctx: LoadContext) -> LoadedData:
    """Read every client's and the server's samples under ``ctx.data_dir`` (layout in the module doc)."""
    assert isinstance(options, FolderOptions)
    root = data_root(ctx, DATASET)
    skipped_before = len(ctx.skipped)
    clients, parts = _parts(root)
    samples = [
        s for folder, site, group, role in parts for s in _read_part(folder, site, group, role, options, ctx)
    ]
    if not samples:
        raise DataError(f"{root}: no usable samples")
    class_names = tuple(sorted({s.label for s in samples if s.label}))
    if not class_names:
        raise DataError(f"{root}: no sample has a label")
    column = {name: j for j, name in enumerate(class_names)}

    n, size, channels = len(samples), options.image_size, options.channels
    # A sample without an image still needs a store row; it stays zero and is never read: `present`
    # marks it absent and the View leaves absent modalities out of every batch.
    images = np.zeros((n, channels, size, size), dtype=np.uint8)
    for i, s in enumerate(samples):
        if s.image is not None:
            images[i] = s.image
    present = np.array([(s.image is not None, bool(s.text)) for s in samples], dtype=bool).reshape(n, 2)
    labelled = np.array([bool(s.label) for s in samples])
    loaded = LoadedData(
        modalities=(
            Modality("image", "image", (channels, size, size)),
            Modality("text", "text", (options.max_tokens,), vocab_size=None),
        ),
        store={"image": images},
        # Absent texts are "" for the same reason: one entry per sample, masked out by `present`.
        texts={"text": [s.text for s in samples]},
        # Proxy rows without a label get 0 as a placeholder (extras["labelled"] is False for them).
        labels=np.array([column[s.label] if s.label else 0 for s in samples], dtype=np.int64),
        class_names=class_names,
        extras={"source": [s.source for s in samples], "labelled": labelled},
        groups=np.array([s.group for s in samples], dtype=np.int64),
        group_names=clients,
        role=np.array([s.role for s in samples], dtype=np.int64),
        present=present,
        skipped=list(ctx.skipped[skipped_before:]),
    )
    loaded.check()
    return loaded


register_dataset(
    DatasetEntry(
        DATASET,
        FolderOptions,
        _modality_names,
        load,
        needs_data_dir=True,
        natural_unit="client",
        modalities=_modalities,
    )
)
