"""UCI HAPT raw signals (``task.dataset = "uci-hapt"``): accelerometer + gyroscope windows per user.

Layout (as UCI ships it)::

    HAPT/activity_labels.txt              "1 WALKING" ... "12 LIE_TO_STAND"
    HAPT/RawData/acc_expXX_userYY.txt     x y z per row, 50 Hz
    HAPT/RawData/gyro_expXX_userYY.txt    x y z per row, 50 Hz
    HAPT/RawData/labels.txt               exp user activity start end (rows, 1-based, inclusive)

``task.data_dir`` is the ``HAPT`` folder or its ``RawData`` folder. Rows outside every labelled
segment are unlabelled. Every file read must resolve (symlinks followed) inside ``task.data_dir``
(``data/paths.py``): with ``RawData`` as ``task.data_dir``, ``activity_labels.txt`` one level up lies
outside and is not read (the standard names apply), and an acc/gyro file that is a symlink out of
``task.data_dir`` is treated like a missing one.

How windows get labels (``label_rule``):

- ``"inside"`` (default): windows of ``window`` rows, ``step = round(window * (1 - overlap))`` apart,
  are cut inside each labelled segment, starting at its first row; a window therefore lies entirely
  inside one segment and takes its label. One block per segment.
- ``"majority"``: windows slide over a whole experiment's recording from its first row; a window
  takes the activity that covers more than half of its rows, and is dropped if none does (mostly
  unlabelled, or split between activities). One block per experiment (its windows overlap across
  segment boundaries).

``classes = "basic"`` keeps activities 1-6 (the UCI-HAR classes) and treats the postural transitions
7-12 as unlabelled; ``"all"`` keeps all 12. ``test_users = "official"`` gives the users of the
official test split the test role.

Bad input: a bad sensor row (not 3 numbers, NaN/Inf, beyond float32) drops only the windows that
cover it under
``on_bad_sample = "skip"``; a bad ``labels.txt`` row (not 5 integers, start after end, end beyond
its recording, overlapping an earlier segment) drops its segment; a missing acc/gyro file or acc and
gyro files of different length drop the experiment. Under "error" each is a one-line
:class:`DataError` naming the file and line.

``LoadedData.recordings`` holds every experiment's whole recording with a label per row (-1 outside
the kept segments), for the reference evaluation protocol of the autoencoder family.

``extras["origin"]`` holds ``(experiment id, first row)`` per window (row 0-based), to trace a window
back to its recording.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fedmosaic.core.modality import Modality
from fedmosaic.core.stream import UNLABELLED, Recording
from fedmosaic.data import windows as W
from fedmosaic.data.paths import PathEscapeError, confined, data_root
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
OFFICIAL_TEST_USERS = (2, 4, 9, 10, 12, 13, 18, 20, 24)
N_BASIC = 6  # activities 1-6 are the UCI-HAR classes; 7-12 are postural transitions
STANDARD_NAMES = (
    "WALKING",
    "WALKING_UPSTAIRS",
    "WALKING_DOWNSTAIRS",
    "SITTING",
    "STANDING",
    "LAYING",
    "STAND_TO_SIT",
    "SIT_TO_STAND",
    "SIT_TO_LIE",
    "LIE_TO_SIT",
    "STAND_TO_LIE",
    "LIE_TO_STAND",
)
SENSORS = ("acc", "gyro")


class HaptOptions(BaseModel):
    """Options of the ``uci-hapt`` data set."""

    model_config = ConfigDict(extra="forbid")

    window: int = Field(128, ge=8, le=100_000, description="window length in rows (50 Hz: 128 = 2.56 s)")
    overlap: float = Field(0.5, ge=0.0, lt=1.0, description="fraction of a window shared with the next")
    classes: Literal["basic", "all"] = Field(
        "basic", description="basic = the 6 activities 1-6 (transitions dropped); all = all 12"
    )
    label_rule: Literal["inside", "majority"] = Field(
        "inside",
        description="inside = windows cut inside labelled segments; "
        "majority = windows over whole recordings labelled by the activity covering > half the rows",
    )
    test_users: Literal["none", "official"] = Field(
        "none", description="official = users 2, 4, 9, 10, 12, 13, 18, 20, 24 are test users"
    )


@dataclass
class _Experiment:
    """One experiment's recordings: acc/gyro rows and which rows are bad."""

    exp: int
    user: int
    acc: np.ndarray
    gyro: np.ndarray
    bad_rows: np.ndarray


def _modality_names(_: BaseModel) -> tuple[str, ...]:
    return SENSORS


