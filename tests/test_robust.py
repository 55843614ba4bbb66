"""Robust aggregation rules: the maths, and that the algorithms use the configured rule."""

from __future__ import annotations

import numpy as np
import pytest

from fedmosaic.algorithms.base import weighted_average
from fedmosaic.algorithms.robust import Aggregation, coordinate_median, trimmed_mean, weighted_mean
from fedmosaic.core.message import Message


def test_weighted_mean_weighs_each_value() -> None:
    values = [np.array([0.0, 10.0]), np.array([4.0, 20.0])]
    np.testing.assert_allclose(weighted_mean(values, [3, 1]), [1.0, 12.5])
    np.testing.assert_allclose(weighted_mean(values), [2.0, 15.0])


def test_median_per_coordinate_ignores_an_outlier() -> None:
    values = [np.array([1.0, -5.0]), np.array([2.0, 7.0]), np.array([1e9, 6.0])]
    np.testing.assert_array_equal(coordinate_median(values), [2.0, 6.0])
    # an even count takes the mean of the middle two
    np.testing.assert_array_equal(coordinate_median([np.array([1.0]), np.array([3.0])]), [2.0])


def test_trimmed_mean_drops_the_extremes_at_each_end() -> None:
    column = np.array([-100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 1e6])
    values = [np.array([x, 2 * x]) for x in column]
    np.testing.assert_allclose(trimmed_mean(values, 0.1), [4.5, 9.0])  # one value cut at each end
    np.testing.assert_allclose(trimmed_mean(values, 0.0), [column.mean(), 2 * column.mean()])
    # 0.05 x 10 < 1: nothing is cut, so the outliers stay in
    np.testing.assert_allclose(trimmed_mean(values, 0.05), [column.mean(), 2 * column.mean()])
    with pytest.raises(ValueError, match=r"robustness\.trim_fraction"):
        trimmed_mean(values, 0.5)


def test_aggregation_rejects_an_unknown_rule_and_empty_input() -> None:
    with pytest.raises(ValueError, match=r"robustness\.aggregator"):
        Aggregation("mode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nothing to aggregate"):
        Aggregation("median").combine([])


def test_combine_like_keeps_dtype_and_the_mean_path() -> None:
    values = [np.full(3, x, np.float32) for x in (1.0, 2.0, 300.0)]
    np.testing.assert_array_equal(Aggregation().combine_like(values), np.mean(values, axis=0))
    median = Aggregation("median").combine_like(values)
    assert median.dtype == np.float32 and median.tolist() == [2.0, 2.0, 2.0]


def _reply(n_train: int, **arrays: float) -> Message:
    return Message({k: np.full(2, v, np.float32) for k, v in arrays.items()}, {"n_train": n_train})


def test_weighted_average_by_name_with_each_rule() -> None:
    # "enc" is held by two clients only; "head" by all three; the third client is poisoned on "head".
    replies = {
        "a": _reply(10, enc=1.0, head=1.0),
        "b": _reply(30, enc=3.0, head=2.0),
        "c": _reply(60, head=900.0),
    }
    mean = weighted_average(replies)
    np.testing.assert_allclose(mean["enc"], 2.5)  # (10 * 1 + 30 * 3) / 40
    np.testing.assert_allclose(mean["head"], (10 + 60 + 60 * 900) / 100)
    # the default rule (None and an explicit mean) is exactly the old code path
    for name, value in weighted_average(replies, rule=Aggregation("mean")).items():
        np.testing.assert_array_equal(value, mean[name])
    median = weighted_average(replies, rule=Aggregation("median"))
    np.testing.assert_array_equal(median["enc"], 2.0)  # unweighted over the two holders
    np.testing.assert_array_equal(median["head"], 2.0)
    assert sorted(median) == ["enc", "head"]
    trimmed = weighted_average(replies, rule=Aggregation("trimmed_mean", 0.34))
    np.testing.assert_array_equal(trimmed["head"], 2.0)  # 900 and 1 cut, 2 left


def _server_replies(server, specs, poison: float) -> dict[str, Message]:
    """Every planned client returns what it was sent plus its index (the last one: x ``poison``)."""
    from fedmosaic.core.seeding import SERVER, Rng

    plan = server.configure(1, specs, Rng(0, 1, SERVER))
    replies = {}
    for k, (cid, sent) in enumerate(plan.items()):
        shift = poison if k == len(plan) - 1 else float(k)
        arrays = {
            n: (a + shift).astype(a.dtype) for n, a in sent.arrays.items() if a.dtype.kind == "f" and "." in n
        }
        meta = {
            "n_train": 10 + k,
            "train_loss": 0.0,
            "delta": 0.0,
            "val_loss_local": 0.0,
            "val_loss_global": 0.0,
        }
        replies[cid] = Message(arrays, meta)
    return replies


@pytest.mark.parametrize("algorithm", ["fedavg", "gvf"])
def test_servers_aggregate_with_the_configured_median(tiny_cfg, algorithm: str) -> None:
    from fedmosaic.algorithms.registry import get_algorithm
    from fedmosaic.config import with_overrides
    from fedmosaic.core.algorithm import ServerData
    from fedmosaic.core.seeding import SERVER, Rng
    from fedmosaic.data.tasks import build_task
    from fedmosaic.engines.protocol import build_server, settings_from_config

    extra = ["algorithm.dim=16", "algorithm.global_vectors=false"] if algorithm == "gvf" else []
    cfg = with_overrides(tiny_cfg, [f"algorithm.name={algorithm}", "robustness.aggregator=median", *extra])
    task = build_task(cfg)
    settings = settings_from_config(cfg, task.info, len(task.specs))
    server = build_server(
        get_algorithm(algorithm), settings, ServerData(task.proxy, task.labelled, task.test)
    )
    before = {n: a.copy() for n, a in server.state().arrays.items()}
    replies = _server_replies(server, task.specs, poison=1e6)
    server.aggregate(1, replies, Rng(0, 1, SERVER))
    after = server.state().arrays
    name = next(
        n for n in sorted(after) if n.startswith(("head.", "classifier.")) and after[n].dtype.kind == "f"
    )
    # the head (fedavg) / classifier (gvf) is held by all 10 clients, shifted by 0..8 and one by 1e6:
    # the median shift is 4.5 (the mean would be about 1e5)
    np.testing.assert_allclose(after[name], before[name] + 4.5, rtol=1e-5, atol=1e-5)
