"""Sensor loaders (uci-hapt, uci-har, mhealth) and their shared windowing helpers.

Small files are written in each publisher's exact layout; the real HAPT set (``hapt_dir``) checks the
numbers end to end. Every signal value written here encodes where it came from (recording, row,
column), so a test can tell that a window holds exactly the rows and channels it should.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fedmosaic.data import windows as W
from fedmosaic.data.mhealth import MhealthOptions
from fedmosaic.data.registry import ROLE_FREE, ROLE_TEST, DataError, LoadContext, get_dataset
from fedmosaic.data.uci_hapt import OFFICIAL_TEST_USERS, HaptOptions
from fedmosaic.data.uci_har import HarOptions

FAST = settings(max_examples=60, deadline=None)


def _ctx(path: Path | None, policy: str = "error") -> LoadContext:
    return LoadContext(data_dir=path, on_bad_sample=policy)  # type: ignore[arg-type]


def _replace_line(path: Path, line: int, text: str) -> None:
    lines = path.read_text().split("\n")
    lines[line - 1] = text
    path.write_text("\n".join(lines))


# ---------------------------------------------------------------- windows.py


@FAST
@given(
    ranges=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 200)), min_size=0, max_size=8),
    window=st.integers(1, 40),
    step=st.integers(1, 40),
)
def test_cut_windows_lie_inside_their_range_step_apart(ranges, window, step):
    starts = np.array([s for s, _ in ranges], dtype=np.int64)
    ends = np.array([s + n for s, n in ranges], dtype=np.int64)
    win, owner = W.cut_windows(starts, ends, window, step)
    assert (
        len(win)
        == len(owner)
        == sum(W.count_windows(e - s, window, step) for s, e in zip(starts, ends, strict=True))
    )
    for k, (s, e) in enumerate(zip(starts, ends, strict=True)):
        mine = win[owner == k]
        assert len(mine) == max(0, (e - s - window) // step + 1)
        if len(mine):
            assert mine[0] == s  # first window at the range start
            assert np.all(np.diff(mine) == step)
            assert np.all(mine >= s) and np.all(mine + window <= e)
            assert mine[-1] + step + window > e  # no further window fits


@FAST
@given(st.lists(st.integers(-1, 3), max_size=60))
def test_runs_cover_the_array_with_maximal_runs(values):
    arr = np.array(values, dtype=np.int64)
    starts, ends, vals = W.runs(arr)
    assert np.array_equal(np.repeat(vals, ends - starts), arr)
    assert np.all(vals[1:] != vals[:-1])
    if len(arr):
        assert starts[0] == 0 and ends[-1] == len(arr) and np.array_equal(starts[1:], ends[:-1])


@FAST
@given(
    bad=st.lists(st.booleans(), min_size=1, max_size=80),
    window=st.integers(1, 20),
    data=st.data(),
)
def test_clear_of_matches_brute_force(bad, window, data):
    bad_rows = np.array(bad)
    if len(bad_rows) < window:
        return
    starts = np.array(
        data.draw(st.lists(st.integers(0, len(bad_rows) - window), max_size=10)), dtype=np.int64
    )
    expected = [not bad_rows[s : s + window].any() for s in starts]
    assert W.clear_of(bad_rows, starts, window).tolist() == expected


@FAST
@given(rows=st.lists(st.integers(-1, 3), min_size=1, max_size=80), window=st.integers(1, 20), data=st.data())
def test_majority_labels_match_brute_force(rows, window, data):
    row_labels = np.array(rows, dtype=np.int64)
    if len(row_labels) < window:
        return
    starts = np.array(data.draw(st.lists(st.integers(0, len(rows) - window), max_size=10)), dtype=np.int64)
    expected = []
    for s in starts:
        seg = row_labels[s : s + window]
        winners = [c for c in range(4) if 2 * np.sum(seg == c) > window]
        expected.append(winners[0] if winners else -1)
    assert W.majority_labels(row_labels, starts, window).tolist() == expected


def test_gather_copies_windows_channels_first():
    signal = np.arange(40, dtype=np.float64).reshape(20, 2)
    out = W.gather(signal, np.array([0, 5, 12]), 8)
    assert out.shape == (3, 2, 8) and out.dtype == np.float32
    for j, s in enumerate([0, 5, 12]):
        assert np.array_equal(out[j], signal[s : s + 8].T)
    assert W.gather(signal, np.array([], dtype=np.int64), 8).shape == (0, 2, 8)


def test_step_for_rounds_and_never_reaches_zero():
    assert W.step_for(128, 0.5) == 64
    assert W.step_for(128, 0.0) == 128
    assert W.step_for(10, 0.99) == 1


def test_read_table_fast_path_crlf_and_trailing_blank_lines(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"1 2 3\r\n  4.5\t5e-1 -6\r\n\r\n\n")
    table = W.read_table(path, 3)
    assert table.bad == []
    assert np.array_equal(table.values, [[1, 2, 3], [4.5, 0.5, -6]])


def test_read_table_names_every_bad_line(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("1 2 3\n1 2\nx 2 3\n\n1 nan 3\n1 2 inf\n7 8 9\n")
    table = W.read_table(path, 3)
    assert [line for line, _ in table.bad] == [2, 3, 4, 5, 6]
    reasons = dict(table.bad)
    assert reasons[2] == "expected 3 values, found 2"
    assert reasons[3] == "not a number: 'x'"
    assert reasons[4] == "expected 3 values, found 0"  # a blank line inside shifts every later row
    assert "NaN" in reasons[5] and "NaN" in reasons[6]
    assert np.array_equal(table.values[[0, 6]], [[1, 2, 3], [7, 8, 9]])
    assert np.isnan(table.values[1:6]).all()
    with pytest.raises(DataError, match=r"t\.txt:2: expected 3 values, found 2") as info:
        table.report(_ctx(None))
    assert "\n" not in str(info.value)
    ctx = _ctx(None, "skip")
    assert table.report(ctx).tolist() == [False, True, True, True, True, True, False]
    assert len(ctx.skipped) == 5 and ctx.skipped[0].endswith("t.txt:2: expected 3 values, found 2")


def test_read_table_nan_on_fast_path_is_a_bad_line(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("1 2\nNaN 2\n3 4\n")
    assert W.read_table(path, 2).bad == [(2, "NaN or infinite value")]


def test_read_table_whole_file_problems(tmp_path):
    with pytest.raises(DataError, match=r"nope\.txt: file not found"):
        W.read_table(tmp_path / "nope.txt", 3)
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(DataError, match=r"empty\.txt: file is empty"):
        W.read_table(tmp_path / "empty.txt", 3)


def test_int_column_marks_non_integers_and_out_of_range(tmp_path):
    path = tmp_path / "y.txt"
    path.write_text("1\n2.5\n7\n0\n6\n")
    table = W.read_table(path, 1)
    assert W.int_column(table, 0, 1, 6, "activity id").tolist() == [1, -1, -1, -1, 6]
    assert [line for line, _ in table.bad] == [2, 3, 4]
    assert table.bad[0][1] == "activity id must be an integer in 1..6"


def test_read_activity_labels(tmp_path):
    path = tmp_path / "activity_labels.txt"
    assert W.read_activity_labels(path, ("A", "B")) == ("A", "B")  # absent: fall back
    path.write_text("1 WALK \n2 SIT\n")
    assert W.read_activity_labels(path, ("A", "B")) == ("WALK", "SIT")
    path.write_text("1 WALK\n3 SIT\n")
    with pytest.raises(DataError, match=r"activity_labels\.txt:2: expected '2 NAME'"):
        W.read_activity_labels(path, ("A", "B"))
    path.write_text("1 WALK\n")
    with pytest.raises(DataError, match="expected 2 activities, found 1"):
        W.read_activity_labels(path, ("A", "B"))


# ---------------------------------------------------------------- uci-hapt, tiny tree

# (exp, user, rows) and labels.txt segments (exp, user, activity, start, end), 1-based inclusive.
HAPT_EXPS = ((1, 1, 300), (2, 2, 300))
HAPT_SEGMENTS = (
    (1, 1, 1, 1, 100),
    (1, 1, 7, 101, 140),
    (1, 1, 4, 141, 300),
    (2, 2, 2, 11, 200),
    (2, 2, 6, 201, 300),
)
SMALL = {"window": 32, "overlap": 0.5}  # step 16


def write_hapt(root: Path) -> Path:
    """A two-experiment HAPT tree; acc x = exp * 10000 + row (0-based), gyro x = -row."""
    hapt = root / "HAPT"
    raw = hapt / "RawData"
    raw.mkdir(parents=True)
    for exp, user, n in HAPT_EXPS:
        rows = np.arange(n, dtype=np.float64)
        acc = np.stack([exp * 10000 + rows, rows / 7, np.sin(rows)], axis=1)
        gyro = np.stack([-rows, np.cos(rows), rows * 0.25], axis=1)
        np.savetxt(raw / f"acc_exp{exp:02d}_user{user:02d}.txt", acc, fmt="%.10g")
        np.savetxt(raw / f"gyro_exp{exp:02d}_user{user:02d}.txt", gyro, fmt="%.10g")
    (raw / "labels.txt").write_text("".join(" ".join(map(str, s)) + "\n" for s in HAPT_SEGMENTS))
    names = ["WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING"]
    names += ["STAND_TO_SIT", "SIT_TO_STAND", "SIT_TO_LIE", "LIE_TO_SIT", "STAND_TO_LIE", "LIE_TO_STAND"]
    (hapt / "activity_labels.txt").write_text("".join(f"{i} {n:<18}\n" for i, n in enumerate(names, 1)))
    return hapt


def load_hapt(path: Path, policy: str = "error", **options):
    ctx = _ctx(path, policy)
    return get_dataset("uci-hapt").load(HaptOptions(**options), ctx), ctx


def test_hapt_registered_with_natural_users():
    entry = get_dataset("uci-hapt")
    assert entry.needs_data_dir and entry.natural_unit == "user"
    assert entry.modality_names(HaptOptions()) == ("acc", "gyro")


def test_hapt_inside_rule_counts_windows_per_segment(tmp_path):
    hapt = write_hapt(tmp_path)
    data, ctx = load_hapt(hapt, **SMALL)
    # segment lengths 100, 160, 190, 100 rows -> (L - 32) // 16 + 1 windows; the 40-row transition is dropped
    assert data.extras["windows_per_class"] == {
        "WALKING": 5,
        "WALKING_UPSTAIRS": 10,
        "WALKING_DOWNSTAIRS": 0,
        "SITTING": 9,
        "STANDING": 0,
        "LAYING": 5,
    }
    assert data.class_names == (
        "WALKING",
        "WALKING_UPSTAIRS",
        "WALKING_DOWNSTAIRS",
        "SITTING",
        "STANDING",
        "LAYING",
    )
    assert data.store["acc"].shape == (29, 3, 32) and data.store["acc"].dtype == np.float32
    assert data.store["gyro"].shape == (29, 3, 32)
    assert data.extras["sample_rate_hz"] == 50 and data.extras["step"] == 16
    assert data.group_names == ("user_01", "user_02") and data.groups.tolist() == [0] * 14 + [1] * 15
    assert len(np.unique(data.blocks)) == 4 and (data.role == ROLE_FREE).all()
    assert data.skipped == [] and ctx.skipped == []
    # raw values, no normalisation: acc x encodes (exp, row); every window is consecutive rows of one segment
    acc_x = data.store["acc"][:, 0, :]
    exp, first = acc_x[:, 0] // 10000, acc_x[:, 0] % 10000
    assert np.array_equal(acc_x - acc_x[:, :1], np.tile(np.arange(32), (29, 1)))
    assert np.array_equal(np.stack([exp, first], axis=1), data.extras["origin"])
    assert np.array_equal(data.store["gyro"][:, 0, 0], -first)
    for e, s, label, block in zip(exp, first, data.labels, data.blocks, strict=True):
        seg = [g for g in HAPT_SEGMENTS if g[0] == e and g[3] - 1 <= s and s + 32 <= g[4]]
        assert len(seg) == 1 and seg[0][2] - 1 == label
        same_block = data.blocks == block
        assert len(set(data.labels[same_block])) == 1 and len(set(exp[same_block])) == 1


def test_hapt_all_classes_keep_long_enough_transitions(tmp_path):
    data, _ = load_hapt(write_hapt(tmp_path), classes="all", **SMALL)
    assert len(data.class_names) == 12 and len(data) == 30
    assert data.extras["windows_per_class"]["STAND_TO_SIT"] == 1  # 40 rows -> one window of 32
    assert data.extras["windows_per_class"]["SIT_TO_STAND"] == 0


def test_hapt_majority_rule_over_whole_recordings(tmp_path):
    hapt = write_hapt(tmp_path)
    sizes = {}
    for classes in ("basic", "all"):
        data, _ = load_hapt(hapt, classes=classes, label_rule="majority", **SMALL)
        n_classes = 6 if classes == "basic" else 12
        expected_starts, expected_labels = [], []
        for exp, _, n in HAPT_EXPS:
            row_label = np.full(n, -1)
            for e, _, act, start, end in HAPT_SEGMENTS:
                if e == exp and act <= n_classes:
                    row_label[start - 1 : end] = act - 1
            for s in range(0, n - 32 + 1, 16):
                values, counts = np.unique(row_label[s : s + 32], return_counts=True)
                winner = values[counts > 16]
                if len(winner) and winner[0] >= 0:
                    expected_starts.append((exp, s))
                    expected_labels.append(winner[0])
        assert data.extras["origin"].tolist() == [list(p) for p in expected_starts]
        assert data.labels.tolist() == expected_labels
        assert data.blocks.tolist() == [0 if e == 1 else 1 for e, _ in expected_starts]  # one per experiment
        sizes[classes] = len(data)
    # under "basic" the transition counts as unlabelled: the windows it dominates are dropped
    assert sizes["basic"] < sizes["all"] == 2 * 17


def test_hapt_accepts_rawdata_folder_and_falls_back_to_standard_names(tmp_path):
    hapt = write_hapt(tmp_path)
    (hapt / "activity_labels.txt").unlink()
    data, _ = load_hapt(hapt / "RawData", **SMALL)
    assert len(data) == 29 and data.class_names[0] == "WALKING"


def test_hapt_official_test_users(tmp_path):
    data, _ = load_hapt(write_hapt(tmp_path), test_users="official", **SMALL)
    assert 2 in OFFICIAL_TEST_USERS and 1 not in OFFICIAL_TEST_USERS
    assert np.array_equal(data.role == ROLE_TEST, data.groups == 1)


def test_hapt_wrong_folder_is_one_line_error(tmp_path):
    with pytest.raises(DataError, match="neither the HAPT folder") as info:
        load_hapt(tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="needs a data folder"):
        load_hapt(None)


@pytest.mark.parametrize(
    ("window", "overlap"), [(7, 0.5), (128, 1.0), (128, -0.1)], ids=["short", "full", "negative"]
)
def test_hapt_options_bounds(window, overlap):
    with pytest.raises(ValidationError):
        HaptOptions(window=window, overlap=overlap)
    with pytest.raises(ValidationError):
        HaptOptions(windw=64)


def _acc1(h: Path) -> Path:
    return h / "RawData" / "acc_exp01_user01.txt"


def _gyro(h: Path, exp: int = 1) -> Path:
    return h / "RawData" / f"gyro_exp{exp:02d}_user{exp:02d}.txt"


def _labels(h: Path) -> Path:
    return h / "RawData" / "labels.txt"


# name: (corrupt the tree, error regex, windows left under "skip", skipped count).
# Windows of segment 1 (exp 1, activity 1) start at rows 0, 16, 32, 48, 64; row 49 is in the 3rd and 4th.
HAPT_BAD: dict[str, tuple[Callable[[Path], None], str, int, int]] = {
    "two values": (
        lambda h: _replace_line(_acc1(h), 50, "1.0 2.0"),
        r"acc_exp01_user01\.txt:50: expected 3 values, found 2",
        27,
        1,
    ),
    "four values": (
        lambda h: _replace_line(_acc1(h), 50, "1 2 3 4"),
        r"acc_exp01_user01\.txt:50: expected 3 values, found 4",
        27,
        1,
    ),
    "not a number": (
        lambda h: _replace_line(_gyro(h), 50, "1.0 abc 2.0"),
        r"gyro_exp01_user01\.txt:50: not a number: 'abc'",
        27,
        1,
    ),
    "nan": (
        lambda h: _replace_line(_gyro(h), 50, "1.0 NaN 2.0"),
        r"gyro_exp01_user01\.txt:50: NaN or infinite value",
        27,
        1,
    ),
    "inf": (
        lambda h: _replace_line(_acc1(h), 1, "inf 0 0"),
        r"acc_exp01_user01\.txt:1: NaN or infinite value",
        28,
        1,
    ),
    "row counts differ": (
        lambda h: _gyro(h).write_text("\n".join(_gyro(h).read_text().split("\n")[:250])),
        r"gyro_exp01_user01\.txt: has 250 rows but acc_exp01_user01\.txt has 300",
        15,
        1,
    ),
    "missing gyro": (
        lambda h: _gyro(h, 2).unlink(),
        r"gyro_exp02_user02\.txt: missing \(labels\.txt lists experiment 2 of user 2\)",
        14,
        1,
    ),
    "label row with 4 values": (
        lambda h: _replace_line(_labels(h), 3, "1 1 4 141"),
        r"labels\.txt:3: expected 5 values, found 4",
        20,
        1,
    ),
    "label not an integer": (
        lambda h: _replace_line(_labels(h), 3, "1 1 4.5 141 300"),
        r"labels\.txt:3: activity id must be an integer in 1\.\.12",
        20,
        1,
    ),
    "start after end": (
        lambda h: _replace_line(_labels(h), 5, "2 2 6 300 201"),
        r"labels\.txt:5: start row after end row",
        24,
        1,
    ),
    "end beyond file": (
        lambda h: _replace_line(_labels(h), 5, "2 2 6 201 301"),
        r"labels\.txt:5: end row is beyond the 300 rows of experiment 2",
        24,
        1,
    ),
    "overlapping segments": (
        lambda h: _replace_line(_labels(h), 5, "2 2 6 190 300"),
        r"labels\.txt:5: segment overlaps the one on line 4",
        24,
        1,
    ),
}


@pytest.mark.parametrize("case", list(HAPT_BAD), ids=list(HAPT_BAD))
def test_hapt_bad_input_both_policies(tmp_path, case):
    corrupt, message, n_left, n_skipped = HAPT_BAD[case]
    hapt = write_hapt(tmp_path)
    corrupt(hapt)
    with pytest.raises(DataError, match=message) as info:
        load_hapt(hapt, **SMALL)
    assert "\n" not in str(info.value) and 'on_bad_sample = "skip"' in str(info.value)
    data, ctx = load_hapt(hapt, "skip", **SMALL)
    assert len(data) == n_left
    assert len(ctx.skipped) == n_skipped and data.skipped == ctx.skipped
    assert np.isfinite(data.store["acc"]).all() and np.isfinite(data.store["gyro"]).all()


def test_hapt_skip_drops_only_windows_covering_the_bad_row(tmp_path):
    hapt = write_hapt(tmp_path)
    _replace_line(_acc1(hapt), 50, "oops")  # row 49 (0-based)
    good, _ = load_hapt(write_hapt(tmp_path / "clean"), **SMALL)
    data, _ = load_hapt(hapt, "skip", **SMALL)
    lost = {tuple(o) for o in good.extras["origin"]} - {tuple(o) for o in data.extras["origin"]}
    assert lost == {(1, 32), (1, 48)}


def test_hapt_malformed_activity_labels_is_a_file_error(tmp_path):
    hapt = write_hapt(tmp_path)
    (hapt / "activity_labels.txt").write_text("WALKING\n")
    with pytest.raises(DataError, match=r"activity_labels\.txt:1: expected '1 NAME'"):
        load_hapt(hapt, "skip", **SMALL)


# ---------------------------------------------------------------- uci-hapt, real data

REAL_BASIC = {
    "WALKING": 1722,
    "WALKING_UPSTAIRS": 1544,
    "WALKING_DOWNSTAIRS": 1407,
    "SITTING": 1801,
    "STANDING": 1979,
    "LAYING": 1958,
}


@pytest.fixture(scope="module")
def hapt_basic(hapt_dir):
    return load_hapt(hapt_dir, test_users="official")[0]


def test_real_hapt_basic(hapt_basic, hapt_dir):
    data = hapt_basic
    assert data.extras["windows_per_class"] == REAL_BASIC and len(data) == sum(REAL_BASIC.values())
    assert data.class_names == tuple(REAL_BASIC)
    for m in ("acc", "gyro"):
        assert data.store[m].shape == (len(data), 3, 128) and data.store[m].dtype == np.float32
        assert np.isfinite(data.store[m]).all()
    assert data.group_names == tuple(f"user_{u:02d}" for u in range(1, 31))
    assert np.array_equal(np.unique(data.groups), np.arange(30))
    users = data.groups + 1
    assert np.array_equal(data.role == ROLE_TEST, np.isin(users, OFFICIAL_TEST_USERS))
    assert set(np.unique(data.role).tolist()) == {ROLE_FREE, ROLE_TEST}

    # No window crosses a segment boundary, and each takes its segment's label.
    segments = np.loadtxt(hapt_dir / "RawData" / "labels.txt", dtype=np.int64)
    origin = data.extras["origin"]
    for exp in np.unique(origin[:, 0]):
        segs = segments[segments[:, 0] == exp]
        mine = origin[:, 0] == exp
        starts = origin[mine, 1]
        inside = (segs[None, :, 3] - 1 <= starts[:, None]) & (starts[:, None] + 128 <= segs[None, :, 4])
        assert (inside.sum(axis=1) == 1).all()
        assert np.array_equal(segs[inside.argmax(axis=1), 2] - 1, data.labels[mine])
        assert (segs[0, 1] == users[mine]).all()
    # blocks are segments: one label and one user each
    for block in np.unique(data.blocks)[::50]:
        members = data.blocks == block
        assert len(set(data.labels[members])) == 1 and len(set(data.groups[members])) == 1

    # raw values straight from the file (x y z become channels)
    for j in (0, len(data) // 2, len(data) - 1):
        exp, start = origin[j]
        user = users[j]
        rows = np.loadtxt(hapt_dir / "RawData" / f"gyro_exp{exp:02d}_user{user:02d}.txt")[start : start + 128]
        np.testing.assert_allclose(data.store["gyro"][j], rows.T.astype(np.float32))


def test_real_hapt_all_classes(hapt_dir):
    data, _ = load_hapt(hapt_dir, classes="all")
    assert len(data.class_names) == 12 and data.class_names[6] == "STAND_TO_SIT"
    # "inside": the basic windows are the same as under classes = "basic"; transitions add their own
    # (segments shorter than a window give none: 1,174 of the 1,214 segments yield windows)
    transitions = {
        "STAND_TO_SIT": 70,
        "SIT_TO_STAND": 33,
        "SIT_TO_LIE": 107,
        "LIE_TO_SIT": 85,
        "STAND_TO_LIE": 139,
        "LIE_TO_STAND": 84,
    }
    assert data.extras["windows_per_class"] == {**REAL_BASIC, **transitions}
    assert len(data) == 10929 and len(np.unique(data.blocks)) == 1174
    assert (data.role == ROLE_FREE).all()


# ---------------------------------------------------------------- uci-har

HAR_FILES = ("total_acc", "body_acc", "body_gyro")
# (subjects, labels) per split; consecutive equal (subject, label) rows form one block.
HAR_SPLITS = {
    "train": ([1, 1, 1, 1, 3, 3], [1, 1, 1, 2, 2, 1]),
    "test": ([2, 2, 2], [5, 5, 6]),
}


def har_value(split: int, kind: int, axis: int, row: int) -> np.ndarray:
    """The 128 readings written to one row: they encode split, file kind, axis and row."""
    return split * 10000 + row * 100 + kind * 10 + axis + np.arange(128) / 1000


def write_har(root: Path) -> Path:
    """A tiny 'UCI HAR Dataset' tree in the official layout and number format."""
    har = root / "UCI HAR Dataset"
    for s, (split, (subjects, labels)) in enumerate(HAR_SPLITS.items()):
        signals = har / split / "Inertial Signals"
        signals.mkdir(parents=True)
        np.savetxt(har / split / f"y_{split}.txt", labels, fmt="%d")
        np.savetxt(har / split / f"subject_{split}.txt", subjects, fmt="%d")
        for kind, name in enumerate(HAR_FILES):
            for axis, a in enumerate("xyz"):
                rows = np.stack([har_value(s, kind, axis, r) for r in range(len(labels))])
                np.savetxt(signals / f"{name}_{a}_{split}.txt", rows, fmt="%15.7e", delimiter=" ")
    names = ["WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING"]
    (har / "activity_labels.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(names, 1)))
    return har


def load_har(path: Path, policy: str = "error", **options):
    ctx = _ctx(path, policy)
    return get_dataset("uci-har").load(HarOptions(**options), ctx), ctx


def test_har_shapes_labels_roles_groups_blocks(tmp_path):
    har = write_har(tmp_path)
    entry = get_dataset("uci-har")
    assert entry.needs_data_dir and entry.natural_unit == "subject"
    data, _ = load_har(har)
    assert (
        len(data) == 9 and data.store["acc"].shape == (9, 3, 128) and data.store["gyro"].shape == (9, 3, 128)
    )
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 0, 4, 4, 5]
    assert data.role.tolist() == [ROLE_FREE] * 6 + [ROLE_TEST] * 3
    assert data.group_names == ("subject_01", "subject_02", "subject_03")
    assert data.groups.tolist() == [0, 0, 0, 0, 2, 2, 1, 1, 1]
    b = data.blocks.tolist()
    assert b[0] == b[1] == b[2] and b[6] == b[7] and len(set(b)) == 6
    # total_acc is file kind 0, body_gyro kind 2; x y z are channels 0 1 2
    for j, (split, row) in enumerate(data.extras["origin"]):
        for axis in range(3):
            np.testing.assert_allclose(data.store["acc"][j, axis], har_value(split, 0, axis, row), rtol=1e-6)
            np.testing.assert_allclose(data.store["gyro"][j, axis], har_value(split, 2, axis, row), rtol=1e-6)
    assert data.extras["windows_per_class"]["WALKING"] == 4 and data.extras["n_official_test"] == 3


def test_har_body_acc_no_test_split_and_parent_folder(tmp_path):
    write_har(tmp_path)
    data, _ = load_har(tmp_path, acc="body", test_split="none")
    assert (data.role == ROLE_FREE).all()
    np.testing.assert_allclose(data.store["acc"][0, 1], har_value(0, 1, 1, 0), rtol=1e-6)


def test_har_wrong_folder(tmp_path):
    with pytest.raises(DataError, match="neither the 'UCI HAR Dataset' folder"):
        load_har(tmp_path)


HAR_SIG = "UCI HAR Dataset/{split}/Inertial Signals/{name}_{split}.txt"

HAR_BAD = {
    "127 values": (
        "train",
        "body_gyro_y",
        2,
        lambda row: " ".join(row.split()[:127]),
        r"body_gyro_y_train\.txt:2: expected 128 values, found 127",
        (0, 1),
    ),
    "nan": (
        "test",
        "total_acc_x",
        1,
        lambda row: row.replace(row.split()[5], "NaN", 1),
        r"total_acc_x_test\.txt:1: NaN or infinite value",
        (1, 0),
    ),
    "label 7": (
        "train",
        "y",
        6,
        lambda _: "7",
        r"y_train\.txt:6: activity id must be an integer in 1\.\.6",
        (0, 5),
    ),
    "subject not a number": (
        "test",
        "subject",
        3,
        lambda _: "two",
        r"subject_test\.txt:3: not a number: 'two'",
        (1, 2),
    ),
}


@pytest.mark.parametrize("case", list(HAR_BAD), ids=list(HAR_BAD))
def test_har_bad_row_both_policies(tmp_path, case):
    split, name, line, change, message, lost = HAR_BAD[case]
    har = write_har(tmp_path)
    path = (
        har / split / f"{name}_{split}.txt"
        if name in ("y", "subject")
        else tmp_path / HAR_SIG.format(split=split, name=name)
    )
    _replace_line(path, line, change(path.read_text().split("\n")[line - 1]))
    with pytest.raises(DataError, match=message) as info:
        load_har(har)
    assert "\n" not in str(info.value)
    data, ctx = load_har(har, "skip")
    assert len(data) == 8 and len(ctx.skipped) == 1 and data.skipped == ctx.skipped
    assert lost not in {tuple(o) for o in data.extras["origin"]}
    assert np.isfinite(data.store["acc"]).all() and np.isfinite(data.store["gyro"]).all()


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_har_file_problems_are_errors_under_both_policies(tmp_path, policy):
    har = write_har(tmp_path)
    y = har / "train" / "y_train.txt"
    y.write_text(y.read_text() + "3\n")
    with pytest.raises(DataError, match=r"y_train\.txt: has 7 rows but total_acc_x_train\.txt has 6"):
        load_har(har, policy)
    y.write_text("\n".join(y.read_text().split("\n")[:6]))
    (har / "test" / "Inertial Signals" / "body_gyro_z_test.txt").unlink()
    with pytest.raises(DataError, match=r"body_gyro_z_test\.txt: file not found"):
        load_har(har, policy)


# ---------------------------------------------------------------- mhealth

# Label column per subject; window 16, overlap 0.5 -> step 8, (L - 16) // 8 + 1 windows per run.
MH_LABELS = {
    1: [0] * 20 + [1] * 70 + [0] * 10 + [4] * 50 + [1] * 40,  # runs: 7, 5, 4 windows
    2: [12] * 33 + [5] * 15 + [0] * 5,  # runs: 3, 0 windows
}
MH_SMALL = {"window": 16, "overlap": 0.5}


def mh_value(subject: int, row: int, col: int) -> float:
    """Reading of 0-based column ``col`` at ``row``: encodes all three."""
    return subject * 100000 + row * 100 + col


def write_mhealth(folder: Path) -> Path:
    """mHealth_subjectN.log files: 23 signal columns + label, tab-separated as UCI ships them."""
    folder.mkdir(parents=True, exist_ok=True)
    for subject, labels in MH_LABELS.items():
        rows = np.arange(len(labels))[:, None]
        values = mh_value(subject, rows, np.arange(23)[None, :])
        table = np.column_stack([values, labels])
        np.savetxt(
            folder / f"mHealth_subject{subject}.log", table, fmt=["%.4f"] * 23 + ["%d"], delimiter="\t"
        )
    return folder


def load_mh(path: Path, policy: str = "error", **options):
    ctx = _ctx(path, policy)
    return get_dataset("mhealth").load(MhealthOptions(**options), ctx), ctx


def test_mhealth_windows_inside_runs(tmp_path):
    data, _ = load_mh(write_mhealth(tmp_path), **MH_SMALL)
    assert len(data) == 19
    assert data.labels.tolist() == [0] * 7 + [3] * 5 + [0] * 4 + [11] * 3
    assert data.extras["windows_per_class"]["Jump front & back"] == 3
    assert data.groups.tolist() == [0] * 16 + [1] * 3 and data.group_names == ("subject_01", "subject_02")
    assert len(np.unique(data.blocks)) == 4  # the two label-1 runs of subject 1 are two blocks
    assert data.blocks[0] != data.blocks[13]
    assert [m.name for m in data.modalities] == ["acc", "gyro", "mag"]
    assert [m.shape for m in data.modalities] == [(9, 16), (6, 16), (6, 16)]
    origin = data.extras["origin"]
    assert origin[:7, 1].tolist() == list(range(20, 20 + 7 * 8, 8))
    for j, (subject, start) in enumerate(origin):
        labels = MH_LABELS[int(subject)][start : start + 16]
        assert len(set(labels)) == 1 and labels[0] - 1 == data.labels[j]


def test_mhealth_channel_columns_follow_the_uci_layout(tmp_path):
    data, _ = load_mh(
        write_mhealth(tmp_path / "MHEALTHDATASET"), modalities=["ecg", "acc", "gyro", "mag"], **MH_SMALL
    )
    assert get_dataset("mhealth").modality_names(MhealthOptions(modalities=["ecg", "acc"])) == ("ecg", "acc")
    # 1-based columns from the UCI description
    expected = {
        "acc": [1, 2, 3, 6, 7, 8, 15, 16, 17],
        "ecg": [4, 5],
        "gyro": [9, 10, 11, 18, 19, 20],
        "mag": [12, 13, 14, 21, 22, 23],
    }
    subject, start = data.extras["origin"][-1]
    rows = np.arange(start, start + 16)
    for name, cols in expected.items():
        want = mh_value(subject, rows[None, :], np.array(cols)[:, None] - 1)
        assert np.array_equal(data.store[name][-1], want.astype(np.float32)), name
    assert data.store["ecg"].dtype == np.float32


@pytest.mark.parametrize("modalities", [[], ["acc", "acc"], ["emg"]], ids=["empty", "repeated", "unknown"])
def test_mhealth_options_reject_bad_modalities(modalities):
    with pytest.raises(ValidationError):
        MhealthOptions(modalities=modalities)


def test_mhealth_wrong_folder(tmp_path):
    with pytest.raises(DataError, match=r"holds no mHealth_subjectN\.log"):
        load_mh(tmp_path)


# Subject 1's row 30 (line 31) lies in the first label-1 run (rows 20..89, windows at 20, 28, ..., 68):
# it is covered by the windows at 20 and 28.
MH_BAD = {
    "23 values": (lambda r: r.rsplit("\t", 1)[0], r"mHealth_subject1\.log:31: expected 24 values, found 23"),
    "nan": (lambda r: "NaN\t" + r.split("\t", 1)[1], r"mHealth_subject1\.log:31: NaN or infinite value"),
    "label 13": (
        lambda r: r.rsplit("\t", 1)[0] + "\t13",
        r"mHealth_subject1\.log:31: label must be an integer",
    ),
    "label 2.5": (
        lambda r: r.rsplit("\t", 1)[0] + "\t2.5",
        r"mHealth_subject1\.log:31: label must be an integer",
    ),
    "word": (lambda r: "x" + r, r"mHealth_subject1\.log:31: not a number"),
}


@pytest.mark.parametrize("case", list(MH_BAD), ids=list(MH_BAD))
def test_mhealth_bad_row_both_policies(tmp_path, case):
    change, message = MH_BAD[case]
    folder = write_mhealth(tmp_path)
    path = folder / "mHealth_subject1.log"
    _replace_line(path, 31, change(path.read_text().split("\n")[30]))
    with pytest.raises(DataError, match=message) as info:
        load_mh(folder, **MH_SMALL)
    assert "\n" not in str(info.value)
    data, ctx = load_mh(folder, "skip", **MH_SMALL)
    assert len(ctx.skipped) == 1 and data.skipped == ctx.skipped
    origin = {tuple(o) for o in data.extras["origin"].tolist()}
    assert len(data) == 17 and (1, 20) not in origin and (1, 28) not in origin and (1, 36) in origin
    assert all(np.isfinite(data.store[m]).all() for m in ("acc", "gyro", "mag"))


def test_hapt_recordings_label_every_row_and_leave_gaps_and_transitions_unlabelled(tmp_path):
    hapt = write_hapt(tmp_path)
    data, _ = load_hapt(hapt, **SMALL, test_users="official")  # user 2 is an official test user
    first, second = data.recordings
    assert (first.owner, first.test, second.owner, second.test) == (1, False, 2, True)
    assert len(first.labels) == 300 and first.signals["acc"].shape == (300, 3)
    assert np.array_equal(first.signals["acc"][:, 0], 10000 + np.arange(300))  # the raw rows, in order
    # rows 1-100 WALKING, 101-140 a transition (unlabelled under "basic"), 141-300 SITTING
    assert (first.labels[:100] == 0).all() and (first.labels[100:140] == -1).all()
    assert (first.labels[140:] == 3).all()
    # rows 1-10 of experiment 2 lie outside every segment: unlabelled
    assert (second.labels[:10] == -1).all() and (second.labels[10:200] == 1).all()
    assert (second.labels[200:] == 5).all()
    every, _ = load_hapt(hapt, **SMALL, classes="all")
    assert (every.recordings[0].labels[100:140] == 6).all() and not every.recordings[1].test