def _modalities(options: BaseModel) -> tuple[Modality, ...]:
    assert isinstance(options, HaptOptions)
    return tuple(Modality(s, "timeseries", (3, options.window)) for s in SENSORS)


def find_raw_dir(data_dir: Path) -> Path:
    """The ``RawData`` folder: ``data_dir`` itself or ``data_dir/RawData``; DataError otherwise."""
    if (data_dir / "RawData" / "labels.txt").is_file():
        return data_dir / "RawData"
    if (data_dir / "labels.txt").is_file():
        return data_dir
    raise DataError(
        f"task.data_dir: {str(data_dir)!r} is neither the HAPT folder (holding RawData/labels.txt) "
        "nor its RawData folder (holding labels.txt and acc_/gyro_expXX_userYY.txt)"
    )


def _read_segments(path: Path, ctx: LoadContext) -> np.ndarray:
    """labels.txt as ``(k, 6)`` int64 rows ``exp user activity start end line`` (bad rows dropped)."""
    table = W.read_table(path, 5)
    exp = W.int_column(table, 0, 1, 10**6, "experiment id")
    user = W.int_column(table, 1, 1, 10**6, "user id")
    activity = W.int_column(table, 2, 1, len(STANDARD_NAMES), "activity id")
    start = W.int_column(table, 3, 1, 10**9, "start row")
    end = W.int_column(table, 4, 1, 10**9, "end row")
    ok = ~table.bad_mask()
    table.mark_bad(np.flatnonzero(ok & (start > end)), "start row after end row")
    ok = ~table.report(ctx)
    lines = np.arange(1, len(table) + 1)
    return np.stack([exp, user, activity, start, end, lines], axis=1)[ok]


def _read_experiment(raw: Path, data: Path, exp: int, user: int, ctx: LoadContext) -> _Experiment | None:
    """Both recordings of one experiment (files inside ``data``), or None if the policy skips it."""
    tables = {}
    for sensor in SENSORS:
        path = raw / f"{sensor}_exp{exp:02d}_user{user:02d}.txt"
        try:
            path = confined(path, data)
        except PathEscapeError as exc:
            ctx.bad(path, f"{exc.reason} (labels.txt lists experiment {exp} of user {user})")
            return None
        if not path.is_file():
            ctx.bad(path, f"missing (labels.txt lists experiment {exp} of user {user})")
            return None
        tables[sensor] = W.read_table(path, 3)
    acc, gyro = tables["acc"], tables["gyro"]
    if len(acc) != len(gyro):
        ctx.bad(gyro.path, f"has {len(gyro)} rows but {acc.path.name} has {len(acc)}")
        return None
    bad_rows = acc.report(ctx) | gyro.report(ctx)
    return _Experiment(exp, user, acc.values, gyro.values, bad_rows)


