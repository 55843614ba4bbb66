"""A node's SuperExec woken by its SuperNode when a message arrives, instead of polling 10 times a second.

flwr 1.41.0's SuperExec asks its SuperNode for a task, and when there is none sleeps
``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` (1 s by default) before asking again
(``flwr/supercore/superexec/run_superexec.py``). Every message waits for that sleep, so fedmosaic's
deployments polled every 0.1 s: an HTTP request per node ten times a second, run or no run, CPU
taken from the nodes' training on a small machine (an idle 3-node federation spent 0.29 CPU s per
second; ``benchmarks/flower_idle_cpu.py``).

Here both processes are fedmosaic's launchers (:mod:`fedmosaic.engines.supernode` starts the
SuperNode, which starts its SuperExec through :mod:`fedmosaic.engines.warm_clientapp`), so the
SuperNode can say when there is work: :func:`install_supernode` opens a pipe, hands its read end
to the SuperExec it starts, and writes a byte to it whenever the node stores a message for a
ClientApp; :func:`install_superexec` makes the SuperExec's sleep between polls a wait on that pipe.
The SuperExec then asks at once when a message arrives, and otherwise at most every
:data:`IDLE_POLL_S` (Flower's own default, a floor on the environment variable, which the wake-up
makes unneeded). Flower's loop, requests and checks are unchanged: only how long one sleep lasts.
A byte written while the SuperExec is busy stays in the pipe and ends its next sleep at once, so no
message waits for a poll.

The SuperNode's own loop waits the same way for its ClientApp: after starting one it looks for the
reply every 0.5 s, and then for each of the reply's objects every 0.5 s (``_push_messages`` in
``flwr/supernode/start_client_internal.py``; 0.2 s under fedmosaic's poll cap), so every message's
reply sat up to twice that long on the node before it left, and a round waits for the slowest
node. :class:`Doorbell` rings whenever the node stores a message or an object
(:func:`install_doorbell`), and the loop's sleeps end at the first ring since the previous sleep
ended (:mod:`fedmosaic.engines.supernode`): the reply leaves as soon as it is complete. Only for the
flwr version this was read from.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import types
from collections.abc import Callable
from typing import Any

from fedmosaic.engines.stand_in import flwr_fits, stand_in

ENV_FD = "FEDMOSAIC_SUPEREXEC_WAKE_FD"  # the read end's descriptor number, in the SuperExec's environment
IDLE_POLL_S = 1.0


def waking_time(fd: int, floor_s: float = IDLE_POLL_S) -> types.ModuleType:
    """A stand-in for the ``time`` module whose ``sleep`` ends early when ``fd`` becomes readable.

    The sleep lasts at least ``floor_s`` unless woken; the bytes that woke it are read, so the next
    sleep waits for a new one.
    """

    def sleep(seconds: float) -> None:
        ready, _, _ = select.select([fd], [], [], max(float(seconds), floor_s))
        if ready:
            os.read(fd, 4096)

    return stand_in(time, sleep=sleep)


def install_superexec(environ: dict[str, str] | None = None) -> bool:
    """In the SuperExec: wait on the pipe its SuperNode handed over (False: none, or another flwr)."""
    raw = (os.environ if environ is None else environ).get(ENV_FD, "")
    if not raw.isdigit() or not flwr_fits():
        return False
    from flwr.supercore.superexec import run_superexec

    if getattr(run_superexec, "time", None) is not time:
        return False
    run_superexec.time = waking_time(int(raw))  # type: ignore[attr-defined]
    return True


class Doorbell:
    """Rung by every store on the node; :meth:`sleep` ends early at the first ring since the end of the
    previous sleep, so a store between the loop's check and its sleep is never missed (at worst the
    loop checks once more than needed)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._rings = self._seen = 0

    def ring(self) -> None:
        """Something was stored: end the current (or the next) sleep."""
        with self._changed:
            self._rings += 1
            self._changed.notify_all()

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the doorbell rang since the previous sleep ended."""
        with self._changed:
            self._changed.wait_for(lambda: self._rings != self._seen, timeout=seconds)
            self._seen = self._rings


def ringing(function: Callable[..., Any], bell: Doorbell) -> Callable[..., Any]:
    """``function`` (a store method) that rings ``bell`` after it returns."""

    def function_and_ring(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        finally:
            bell.ring()

    return function_and_ring


def wake_on_store(store: Callable[..., Any], write_fd: int) -> Callable[..., Any]:
    """``store`` (``NodeState.store_message``) that also writes a byte to ``write_fd`` afterwards."""

    def store_and_wake(self: object, message: object) -> Any:
        result = store(self, message)
        # A full pipe already wakes the SuperExec; a closed one has no SuperExec left to wake.
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(write_fd, b"\0")
        return result

    return store_and_wake


def install_doorbell() -> Doorbell | None:
    """In the SuperNode: a :class:`Doorbell` rung by every message and object the node stores (None
    for another flwr version)."""
    if not flwr_fits():
        return None
    from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore
    from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState

    bell = Doorbell()
    InMemoryNodeState.store_message = ringing(InMemoryNodeState.store_message, bell)  # type: ignore[method-assign]
    InMemoryObjectStore.put = ringing(InMemoryObjectStore.put, bell)  # type: ignore[method-assign]
    return bell


def install_supernode() -> tuple[int, int] | None:
    """In the SuperNode: a pipe whose write end gets a byte per stored message; its (read, write) ends.

    The read end is for the SuperExec (:func:`superexec_popen_args`); None for another flwr version.
    """
    if not flwr_fits():
        return None
    from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState

    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # the node must never block on a SuperExec that does not read
    InMemoryNodeState.store_message = wake_on_store(  # type: ignore[method-assign]
        InMemoryNodeState.store_message, write_fd
    )
    return read_fd, write_fd


def superexec_popen_args(kwargs: dict[str, Any], read_fd: int) -> dict[str, Any]:
    """``subprocess.Popen`` keyword arguments that hand ``read_fd`` to the SuperExec being started."""
    env = dict(kwargs.get("env") or os.environ)
    env[ENV_FD] = str(read_fd)
    return {**kwargs, "env": env, "pass_fds": (*kwargs.get("pass_fds", ()), read_fd)}
