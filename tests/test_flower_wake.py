"""The SuperExec woken by its SuperNode (engines/flower_wake.py): pipe, sleep, store hook, hand-over."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fedmosaic.engines import flower_wake, stand_in, warm_clientapp


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        os.close(fd)


def test_a_sleep_ends_when_the_supernode_writes(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    clock = flower_wake.waking_time(read_fd)
    threading.Timer(0.2, os.write, (write_fd, b"\0")).start()
    t0 = time.monotonic()
    clock.sleep(60)  # Flower's poll interval could be anything: the byte ends it
    assert time.monotonic() - t0 < 30
    assert clock.time is time.time  # the rest of the module is the real one


def test_a_byte_written_before_the_sleep_is_not_lost_and_is_used_once(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    os.write(write_fd, b"\0\0")  # two messages stored while the SuperExec was busy
    clock = flower_wake.waking_time(read_fd, floor_s=0.05)
    t0 = time.monotonic()
    clock.sleep(60)
    assert time.monotonic() - t0 < 30
    os.set_blocking(read_fd, False)
    with pytest.raises(BlockingIOError):
        os.read(read_fd, 1)  # drained: the next sleep waits for the next message


def test_without_a_byte_the_sleep_lasts_at_least_the_floor(pipe: tuple[int, int]) -> None:
    read_fd, _ = pipe
    clock = flower_wake.waking_time(read_fd, floor_s=0.3)
    t0 = time.monotonic()
    clock.sleep(0.01)  # FLWR_SUPEREXEC_TASK_POLL_INTERVAL=0.01 no longer means 100 requests a second
    assert time.monotonic() - t0 >= 0.29


def test_storing_a_message_wakes_and_never_blocks_the_node(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    os.set_blocking(write_fd, False)
    stored: list[object] = []
    store = flower_wake.wake_on_store(lambda self, message: stored.append(message) or "id", write_fd)
    assert store(object(), "m1") == "id"
    assert os.read(read_fd, 16) == b"\0"
    for k in range(100_000):  # far more than a pipe holds, with nobody reading
        store(object(), k)
    assert len(stored) == 100_001


def test_the_superexec_gets_the_read_end_and_its_number() -> None:
    kwargs = flower_wake.superexec_popen_args({"env": {"A": "1"}, "pass_fds": (3,), "close_fds": True}, 9)
    assert kwargs["env"] == {"A": "1", flower_wake.ENV_FD: "9"}
    assert kwargs["pass_fds"] == (3, 9) and kwargs["close_fds"] is True


def test_the_supernode_hands_the_pipe_to_the_superexec_it_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.supernode import start_client_internal

    started: list[tuple[list[str], dict[str, Any]]] = []
    monkeypatch.setattr(start_client_internal, "subprocess", subprocess)
    monkeypatch.setattr(subprocess, "Popen", lambda args, *a, **k: started.append((list(args), k)))
    assert warm_clientapp.install_supernode(wake_fd=11)
    start_client_internal.subprocess.Popen(["flower-superexec", "--insecure"])
    ((args, kwargs),) = started
    assert args == [sys.executable, "-m", "fedmosaic.engines.warm_clientapp", "--insecure"]
    assert kwargs["pass_fds"] == (11,) and kwargs["env"][flower_wake.ENV_FD] == "11"


def test_the_superexec_waits_on_the_pipe_only_when_handed_one(
    monkeypatch: pytest.MonkeyPatch, pipe: tuple[int, int]
) -> None:
    from flwr.supercore.superexec import run_superexec

    monkeypatch.setattr(run_superexec, "time", time)
    assert not flower_wake.install_superexec({})
    assert run_superexec.time is time
    assert flower_wake.install_superexec({flower_wake.ENV_FD: str(pipe[0])})
    assert run_superexec.time is not time and run_superexec.time.sleep is not time.sleep


def test_the_supernode_store_hook_and_another_flwr(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState

    monkeypatch.setattr(InMemoryNodeState, "store_message", InMemoryNodeState.store_message)
    monkeypatch.setattr(stand_in, "FLWR_VERSION", "0.0.0")
    assert flower_wake.install_supernode() is None
    assert not flower_wake.install_superexec({flower_wake.ENV_FD: "5"})
    monkeypatch.setattr(stand_in, "FLWR_VERSION", "1.41.0")
    fds = flower_wake.install_supernode()
    assert fds is not None
    try:
        assert InMemoryNodeState.store_message.__name__ == "store_and_wake"
    finally:
        for fd in fds:
            os.close(fd)
