"""The shorter object-pull backoff (engines/flower_pull.py): what a missing object costs, in sleeps."""

from __future__ import annotations

import threading
from typing import ClassVar

import pytest
from flwr.supercore.inflatable import inflatable_utils
from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError

from fedmosaic.engines import flower_pull, stand_in


@pytest.fixture
def defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower's own defaults back after each test (the patch changes them for the whole process)."""
    for function in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        monkeypatch.setattr(function, "__kwdefaults__", dict(function.__kwdefaults__))


class _Recorded(threading.Event):
    """An Event whose waits are recorded and return at once (no test sleeps for real)."""

    waits: ClassVar[list[float]] = []

    def wait(self, timeout: float | None = None) -> bool:
        _Recorded.waits.append(float(timeout or 0))
        return self.is_set()


def _pull_after(unavailable: int, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The sleeps ``pull_objects`` asks for when the object is missing ``unavailable`` times."""
    monkeypatch.setattr(inflatable_utils.threading, "Event", _Recorded)
    monkeypatch.setattr(inflatable_utils.random, "uniform", lambda a, b: 0.0)  # no jitter
    _Recorded.waits = []
    misses = iter(range(unavailable))

    def pull(object_id: str) -> bytes:
        if next(misses, None) is not None:
            raise ObjectUnavailableError(object_id)
        return b"content"

    assert inflatable_utils.pull_objects(["obj"], pull) == {"obj": b"content"}
    return [w for w in _Recorded.waits if w > 0]


def test_flowers_own_backoff_waits_a_second_first(defaults: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _pull_after(2, monkeypatch) == [1.0, 2.0]


def test_shortened_backoff_starts_at_20_ms_capped(defaults: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert flower_pull.shorten_backoff() is True
    waits = _pull_after(7, monkeypatch)
    assert waits == [0.02, 0.04, 0.08, 0.16, 0.25, 0.25, 0.25]
    # the callers inside Flower import the function itself, so they see the new defaults too
    tree_defaults = inflatable_utils.pull_and_inflate_object_from_tree.__kwdefaults__
    assert tree_defaults["initial_backoff"] == 0.02 and tree_defaults["backoff_cap"] == 0.25


def test_patience_is_not_cut_to_500_short_tries(defaults: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # Flower gives up on an object after 500 tries; at 0.25 s each that would be 2 minutes, not
    # Flower's hour and more, so the try limit goes and only PULL_MAX_TIME bounds the wait.
    flower_pull.shorten_backoff()
    assert len(_pull_after(600, monkeypatch)) == 600
    assert inflatable_utils.pull_objects.__kwdefaults__["max_time"] == 7200


def test_another_flwr_version_is_left_alone(defaults: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stand_in, "FLWR_VERSION", "0.0.0")
    with pytest.warns(UserWarning, match="object-pull backoff"):
        assert flower_pull.shorten_backoff() is False
    assert inflatable_utils.pull_objects.__kwdefaults__["initial_backoff"] == 1