def _windows_inside(
    ex: _Experiment, segs: np.ndarray, window: int, step: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(window_starts, labels, block ids)`` cut inside the experiment's segments."""
    starts, owner = W.cut_windows(segs[:, 3] - 1, segs[:, 4], window, step)
    keep = W.clear_of(ex.bad_rows, starts, window)
    return starts[keep], segs[owner[keep], 2] - 1, segs[owner[keep], 5]


def _windows_majority(
    ex: _Experiment, segs: np.ndarray, window: int, step: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(window_starts, labels)`` sliding over the whole recording, majority-labelled."""
    row_labels = np.full(len(ex.acc), -1, dtype=np.int64)
    for _, _, activity, start, end, _ in segs:
        row_labels[start - 1 : end] = activity - 1
    starts, _ = W.cut_windows(np.array([0]), np.array([len(ex.acc)]), window, step)
    labels = W.majority_labels(row_labels, starts, window)
    keep = (labels >= 0) & W.clear_of(ex.bad_rows, starts, window)
    return starts[keep], labels[keep]


def _recording(ex: _Experiment, segs: np.ndarray, test: bool) -> Recording:
    """The whole experiment as one recording with a label per row.

    Rows outside every kept segment (the gaps between activities, and the postural transitions
    under ``classes = "basic"``) are unlabelled (-1): the encoder runs over them, nobody scores them.
    A bad row is unlabelled too and reads as 0 (the channel mean once standardised).
    """
    labels = np.full(len(ex.acc), UNLABELLED, dtype=np.int64)
    for _, _, activity, start, end, _ in segs:
        labels[start - 1 : end] = activity - 1
    labels[ex.bad_rows] = UNLABELLED
    signals = {"acc": np.nan_to_num(ex.acc), "gyro": np.nan_to_num(ex.gyro)}
    return Recording(signals, labels, ex.user, test)


def _drop_overlaps(segs: np.ndarray, ctx: LoadContext, labels_path: Path) -> np.ndarray:
    """Segments of one experiment sorted by start; one that overlaps an earlier one is bad."""
    segs = segs[np.argsort(segs[:, 3], kind="stable")]
    keep = np.ones(len(segs), dtype=bool)
    last_end, last_line = 0, 0
    for i, (_, _, _, start, end, line) in enumerate(segs):
        if start <= last_end:
            ctx.bad(labels_path, f"segment overlaps the one on line {last_line}", line=int(line))
            keep[i] = False
            continue
        last_end, last_line = end, line
    return segs[keep]


def load(options: BaseModel, ctx: LoadContext) -> LoadedData:
    """Read the raw HAPT signals under ``ctx.data_dir`` and cut labelled acc/gyro windows."""
    assert isinstance(options, HaptOptions)
    skipped_before = len(ctx.skipped)
    data = data_root(ctx, "uci-hapt")
    raw = confined(find_raw_dir(data), data)
    class_names = STANDARD_NAMES
    # With RawData as task.data_dir the names file lies one level up, outside: not read (see the doc).
    if raw.parent.is_relative_to(data):
        class_names = W.read_activity_labels(
            confined(raw.parent / "activity_labels.txt", data), STANDARD_NAMES
        )
    n_classes = N_BASIC if options.classes == "basic" else len(STANDARD_NAMES)
    class_names = class_names[:n_classes]
    labels_path = confined(raw / "labels.txt", data)
    segments = _read_segments(labels_path, ctx)
    window, step = options.window, W.step_for(options.window, options.overlap)

    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("acc", "gyro", "labels", "user", "block", "origin")}
    recordings: list[Recording] = []
    for exp, user in sorted({(int(e), int(u)) for e, u in segments[:, :2]}):
        segs = segments[(segments[:, 0] == exp) & (segments[:, 1] == user)]
        ex = _read_experiment(raw, data, exp, user, ctx)
        if ex is None:
            continue
        too_long = segs[:, 4] > len(ex.acc)
        for line in segs[too_long, 5]:
            ctx.bad(
                labels_path, f"end row is beyond the {len(ex.acc)} rows of experiment {exp}", line=int(line)
            )
        segs = _drop_overlaps(segs[~too_long], ctx, labels_path)
        segs = segs[segs[:, 2] <= n_classes]  # "basic": transitions count as unlabelled
        test = options.test_users == "official" and user in OFFICIAL_TEST_USERS
        recordings.append(_recording(ex, segs, test))
        if options.label_rule == "inside":
            starts, labels, blocks = _windows_inside(ex, segs, window, step)
        else:
            starts, labels = _windows_majority(ex, segs, window, step)
            blocks = np.full(len(starts), exp, dtype=np.int64)
        parts["acc"].append(W.gather(ex.acc, starts, window))
        parts["gyro"].append(W.gather(ex.gyro, starts, window))
        parts["labels"].append(labels)
        parts["user"].append(np.full(len(starts), user, dtype=np.int64))
        parts["block"].append(blocks)
        parts["origin"].append(np.stack([np.full(len(starts), exp), starts], axis=1))

    if not any(len(x) for x in parts["labels"]):
        raise DataError(
            f"{raw}: no labelled window of {window} rows (check labels.txt and task.options.window)"
        )
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    groups, users = W.compact_ids(cat["user"])
    blocks, _ = W.compact_ids(cat["block"])
    role = np.full(len(groups), ROLE_FREE, dtype=np.int8)
    if options.test_users == "official":
        role[np.isin(cat["user"], OFFICIAL_TEST_USERS)] = ROLE_TEST
    labels = cat["labels"].astype(np.int64)
    loaded = LoadedData(
        modalities=tuple(Modality(s, "timeseries", (3, window)) for s in SENSORS),
        store={"acc": cat["acc"], "gyro": cat["gyro"]},
        labels=labels,
        class_names=class_names,
        extras={
            "sample_rate_hz": SAMPLE_RATE_HZ,
            "windows_per_class": W.windows_per_class(labels, class_names),
            "step": step,
            "origin": cat["origin"],
            "label_rule": options.label_rule,
        },
        groups=groups,
        group_names=tuple(f"user_{u:02d}" for u in users),
        blocks=blocks,
        role=role,
        skipped=list(ctx.skipped[skipped_before:]),
        recordings=recordings,
    )
    loaded.check()
    return loaded


register_dataset(
    DatasetEntry(
        "uci-hapt",
        HaptOptions,
        _modality_names,
        load,
        needs_data_dir=True,
        natural_unit="user",
        modalities=_modalities,
    )
)
