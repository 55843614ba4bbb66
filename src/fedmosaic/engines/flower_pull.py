"""Shorter waits for a message's objects that are not there yet (flwr 1.41.0's pull backoff).

A Flower message travels as a head (its metadata) and objects (its content). A SuperNode stores a
train message's head as soon as it has it, so its SuperExec starts the ClientApp at once, and only
then pulls the objects from the SuperLink; the ClientApp asks the SuperNode for objects that are not
there yet, and flwr 1.41.0 answers "not yet" with a sleep of 1 s, doubling up to 10 s
(``PULL_INITIAL_BACKOFF``, ``PULL_BACKOFF_CAP`` in ``flwr/supercore/constant.py``, bound as default
arguments of ``pull_objects``). The objects of a round's message arrive within milliseconds on a
LAN, so every message waited about a second for nothing: one second of every round, measured in the
node's log (``benchmarks/flower_overhead.py``, issue 19).

:func:`shorten_backoff` lowers those defaults in the calling process: first retry after 20 ms,
doubling to at most 250 ms. The patience stays Flower's own: a pull still fails after
``PULL_MAX_TIME`` (7,200 s); the per-object try limit (500, which with 10 s sleeps meant about 80
minutes) is lifted so that the shorter sleeps do not turn it into 2 minutes on a slow link. Only
for the flwr version this was read from; any other is left untouched, with a warning.
"""

from __future__ import annotations

from fedmosaic.engines.stand_in import flwr_fits

INITIAL_S = 0.02
CAP_S = 0.25


def shorten_backoff(initial_s: float = INITIAL_S, cap_s: float = CAP_S) -> bool:
    """Retry a missing object after ``initial_s``, doubling up to ``cap_s``; False for another flwr."""
    from flwr.supercore.inflatable import inflatable_utils

    functions = (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree)
    keys = {"initial_backoff", "backoff_cap", "max_tries_per_object"}
    fits = all(keys <= set(f.__kwdefaults__ or {}) for f in functions)
    if not flwr_fits("the object-pull backoff", "messages wait at Flower's own pace", fits):
        return False
    for function in functions:
        # Callers import the function object itself, so its defaults are what they all use.
        defaults = function.__kwdefaults__
        defaults.update(initial_backoff=initial_s, backoff_cap=cap_s, max_tries_per_object=None)
    return True
