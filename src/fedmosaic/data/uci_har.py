"""UCI HAR v1 (``task.dataset = "uci-har"``): the official pre-cut 128-sample windows per subject.

Layout (as UCI ships it)::

    UCI HAR Dataset/activity_labels.txt                  "1 WALKING" ... "6 LAYING"
    UCI HAR Dataset/{train,test}/y_{split}.txt           one activity id (1-6) per window
    UCI HAR Dataset/{train,test}/subject_{split}.txt     one subject id per window
    UCI HAR Dataset/{train,test}/Inertial Signals/{total_acc,body_acc,body_gyro}_{x,y,z}_{split}.txt
                                                         one window of 128 readings (50 Hz) per row

``task.data_dir`` is the ``UCI HAR Dataset`` folder or its parent. Row ``i`` of every file of a split
is window ``i``. ``acc = "total"`` reads ``total_acc`` (gravity included), ``"body"`` reads
``body_acc``; gyro is ``body_gyro``. The official windows overlap by 50% within a run of one subject
doing one activity, so consecutive rows with the same subject and label in one split form a block.

Bad input: a signal row that is not 128 numbers (or holds NaN/Inf or a value beyond float32), a
label outside 1-6 or a subject
id that is not a positive integer drops that window under ``on_bad_sample = "skip"``; a missing file
or files of one split with different row counts is a :class:`DataError`. ``extras["origin"]`` holds
``(split, row)`` per window (split 0 = train, 1 = test; row 0-based) to trace it back to its files.
Every file must resolve (symlinks followed) inside ``task.data_dir`` (``data/paths.py``); one that
does not is a :class:`DataError`, like a missing file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fedmosaic.core.modality import Modality
from fedmosaic.data import windows as W
from fedmosaic.data.paths import confined, data_root
from fedmosaic.data.registry import (
    ROLE_FREE,
    ROLE_TEST,
    DataError,
    DatasetEntry,
    LoadContext,
    LoadedData,
    register_dataset,
)

SAMPLE_RATE_HZ = 50
WINDOW = 128
SPLITS = ("train", "test")
SENSORS = ("acc", "gyro")
STANDARD_NAMES = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING")


class HarOptions(BaseModel):
    """Options of the ``uci-har`` data set."""

    model_config = ConfigDict(extra="forbid")

    acc: Literal["total", "body"] = Field(
        "total", description="total = total_acc (gravity included); body = body_acc (gravity removed)"
    )
    test_split: Literal["official", "none"] = Field(
        "official", description="official = the windows of the test folder are test samples"
    )


def _modality_names(_: BaseModel) -> tuple[str, ...]:
    return SENSORS


def _modalities(_: BaseModel) -> tuple[Modality, ...]:
    return tuple(Modality(m, "timeseries", (3, WINDOW)) for m in SENSORS)


def find_root(data_dir: Path) -> Path:
    """The ``UCI HAR Dataset`` folder: ``data_dir`` itself or ``data_dir/UCI HAR Dataset``."""
    for root in (data_dir, data_dir / "UCI HAR Dataset"):
        if (root / "train").is_dir() and (root / "test").is_dir():
            return root
    raise DataError(
        f"task.data_dir: {str(data_dir)!r} is neither the 'UCI HAR Dataset' folder "
        "(holding train/ and test/) nor its parent"
    )


def _signal_files(root: Path, split: str, acc: str) -> dict[str, list[Path]]:
    """The three per-axis files of each modality for one split."""
    folder = root / split / "Inertial Signals"
    prefix = {"acc": f"{acc}_acc", "gyro": "body_gyro"}
    return {m: [folder / f"{prefix[m]}_{axis}_{split}.txt" for axis in "xyz"] for m in SENSORS}


def _read_split(root: Path, data: Path, split: str, acc: str, ctx: LoadContext) -> dict[str, np.ndarray]:
    """One split's windows, labels (0-based), subjects and run blocks, bad rows dropped; every file
    read must lie inside ``data`` (the resolved ``task.data_dir``)."""
    y = W.read_table(confined(root / split / f"y_{split}.txt", data), 1)
    subject = W.read_table(confined(root / split / f"subject_{split}.txt", data), 1)
    tables = {
        m: [W.read_table(confined(p, data), WINDOW) for p in paths]
        for m, paths in _signal_files(root, split, acc).items()
    }
    signals = [t for ts in tables.values() for t in ts]
    for table in [*signals[1:], y, subject]:  # rows are matched by position: every count must agree
        if len(table) != len(signals[0]):
            raise DataError(
                f"{table.path}: has {len(table)} rows but {signals[0].path.name} has {len(signals[0])}"
            )
    labels = W.int_column(y, 0, 1, len(STANDARD_NAMES), "activity id") - 1
    subjects = W.int_column(subject, 0, 1, 10**6, "subject id")
    bad = y.report(ctx) | subject.report(ctx)
    for table in signals:
        bad |= table.report(ctx)
    # A bad label (-1) splits its run in two; harmless, as windows two rows apart share no readings.
    key = subjects * (len(STANDARD_NAMES) + 1) + labels
    run_starts, run_ends, _ = W.runs(key)
    blocks = np.repeat(np.arange(len(run_starts)), run_ends - run_starts)
    keep = ~bad
    out = {m: np.stack([t.values[keep] for t in ts], axis=1).astype(np.float32) for m, ts in tables.items()}
    out.update(labels=labels[keep], subjects=subjects[keep], blocks=blocks[keep], row=np.flatnonzero(keep))
    return out


def load(options: BaseModel, ctx: LoadContext) -> LoadedData:
    """Read the official UCI HAR windows under ``ctx.data_dir`` (both splits)."""
    assert isinstance(options, HarOptions)
    skipped_before = len(ctx.skipped)
    data = data_root(ctx, "uci-har")
    root = confined(find_root(data), data)
    class_names = W.read_activity_labels(confined(root / "activity_labels.txt", data), STANDARD_NAMES)
    splits = [_read_split(root, data, split, options.acc, ctx) for split in SPLITS]
    n_train = len(splits[0]["labels"])
    cat = {k: np.concatenate([s[k] for s in splits]) for k in splits[0]}
    cat["blocks"][n_train:] += splits[0]["blocks"].max(initial=-1) + 1  # runs never span splits
    if not len(cat["labels"]):
        raise DataError(f"{root}: no window left to load")
    groups, subjects = W.compact_ids(cat["subjects"])
    blocks, _ = W.compact_ids(cat["blocks"])
    role = np.full(len(groups), ROLE_FREE, dtype=np.int8)
    if options.test_split == "official":
        role[n_train:] = ROLE_TEST
    labels = cat["labels"]
    loaded = LoadedData(
        modalities=tuple(Modality(m, "timeseries", (3, WINDOW)) for m in SENSORS),
        store={m: cat[m] for m in SENSORS},
        labels=labels,
        class_names=class_names,
        extras={
            "sample_rate_hz": SAMPLE_RATE_HZ,
            "windows_per_class": W.windows_per_class(labels, class_names),
            "n_official_test": len(labels) - n_train,
            "origin": np.stack([(np.arange(len(labels)) >= n_train).astype(np.int64), cat["row"]], axis=1),
        },
        groups=groups,
        group_names=tuple(f"subject_{s:02d}" for s in subjects),
        blocks=blocks,
        role=role,
        skipped=list(ctx.skipped[skipped_before:]),
    )
    loaded.check()
    return loaded


register_dataset(
    DatasetEntry(
        "uci-har",
        HarOptions,
        _modality_names,
        load,
        needs_data_dir=True,
        natural_unit="subject",
        modalities=_modalities,
    )
)
