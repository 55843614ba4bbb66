"""UCI mHealth (``task.dataset = "mhealth"``): body-worn sensor windows per subject.

Layout (as UCI ships it): ``mHealth_subjectN.log`` for N = 1..10, in ``task.data_dir`` or in a
``MHEALTHDATASET`` folder inside it. Each line is one reading at 50 Hz with 24 whitespace-separated
columns (the UCI description speaks of 23 columns, counting the signals only; the label is the 24th)::

    1-3 chest acc    4-5 ECG leads 1 and 2    6-8 ankle acc    9-11 ankle gyro   12-14 ankle mag
    15-17 arm acc    18-20 arm gyro           21-23 arm mag    24 label (0 = null, 1-12 activities)

Modalities (pick with ``modalities``): ``acc`` = chest + ankle + arm acc (9 channels), ``gyro`` =
ankle + arm (6), ``mag`` = ankle + arm (6), ``ecg`` = 2 leads. Windows are cut inside contiguous
runs of one non-null label ("inside" rule: a window lies entirely inside one run and takes its label),
one block per run. Null-class rows are never windowed.

Bad input: a row that is not 24 numbers, holds NaN/Inf or a value beyond float32, or has a label
that is not an integer 0-12
drops only the windows that cover it under ``on_bad_sample = "skip"``; a missing folder or an empty
file is a :class:`DataError`, and so is a log that resolves (symlinks followed) outside
``task.data_dir`` (``data/paths.py``). ``extras["origin"]`` holds ``(subject, first row)`` per window
(row 0-based).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedmosaic.core.modality import Modality
from fedmosaic.data import windows as W
from fedmosaic.data.paths import confined, data_root
from fedmosaic.data.registry import (
    ROLE_FREE,
    DataError,
    DatasetEntry,
    LoadContext,
    LoadedData,
    register_dataset,
)

SAMPLE_RATE_HZ = 50
N_COLUMNS = 24
LABEL_COLUMN = 23
# 0-based columns of each modality (see the module docstring for the 1-based layout).
COLUMNS: dict[str, tuple[int, ...]] = {
    "acc": (0, 1, 2, 5, 6, 7, 14, 15, 16),
    "gyro": (8, 9, 10, 17, 18, 19),
    "mag": (11, 12, 13, 20, 21, 22),
    "ecg": (3, 4),
}
CLASS_NAMES = (
    "Standing still",
    "Sitting and relaxing",
    "Lying down",
    "Walking",
    "Climbing stairs",
    "Waist bends forward",
    "Frontal elevation of arms",
    "Knees bending (crouching)",
    "Cycling",
    "Jogging",
    "Running",
    "Jump front & back",
)
_LOG_NAME = re.compile(r"mHealth_subject(\d+)\.log")


class MhealthOptions(BaseModel):
    """Options of the ``mhealth`` data set."""

    model_config = ConfigDict(extra="forbid")

    modalities: list[Literal["acc", "gyro", "mag", "ecg"]] = Field(
        default_factory=lambda: ["acc", "gyro", "mag"],
        min_length=1,
        description="acc = chest+ankle+arm (9 ch), gyro = ankle+arm (6), mag = ankle+arm (6), ecg = 2 leads",
    )
    window: int = Field(128, ge=8, le=100_000, description="window length in rows (50 Hz: 128 = 2.56 s)")
    overlap: float = Field(0.5, ge=0.0, lt=1.0, description="fraction of a window shared with the next")

    @field_validator("modalities")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"lists a modality twice: {value}")
        return value


def _modality_names(options: BaseModel) -> tuple[str, ...]:
    assert isinstance(options, MhealthOptions)
    return tuple(options.modalities)


def _modalities(options: BaseModel) -> tuple[Modality, ...]:
    assert isinstance(options, MhealthOptions)
    return tuple(Modality(m, "timeseries", (len(COLUMNS[m]), options.window)) for m in options.modalities)


def find_logs(data_dir: Path) -> list[tuple[int, Path]]:
    """``(subject number, path)`` of every ``mHealth_subjectN.log``, by subject number."""
    for folder in (data_dir, data_dir / "MHEALTHDATASET"):
        logs = [(m, p) for p in folder.glob("mHealth_subject*.log") if (m := _LOG_NAME.fullmatch(p.name))]
        if logs:
            return sorted((int(m.group(1)), p) for m, p in logs)
    raise DataError(
        f"task.data_dir: {str(data_dir)!r} holds no mHealth_subjectN.log "
        "(expected the folder with the logs or the one holding MHEALTHDATASET/)"
    )


def _row_labels(table: W.Table) -> np.ndarray:
    """Label column as int (0 = null); unknown labels of bad rows copy the row before (or after).

    The windows that cover a bad row are dropped anyway; filling only keeps its run from being
    split, so the windows around it stay where they would be without the bad row.
    """
    labels = W.int_column(table, LABEL_COLUMN, 0, len(CLASS_NAMES), "label")
    known = labels >= 0
    if known.all() or not known.any():
        return np.maximum(labels, 0)
    index = np.where(known, np.arange(len(labels)), 0)
    np.maximum.accumulate(index, out=index)
    filled = labels[index]
    first = np.flatnonzero(known)[0]
    filled[:first] = labels[first]
    return filled


def load(options: BaseModel, ctx: LoadContext) -> LoadedData:
    """Read every subject's log under ``ctx.data_dir`` and cut windows inside labelled runs."""
    assert isinstance(options, MhealthOptions)
    skipped_before = len(ctx.skipped)
    data = data_root(ctx, "mhealth")
    logs = find_logs(data)
    window, step = options.window, W.step_for(options.window, options.overlap)
    names = tuple(options.modalities)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in (*names, "labels", "subject", "block", "origin")}
    n_runs = 0
    for subject, path in logs:
        table = W.read_table(confined(path, data), N_COLUMNS)
        row_labels = _row_labels(table)
        bad_rows = table.report(ctx)
        run_starts, run_ends, run_labels = W.runs(row_labels)
        labelled = run_labels > 0
        run_starts, run_ends, run_labels = run_starts[labelled], run_ends[labelled], run_labels[labelled]
        starts, owner = W.cut_windows(run_starts, run_ends, window, step)
        keep = W.clear_of(bad_rows, starts, window)
        starts, owner = starts[keep], owner[keep]
        for name in names:
            parts[name].append(W.gather(table.values[:, COLUMNS[name]], starts, window))
        parts["labels"].append(run_labels[owner] - 1)
        parts["subject"].append(np.full(len(starts), subject, dtype=np.int64))
        parts["block"].append(owner + n_runs)
        parts["origin"].append(np.stack([np.full(len(starts), subject), starts], axis=1))
        n_runs += len(run_starts)

    if not any(len(x) for x in parts["labels"]):
        raise DataError(f"{logs[0][1].parent}: no labelled window of {window} rows")
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    groups, subjects = W.compact_ids(cat["subject"])
    blocks, _ = W.compact_ids(cat["block"])
    labels = cat["labels"].astype(np.int64)
    loaded = LoadedData(
        modalities=tuple(Modality(m, "timeseries", (len(COLUMNS[m]), window)) for m in names),
        store={m: cat[m] for m in names},
        labels=labels,
        class_names=CLASS_NAMES,
        extras={
            "sample_rate_hz": SAMPLE_RATE_HZ,
            "windows_per_class": W.windows_per_class(labels, CLASS_NAMES),
            "step": step,
            "origin": cat["origin"],
        },
        groups=groups,
        group_names=tuple(f"subject_{s:02d}" for s in subjects),
        blocks=blocks,
        role=np.full(len(labels), ROLE_FREE, dtype=np.int8),
        skipped=list(ctx.skipped[skipped_before:]),
    )
    loaded.check()
    return loaded


register_dataset(
    DatasetEntry(
        "mhealth",
        MhealthOptions,
        _modality_names,
        load,
        needs_data_dir=True,
        natural_unit="subject",
        modalities=_modalities,
    )
)
