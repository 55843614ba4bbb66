"""Classification metrics and how clients' results become group, overall and subset metrics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmosaic.core.message import Message
from fedmosaic.core.metrics import (
    METRIC_NAMES,
    aggregate_client_evaluations,
    classification_metrics,
    flatten_eval,
    global_model_groups,
    mean_metrics,
    unflatten_eval,
)
from fedmosaic.core.modality import ClientSpec


def test_classification_metrics_hand_computed() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    # class 0: tp=2 fp=0 fn=1 -> P=1, R=2/3, F1=0.8
    # class 1: tp=1 fp=1 fn=1 -> P=1/2, R=1/2, F1=0.5
    # class 2: tp=1 fp=1 fn=0 -> P=1/2, R=1, F1=2/3
    f1 = [0.8, 0.5, 2 / 3]
    out = classification_metrics(y_true, y_pred, num_classes=3)
    assert set(out) == set(METRIC_NAMES)
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert out["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    assert all(isinstance(v, float) for v in out.values())


def test_classification_metrics_perfect_and_all_wrong() -> None:
    y = np.array([0, 1, 2, 3])
    perfect = classification_metrics(y, y, 4)
    assert perfect == {"accuracy": 1.0, "macro_f1": 1.0, "weighted_f1": 1.0}
    wrong = classification_metrics(y, (y + 1) % 4, 4)
    assert wrong == {"accuracy": 0.0, "macro_f1": 0.0, "weighted_f1": 0.0}


def test_classification_metrics_average_over_all_classes() -> None:
    # Macro-F1 is over all num_classes labels (documented): absent classes count as 0.
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 0, 1, 1])
    out = classification_metrics(y_true, y_pred, num_classes=4)
    assert out["accuracy"] == 1.0
    assert out["macro_f1"] == pytest.approx(0.5)
    assert out["weighted_f1"] == pytest.approx(1.0)  # weighted by support: absent classes weigh 0


def test_classification_metrics_empty_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        classification_metrics(np.array([], dtype=int), np.array([], dtype=int), 3)


def test_mean_metrics_and_flatten_round_trip() -> None:
    rows = [{"accuracy": 0.2, "macro_f1": 0.1}, {"accuracy": 0.6, "macro_f1": 0.5}]
    assert mean_metrics(rows) == pytest.approx({"accuracy": 0.4, "macro_f1": 0.3})
    nested = {"image": {"accuracy": 0.5}, "image+text": {"accuracy": 0.75, "macro_f1": 0.25}}
    flat = flatten_eval(nested)
    assert flat == {"image/accuracy": 0.5, "image+text/accuracy": 0.75, "image+text/macro_f1": 0.25}
    assert unflatten_eval({**flat, "n_test": 3}) == nested


def spec(cid: str, group: str) -> ClientSpec:
    return ClientSpec(cid, frozenset(group.split("+")), 10, group)


def reply(**by_subset: tuple[float, float]) -> Message:
    results = {s.replace("_", "+"): {"accuracy": a, "macro_f1": f} for s, (a, f) in by_subset.items()}
    return Message.of(None, **flatten_eval(results), n=5)


def test_aggregate_client_evaluations() -> None:
    specs = {
        "a": spec("a", "image"),
        "b": spec("b", "image"),
        "c": spec("c", "text"),
        "d": spec("d", "image+text"),
        "e": spec("e", "image+text"),
    }
    replies = {
        "a": reply(image=(0.4, 0.2)),
        "b": reply(image=(0.6, 0.4)),
        "c": reply(text=(0.5, 0.5)),
        "d": reply(image=(0.3, 0.1), text=(0.7, 0.5), image_text=(0.9, 0.8)),
        "e": reply(image=(0.5, 0.3), text=(0.5, 0.3), image_text=(0.7, 0.6)),
    }
    out = aggregate_client_evaluations(replies, specs)
    assert set(out) == {
        "test/image",
        "test/text",
        "test/image+text",
        "group/image",
        "group/text",
        "group/image+text",
        "overall",
    }
    approx = pytest.approx
    # test/<subset>: mean over every client that could test on that subset.
    assert out["test/image"] == approx({"accuracy": (0.4 + 0.6 + 0.3 + 0.5) / 4, "macro_f1": 0.25})
    assert out["test/text"] == approx({"accuracy": (0.5 + 0.7 + 0.5) / 3, "macro_f1": (0.5 + 0.5 + 0.3) / 3})
    assert out["test/image+text"] == approx({"accuracy": 0.8, "macro_f1": 0.7})
    # group/<g>: each client's result on its own full modality set.
    assert out["group/image"] == approx({"accuracy": 0.5, "macro_f1": 0.3})
    assert out["group/text"] == approx({"accuracy": 0.5, "macro_f1": 0.5})
    assert out["group/image+text"] == approx({"accuracy": 0.8, "macro_f1": 0.7})
    # overall: each client counts once, on its own group.
    assert out["overall"] == approx(
        {"accuracy": (0.4 + 0.6 + 0.5 + 0.9 + 0.7) / 5, "macro_f1": (0.2 + 0.4 + 0.5 + 0.8 + 0.6) / 5}
    )


def test_global_model_groups() -> None:
    specs = [spec("a", "image"), spec("b", "text"), spec("c", "image+text"), spec("d", "image+text")]
    subset_results = {
        "test/image": {"accuracy": 0.4, "weighted_f1": 0.3},
        "test/text": {"accuracy": 0.6, "weighted_f1": 0.5},
        "test/image+text": {"accuracy": 0.9, "weighted_f1": 0.8},
    }
    out = global_model_groups(subset_results, specs)
    assert set(out) == {"group/image", "group/text", "group/image+text", "overall"}
    assert out["group/image"] == pytest.approx(subset_results["test/image"])
    assert out["group/text"] == pytest.approx(subset_results["test/text"])
    assert out["group/image+text"] == pytest.approx(subset_results["test/image+text"])
    # overall weighs groups by their number of clients (two image+text clients here).
    assert out["overall"] == pytest.approx(
        {"accuracy": (0.4 + 0.6 + 0.9 + 0.9) / 4, "weighted_f1": (0.3 + 0.5 + 0.8 + 0.8) / 4}
    )


def test_global_model_groups_only_present_groups() -> None:
    specs = [spec("a", "text"), spec("b", "text")]
    subset_results = {"test/image": {"accuracy": 0.1}, "test/text": {"accuracy": 0.7}}
    out = global_model_groups(subset_results, specs)
    assert set(out) == {"group/text", "overall"}
    assert out["overall"] == pytest.approx({"accuracy": 0.7})


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 12), st.lists(st.tuples(st.integers(0, 11), st.integers(0, 11)), min_size=1, max_size=300)
)
def test_classification_metrics_equal_sklearns_three_calls_bit_for_bit(k: int, pairs: list) -> None:
    from sklearn.metrics import accuracy_score, f1_score

    y_true = np.array([a % k for a, _ in pairs])
    y_pred = np.array([b % k for _, b in pairs])
    labels = list(range(k))
    assert classification_metrics(y_true, y_pred, k) == {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
    }
