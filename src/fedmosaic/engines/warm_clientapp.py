"""``python -m fedmosaic.engines.warm_clientapp [flower-superexec arguments]``: warm ClientApp starts.

flwr 1.41.0's SuperExec starts a new ``flwr-clientapp`` process for every message a SuperNode
receives (``flwr/supercore/superexec/executor/subprocess_executor.py``), and each one imports
Flower's SuperNode stack (FastAPI, SQLAlchemy, ...) before it does anything: 1.8 CPU seconds per
message on a 2-core machine, paid by every node in every round.

This launcher runs Flower's own ``flower-superexec`` entry point with that one start replaced. Before
the SuperExec starts (and so before any thread exists) it forks a *zygote*: a process that imports
the ClientApp runtime once and then, for every launch the SuperExec asks for, forks a child that runs
Flower's own ``flwr-clientapp`` entry point with exactly the arguments the new process would have
had. So Flower's isolation is kept (each message still gets a process of its own, which exits when
the message is answered), only its import is paid once per node instead of once per message.
``fedmosaic.engines.supernode`` starts its SuperExec through this module (``FEDMOSAIC_WARM_CLIENTAPP=0``
keeps Flower's own).

The SuperExec asks through a pipe; if the zygote is gone (or the message would not fit the pipe's
atomic write size) the launch is Flower's own. Like the SuperNode poll cap, the replacement is the
``subprocess`` module *as that one Flower module sees it*, and only on the flwr version it was read
from; on any other the launcher warns and leaves Flower untouched.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any

from fedmosaic.engines import flower_pull, flower_wake
from fedmosaic.engines.stand_in import flwr_fits, stand_in

CLIENTAPP = "flwr-clientapp"
ENTRY = "flwr.supernode.cli:flwr_clientapp"  # what the flwr-clientapp command runs
ENV_SWITCH = "FEDMOSAIC_WARM_CLIENTAPP"


class Zygote:
    """A forked process that starts ClientApp processes by forking itself (see the module docstring)."""

    def __init__(self, entry: str = ENTRY) -> None:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the zygote
            os.close(write)
            _serve(read, entry)  # never returns
        os.close(read)
        self.pid, self._write = pid, write

    def close(self) -> None:
        """Close the pipe: the zygote exits (the ClientApps it started run on)."""
        os.close(self._write)

    def launch(self, args: list[str], quiet: bool) -> bool:
        """Ask for a ClientApp process with ``args``; False when the zygote cannot take it."""
        line = (json.dumps({"args": list(args), "quiet": quiet}) + "\n").encode()
        if len(line) > select.PIPE_BUF:  # a longer write could interleave; never expected
            return False
        try:
            os.write(self._write, line)
        except OSError:  # the zygote is gone: the caller starts the process itself
            return False
        return True


def _entry_point(entry: str) -> Callable[[], None]:
    """The function ``"module:function"`` names (imported now: that is the point of the zygote)."""
    module, _, function = entry.partition(":")
    return getattr(importlib.import_module(module), function)


def _serve(read_fd: int, entry: str) -> None:
    """The zygote's loop: one forked ClientApp per request line, until the SuperExec closes the pipe."""
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the ClientApp processes
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the SuperExec; EOF stops us
        run = _entry_point(entry)
        importlib.import_module("fedmosaic.engines.flower_client")  # fedmosaic's light ClientApp
        flower_pull.shorten_backoff()  # the message's objects reach the node just after its head

        with os.fdopen(read_fd, "rb") as pipe:
            for line in pipe:
                request = json.loads(line)
                if os.fork() == 0:
                    _run_clientapp(run, request["args"], bool(request["quiet"]))
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(0)


def _run_clientapp(run: Callable[[], None], args: list[str], quiet: bool) -> None:
    """In a fresh child of the zygote: ``run`` (Flower's ``flwr-clientapp``) with ``args``, then exit."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if quiet:  # what Popen(stdout=DEVNULL, stderr=DEVNULL) would have done
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
        sys.argv = [CLIENTAPP, *args[1:]]
        run()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream must not keep the process alive
                stream.flush()
        os._exit(code)


Rewrite = Callable[[list[str], dict[str, Any]], tuple[bool, Any]]


def popen_proxy(rewrite: Rewrite) -> types.ModuleType:
    """A stand-in for ``subprocess`` whose ``Popen`` first offers each command to ``rewrite``.

    ``rewrite(args, kwargs)`` returns ``(True, what Popen returns)`` when it handled the command, or
    ``(False, None)`` for the real ``subprocess.Popen``.
    """

    def popen(args: Any, *rest: Any, **kwargs: Any) -> Any:
        if not rest and isinstance(args, list | tuple):
            handled, value = rewrite([str(a) for a in args], kwargs)
            if handled:
                return value
        return subprocess.Popen(args, *rest, **kwargs)

    return stand_in(subprocess, Popen=popen)


def flwr_matches(module: types.ModuleType) -> bool:
    """Whether ``module`` is from the flwr version this was written against and uses ``subprocess``."""
    return flwr_fits(
        "warm ClientApp starts",
        "every message starts a cold flwr-clientapp process",
        getattr(module, "subprocess", None) is subprocess,
    )


def enabled() -> bool:
    """``FEDMOSAIC_WARM_CLIENTAPP`` is not ``0`` (the default: on)."""
    return os.environ.get(ENV_SWITCH, "1").strip() != "0"


def install_superexec(zygote: Zygote) -> bool:
    """Route the SuperExec's ``flwr-clientapp`` starts to ``zygote`` (False: flwr version unknown)."""
    from flwr.supercore.superexec.executor import subprocess_executor

    if not flwr_matches(subprocess_executor):
        return False

    def rewrite(args: list[str], kwargs: dict[str, Any]) -> tuple[bool, Any]:
        quiet = kwargs.get("stdout") is subprocess.DEVNULL
        # Flower ignores what this Popen returns, so a launch by the zygote returns nothing
        return (args[0] == CLIENTAPP and zygote.launch(args, quiet)), None

    subprocess_executor.subprocess = popen_proxy(rewrite)  # type: ignore[attr-defined]
    return True


def install_supernode(wake_fd: int | None = None) -> bool:
    """Make the SuperNode start its SuperExec through this module (False: flwr version unknown).

    ``wake_fd``: the read end of the SuperNode's wake-up pipe (:mod:`fedmosaic.engines.flower_wake`),
    handed to the SuperExec.
    """
    from flwr.supernode import start_client_internal

    if not flwr_matches(start_client_internal):
        return False

    def rewrite(args: list[str], kwargs: dict[str, Any]) -> tuple[bool, Any]:
        if args[0] != "flower-superexec":
            return False, None
        if wake_fd is not None:
            kwargs = flower_wake.superexec_popen_args(kwargs, wake_fd)
        return True, subprocess.Popen([sys.executable, "-m", __name__, *args[1:]], **kwargs)

    start_client_internal.subprocess = popen_proxy(rewrite)  # type: ignore[attr-defined]
    return True


def main() -> None:
    """Run ``flower-superexec`` with the given arguments, its ClientApp starts forked from a zygote."""
    zygote = Zygote()  # first: no thread may exist when a process forks
    install_superexec(zygote)
    flower_wake.install_superexec()  # sleep until the SuperNode stores a message, not a fixed poll
    from flwr.supercore.cli import flower_superexec

    sys.argv[0] = "flower-superexec"
    flower_superexec()


if __name__ == "__main__":
    main()
