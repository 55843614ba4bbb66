"""The reference evaluation protocol of the autoencoder family (issue 18, item 1): continuous streams
with per-step labels, the reference's labelled share, per-step classification and 2,000-step window
weighted-F1 (models/step_probe.py, data/streams.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from fedmosaic.algorithms.registry import get_algorithm
from fedmosaic.config import load_config
from fedmosaic.core.algorithm import ServerData
from fedmosaic.core.errors import ConfigError
from fedmosaic.core.modality import Modality
from fedmosaic.core.stream import UNLABELLED, Recording, ServerStreams, Stream, concatenate
from fedmosaic.core.task import TaskInfo
from fedmosaic.data.streams import N_LABEL_DIV, labelled_share, streams_from_recordings
from fedmosaic.engines.protocol import build_server, settings_from_config
from fedmosaic.models.step_probe import EVAL_WIN, local_statistics, step_evaluation, window_scores
from mhealth_files import mhealth_overrides, write_mhealth

INFO = TaskInfo(
    "toy",
    (Modality("acc", "timeseries", (2, 16)), Modality("gyro", "timeseries", (2, 16))),
    3,
    ("a", "b", "c"),
)


def toy_stream(n: int, seed: int, bounds: list[int] | None = None) -> Stream:
    """Bouts of 50 steps; channel 0 of acc tells the class (its mean is the class), gyro is noise.
    Every 7th bout is unlabelled."""
    rng = np.random.default_rng(seed)
    bout = np.repeat(rng.integers(0, 3, size=n // 50 + 1), 50)[:n]
    acc = rng.normal(size=(n, 2)).astype(np.float32) * 0.1
    acc[:, 0] += bout
    labels = bout.astype(np.int64)
    labels[(np.arange(n) // 50) % 7 == 6] = UNLABELLED
    gyro = rng.normal(size=(n, 2)).astype(np.float32)
    return Stream({"acc": acc, "gyro": gyro}, labels, np.array(bounds or [0, n]))


def test_streams_chunk_at_recording_bounds_and_concatenate():
    s = toy_stream(4600, 0, [0, 2500, 4600])
    assert s.chunks(EVAL_WIN) == [(0, 2000), (2000, 2500), (2500, 4500), (4500, 4600)]
    both = concatenate([s, toy_stream(100, 1)])
    assert both.bounds.tolist() == [0, 2500, 4600, 4700] and len(both.signals["acc"]) == 4700
    with pytest.raises(ValueError):
        Stream({"acc": np.zeros((3, 1))}, np.zeros(4, dtype=np.int64), np.array([0, 4]))


def test_window_scores_are_the_mean_of_per_window_weighted_f1_over_labelled_steps():
    n = 2 * EVAL_WIN + 10
    labels = np.tile(np.array([0, 1, 2, 2]), n // 4 + 1)[:n].astype(np.int64)
    labels[EVAL_WIN : EVAL_WIN + 100] = UNLABELLED
    stream = Stream({"acc": np.zeros((n, 1), np.float32)}, labels, np.array([0, n]))
    pred = labels.copy()
    pred[: EVAL_WIN // 2] = 2  # the first window is half wrong, the others right
    pred[labels == UNLABELLED] = 0  # predictions on unlabelled steps never count
    out = window_scores(stream, pred)
    first = f1_score(labels[:EVAL_WIN], pred[:EVAL_WIN], average="weighted")
    assert out["windows"] == 3
    assert out["weighted_f1"] == pytest.approx((first + 1 + 1) / 3)
    # not the pooled score over all steps, which weights the windows by their length
    keep = labels != UNLABELLED
    assert out["weighted_f1"] != pytest.approx(f1_score(labels[keep], pred[keep], average="weighted"))


def test_local_statistics_are_causal_and_hold_the_step_and_its_trailing_stats():
    x = torch.randn(2, 3, 300)
    feats = local_statistics(x, "acc")
    assert feats.shape == (2, 300, 15)
    assert torch.equal(feats[:, :, :3], x.transpose(1, 2))
    later = x.clone()
    later[:, :, 200:] += 5.0  # the future changes: the features up to step 199 do not
    assert torch.equal(local_statistics(later, "acc")[:, :200], feats[:, :200])
    assert torch.allclose(feats[:, 199, 3:6], x[:, :, 72:200].mean(2), atol=1e-5)  # trailing 128 steps
    assert torch.equal(feats[:, 199, 12:15], x[:, :, 72:200].amax(2))


def test_per_step_classifier_learns_the_steps_label_and_records_its_training():
    labelled, test = toy_stream(3000, 0, [0, 1000, 3000]), toy_stream(4500, 1)

    def identity(x: torch.Tensor, modality: str) -> torch.Tensor:
        return x.transpose(1, 2)

    out = step_evaluation(identity, labelled, test, INFO, tol=1e-6, max_iter=500)
    assert set(out) == {"acc", "gyro", "acc+gyro"}
    assert out["acc"]["weighted_f1"] > 0.99 and out["acc"]["windows"] == 3
    assert out["gyro"]["weighted_f1"] < 0.6  # noise: no better than guessing
    for v in out.values():
        assert v["probe_converged"] == 1.0 and v["probe_steps"] >= 1 and v["probe_train_loss"] >= 0
    capped = step_evaluation(identity, labelled, test, INFO, tol=1e-8, max_iter=1)
    assert capped["acc"]["probe_converged"] == 0.0 and capped["acc"]["probe_steps"] == 1


def test_unlabelled_steps_are_never_trained_on():
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.repeat([0, 1, 2], 300), np.full(2100, UNLABELLED)])
    acc = rng.normal(size=(3000, 2)).astype(np.float32) * 0.1
    acc[:900, 0] += labels[:900]  # the unlabelled majority looks like class 0
    labelled = Stream({"acc": acc, "gyro": acc.copy()}, labels, np.array([0, 3000]))

    def identity(x: torch.Tensor, modality: str) -> torch.Tensor:
        return x.transpose(1, 2)

    out = step_evaluation(identity, labelled, toy_stream(4500, 1), INFO, tol=1e-6, max_iter=500)
    assert out["acc"]["weighted_f1"] > 0.99  # trained on them, class 0 would be predicted "unlabelled"


def test_labelled_share_is_one_of_nine_slices_that_holds_every_test_class():
    n = 9 * 400
    labels = np.repeat(np.arange(9), 400).astype(np.int64)  # slice k holds class k only
    train = Stream({"acc": np.arange(n, dtype=np.float32)[:, None]}, labels, np.array([0, 1000, n]))
    for k in (8, 2):
        share = labelled_share(train, {k}, np.random.default_rng(0))
        assert len(share) == n // N_LABEL_DIV and share.signals["acc"][0, 0] == k * 400
    straddling = labelled_share(train, {2}, np.random.default_rng(0))  # [800, 1200) crosses the bound 1000
    assert straddling.bounds.tolist() == [0, 200, 400]
    # no slice holds both: the draw holding most of them is kept
    assert set(labelled_share(train, {0, 1}, np.random.default_rng(0)).labels.tolist()) <= {0, 1}


def test_streams_from_recordings_standardise_and_keep_test_users_apart():
    def rec(owner: int, test: bool, value: float) -> Recording:
        labels = np.repeat(np.arange(3), 600).astype(np.int64)
        return Recording({"acc": np.full((1800, 2), value)}, labels, owner, test)

    stats = {"acc": {"mean": [1.0, 1.0], "std": [2.0, 2.0]}}
    out = streams_from_recordings(
        [rec(1, False, 3.0), rec(2, True, 5.0), rec(3, False, 3.0)], stats, np.random.default_rng(0)
    )
    assert out is not None and out.origin == "recordings"
    assert np.all(out.test.signals["acc"] == 2.0) and len(out.test) == 1800
    assert np.all(out.labelled.signals["acc"] == 1.0) and len(out.labelled) == 2 * 1800 // N_LABEL_DIV
    assert streams_from_recordings([rec(1, False, 3.0)], stats, np.random.default_rng(0)) is None


def test_eval_protocol_is_a_one_line_config_error():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["algorithm.name=mmfedavg", "algorithm.eval_protocol=steps"])
    assert str(err.value).startswith("algorithm.eval_protocol") and "\n" not in str(err.value)


@pytest.fixture(scope="module")
def sensor_task(tmp_path_factory: pytest.TempPathFactory):
    from fedmosaic.data.tasks import build_task

    folder = write_mhealth(tmp_path_factory.mktemp("mhealth"))
    extra = ["clients.per_round=4", "algorithm.name=mmfedavg", "algorithm.probe_max_iter=500"]
    cfg = load_config(None, [*mhealth_overrides(folder), *extra])
    return cfg, build_task(cfg)


def test_server_scores_the_given_streams_with_controls(sensor_task):
    cfg, task = sensor_task
    names = task.info.modality_names
    c = {m: task.info.modality(m).shape[0] for m in names}
    rng = np.random.default_rng(0)

    def stream(n: int) -> Stream:
        labels = np.repeat(rng.integers(0, task.info.num_classes, n // 100 + 1), 100)[:n]
        signals = {m: rng.normal(size=(n, c[m])).astype(np.float32) for m in names}
        for s in signals.values():
            s[:, 0] += labels  # learnable, so L-BFGS stops early
        return Stream(signals, labels, np.array([0, n]))

    streams = ServerStreams(stream(900), stream(2100), "recordings")
    settings = settings_from_config(cfg, task.info, len(task.specs))
    server = build_server(
        get_algorithm("mmfedavg"), settings, ServerData(task.proxy, task.labelled, task.test, None, streams)
    )
    out = server.evaluate(0, task.specs, {})
    subset = task.info.group(frozenset(names))
    assert out[f"test/{subset}"]["windows"] == 2  # 2,100 test steps: windows of 2,000 and 100
    assert out[f"control/untrained/{subset}"] == out[f"test/{subset}"]  # round 0: the same encoder
    assert out[f"control/raw_stats/{subset}"]["windows"] == 2


def test_streams_round_trip_through_the_file_pipelines_server_file(tmp_path):
    from fedmosaic.engines.node_data import load_streams, save_streams

    streams = ServerStreams(toy_stream(300, 0, [0, 100, 300]), toy_stream(200, 1), "recordings")
    save_streams(streams, tmp_path / "streams.npz")
    back = load_streams(tmp_path / "streams.npz")
    assert back is not None and back.origin == "recordings"
    for a, b in ((streams.labelled, back.labelled), (streams.test, back.test)):
        assert np.array_equal(a.labels, b.labels) and np.array_equal(a.bounds, b.bounds)
        assert all(np.array_equal(a.signals[m], b.signals[m]) for m in a.signals)
    assert load_streams(tmp_path / "none.npz") is None
