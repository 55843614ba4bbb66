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
    _restore_store_methods(monkeypatch)
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


def _restore_store_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    """install() rings a doorbell from Flower's store methods: undo that after the test."""
    from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore
    from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState

    monkeypatch.setattr(InMemoryNodeState, "store_message", InMemoryNodeState.store_message)
    monkeypatch.setattr(InMemoryObjectStore, "put", InMemoryObjectStore.put)


def test_the_doorbell_ends_a_sleep_at_a_ring_and_never_misses_one() -> None:
    import threading

    from fedmosaic.engines.flower_wake import Doorbell

    bell = Doorbell()
    t0 = time.perf_counter()
    bell.sleep(0.1)  # nobody rings: the whole sleep
    assert 0.09 < time.perf_counter() - t0 < 2.0
    threading.Timer(0.05, bell.ring).start()
    t0 = time.perf_counter()
    bell.sleep(30)  # rung during the sleep
    assert time.perf_counter() - t0 < 5.0
    bell.ring()  # rung between two sleeps (after the loop's check, before its sleep): not lost
    t0 = time.perf_counter()
    bell.sleep(30)
    assert time.perf_counter() - t0 < 1.0
    t0 = time.perf_counter()
    bell.sleep(0.1)  # that ring is used up
    assert time.perf_counter() - t0 > 0.09


def test_a_reply_stored_on_the_node_ends_the_supernode_loops_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from flwr.app import ConfigRecord
    from flwr.supercore.inflatable.inflatable_object import get_object_tree
    from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore
    from flwr.supernode import start_client_internal

    # What the doorbell is for: flwr's loop waits 0.5 s at a time for a reply and for its objects.
    assert inspect.getsource(start_client_internal).count("time.sleep(0.5)") == 2
    monkeypatch.setattr(start_client_internal, "time", time)
    _restore_store_methods(monkeypatch)
    assert supernode.install(3.0)
    store, record = InMemoryObjectStore(), ConfigRecord({"reply": 1})
    store.preregister(1, get_object_tree(record))  # as Flower's push handler does before the content
    first_sleep_over, finished = threading.Event(), threading.Event()

    def wait_like_the_loop() -> None:
        start_client_internal.time.sleep(0.5)  # the loop's first check found nothing: it sleeps
        first_sleep_over.set()
        start_client_internal.time.sleep(3.0)  # the put ends this one (or, if it came first, skips it)
        finished.set()

    thread = threading.Thread(target=wait_like_the_loop, daemon=True)
    thread.start()
    assert first_sleep_over.wait(10)
    t0 = time.perf_counter()
    store.put(record.object_id, record.deflate())
    assert finished.wait(10)
    assert time.perf_counter() - t0 < 1.5  # 3 s without the doorbell
    thread.join(5)
