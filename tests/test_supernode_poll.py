"""``python -m fedmosaic.engines.supernode``: flower-supernode with its idle poll capped (no network)."""

from __future__ import annotations

import inspect
import time

import pytest

pytest.importorskip("flwr")

from fedmosaic.engines import supernode


def test_the_cap_shortens_only_the_supernode_loops_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.supernode import start_client_internal

    # What the cap is for: flwr's loop sleeps a fixed 3 s when there is no message.
    assert "time.sleep(3)" in inspect.getsource(start_client_internal)
    monkeypatch.setattr(start_client_internal, "time", time)  # undone after the test
    assert supernode.install(0.01)
    t0 = time.perf_counter()
    start_client_internal.time.sleep(3)
    assert time.perf_counter() - t0 < 1.0
    assert start_client_internal.time.monotonic() > 0  # everything else is the real module
    assert time.sleep is not start_client_internal.time.sleep  # the rest of the process keeps it


def test_a_bad_poll_setting_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDMOSAIC_SUPERNODE_POLL_S", "0.05")
    assert supernode.poll_seconds() == 0.05
    for bad in ("fast", "0", "-1", "10"):
        monkeypatch.setenv("FEDMOSAIC_SUPERNODE_POLL_S", bad)
        with pytest.raises(SystemExit, match=r"FEDMOSAIC_SUPERNODE_POLL_S: .* is not a number of seconds"):
            supernode.poll_seconds()
