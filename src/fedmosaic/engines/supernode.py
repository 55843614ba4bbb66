"""``python -m fedmosaic.engines.supernode [flower-supernode arguments]``: a SuperNode that polls faster.

flwr 1.41.0's SuperNode asks the SuperLink for a message, and when there is none sleeps a fixed 3 s
before asking again (``flwr/supernode/start_client_internal.py``; no option or environment variable
sets it); while a ClientApp works it looks for the reply every 0.5 s. In a federation whose rounds
take seconds, every round's message waits up to 3 s on every node for that sleep. This launcher
runs Flower's own ``flower-supernode`` entry point unchanged, with every sleep of that one loop
capped at ``FEDMOSAIC_SUPERNODE_POLL_S`` seconds (default 0.2): the same arguments, TLS, node
authentication and node config; only more frequent (small) pull requests to the SuperLink, which
a consortium of many nodes may not want (then use ``flower-supernode`` itself).

Its SuperExec also starts each message's ClientApp process warm (forked from a process that has
imported Flower's ClientApp runtime once, :mod:`fedmosaic.engines.warm_clientapp`) instead of cold;
``FEDMOSAIC_WARM_CLIENTAPP=0`` keeps Flower's own start. That SuperExec is woken by the SuperNode
when a message arrives, rather than polling for it (:mod:`fedmosaic.engines.flower_wake`), and the
SuperNode's own waits for a ClientApp's reply and its objects end the moment they are stored.

The cap replaces the ``time`` module *as that Flower module sees it* (the rest of Flower and the
process keep the real one) and is applied only to the flwr version it was written against: with
any other version the launcher warns and runs the SuperNode untouched.
"""

from __future__ import annotations

import os
import sys
import time
import types

from fedmosaic.engines import flower_pull, flower_wake, warm_clientapp
from fedmosaic.engines.stand_in import flwr_fits, stand_in

DEFAULT_POLL_S = 0.2


def capped_time(cap_s: float, bell: flower_wake.Doorbell | None = None) -> types.ModuleType:
    """A stand-in for the ``time`` module whose ``sleep`` sleeps at most ``cap_s`` seconds, and with
    ``bell`` ends early when the node stores something (:class:`~fedmosaic.engines.flower_wake.Doorbell`)."""
    wait = bell.sleep if bell is not None else time.sleep
    return stand_in(time, sleep=lambda seconds: wait(min(float(seconds), cap_s)))


def poll_seconds() -> float:
    """``FEDMOSAIC_SUPERNODE_POLL_S`` as a number of seconds in (0, 3]; one clear line otherwise."""
    raw = os.environ.get("FEDMOSAIC_SUPERNODE_POLL_S", str(DEFAULT_POLL_S))
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 3:
        raise SystemExit(f"error: FEDMOSAIC_SUPERNODE_POLL_S: {raw!r} is not a number of seconds in (0, 3]")
    return value


def install(cap_s: float) -> bool:
    """Cap the SuperNode loop's sleeps at ``cap_s`` and end them when the node stores a message or an
    object (a ClientApp's reply); False (and a warning) for an unknown flwr version."""
    from flwr.supernode import start_client_internal

    fits = getattr(start_client_internal, "time", None) is time
    if not flwr_fits("fedmosaic.engines.supernode", "the SuperNode polls at Flower's own pace", fits):
        return False
    start_client_internal.time = capped_time(cap_s, flower_wake.install_doorbell())  # type: ignore[attr-defined]
    return True


def main() -> None:
    """Run ``flower-supernode`` with the given arguments, the poll cap and warm ClientApp starts."""
    install(poll_seconds())
    flower_pull.shorten_backoff()  # the SuperNode pulls a message's objects from the SuperLink too
    if warm_clientapp.enabled():
        # The SuperExec it starts is fedmosaic's, so it can be woken per message (flower_wake).
        fds = flower_wake.install_supernode()
        warm_clientapp.install_supernode(wake_fd=fds[0] if fds else None)
    from flwr.supernode.cli import flower_supernode

    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
