"""Conformance checks for an Algorithm, built-in or plug-in (in the spirit of scikit-learn's
``check_estimator``).

    from fedmosaic.testing import check_algorithm
    check_algorithm(MyAlgorithm)             # a tiny synthetic image+text task, 2 rounds
    check_algorithm(MyAlgorithm, cfg)        # your own small RunConfig (its algorithm.name = yours)

:func:`check_algorithm` runs every check in :data:`CHECKS` on the registered class and raises an
``AssertionError`` naming the check and the algorithm at the first failure. In pytest, one test per
check (the runs behind them are shared by one :class:`AlgorithmChecks`)::

    @pytest.fixture(scope="module")
    def battery():
        return AlgorithmChecks(MyAlgorithm)

    @pytest.mark.parametrize("check", CHECKS)
    def test_conformance(battery, check):
        battery.run(check)

The checks, in the order they run:

``config_errors_name_the_field``
    Every constrained field of the algorithm's config (pydantic bounds, ``Literal`` choices,
    bool/int/float types), given a value just outside, fails with exactly one line starting
    ``algorithm.<field>:``, both through ``--set`` (:func:`fedmosaic.config.with_overrides`) and
    through ``Federation(task, cls, {field: value})``; so does an unknown key.
``same_seed_same_rows``
    Two in-memory federations of the same config give the same metrics rows.
``server_state_round_trip``
    After each round, the server's ``state()`` loaded into a freshly built server half gives back a
    bit-identical ``state()`` (names, dtypes, shapes, bytes, metadata).
``replies_match_reply_spec``
    Every reply a client sends passes its server's own ``reply_spec`` (``check_reply`` finds nothing),
    and no reply is rejected or round skipped by the engine's screening.
``uploads_are_declared``
    Every array name and meta key a client uploads (fit and evaluate) matches the algorithm's
    :class:`~fedmosaic.core.algorithm.Uploads` declaration, and no meta value is a string.
``flower_records_round_trip``
    Every message sent, every reply and every client state survives Flower's records
    (:mod:`fedmosaic.engines.flower_records`) bit-exactly, metadata types included.
``file_pipeline_matches_memory``
    The file pipeline (``init-root``, ``train-clients``, ``aggregate-vectors``, ``update-clients``
    in a folder) gives the same metrics rows as the in-memory federation.

A check that cannot apply raises :class:`unittest.SkipTest` (pytest reports a skip) with the reason:
an algorithm that pools client data on the server (``needs_pooled_data``) sends no client message,
so the three message checks have nothing to look at; the Flower check needs ``flwr``.

The battery runs the config with what the checks need forced: no simulated dropouts
(``engine.dropout = 0``; the file pipeline has none), one worker (replies are recorded in this
process), reply validation on. Keep the config small: the battery runs it three times (twice in
memory, once through the file pipeline).

The package: :mod:`~fedmosaic.testing.battery` (the checks and the runs behind them),
:mod:`~fedmosaic.testing.recording` (wrappers that record what crosses between the halves),
:mod:`~fedmosaic.testing.compare` (bit-exact message and row comparison),
:mod:`~fedmosaic.testing.values` (invalid values for a config field).
"""

from __future__ import annotations

import unittest
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from fedmosaic.config import RunConfig
from fedmosaic.core.algorithm import Algorithm
from fedmosaic.testing.battery import CHECKS, TINY_OVERRIDES, AlgorithmChecks, tiny_config
from fedmosaic.testing.compare import message_difference, row_difference
from fedmosaic.testing.recording import Exchange, Recording
from fedmosaic.testing.values import invalid_values

__all__ = [
    "CHECKS",
    "TINY_OVERRIDES",
    "AlgorithmChecks",
    "Exchange",
    "Recording",
    "algorithm_checks",
    "check_algorithm",
    "invalid_values",
    "message_difference",
    "row_difference",
    "tiny_config",
]


def algorithm_checks(
    algorithm: type[Algorithm],
    cfg: RunConfig | None = None,
    *,
    overrides: Sequence[str] = (),
    folder: Path | str | None = None,
) -> Iterator[tuple[str, Callable[[], None]]]:
    """``(name, check)`` pairs for ``algorithm`` (see :class:`AlgorithmChecks`), for a parametrisation."""
    yield from AlgorithmChecks(algorithm, cfg, overrides=overrides, folder=folder).items()


def check_algorithm(
    algorithm: type[Algorithm],
    cfg: RunConfig | None = None,
    *,
    overrides: Sequence[str] = (),
    skip: Sequence[str] = (),
    folder: Path | str | None = None,
) -> dict[str, str]:
    """Run every check of :data:`CHECKS` (but ``skip``) on the registered ``algorithm``.

    ``cfg``: a small RunConfig for the algorithm's data (default: :func:`tiny_config`); ``overrides``
    are applied to it. Raises ``AssertionError`` naming the check and the algorithm at the first
    failure; returns each check's outcome (``passed``, ``skipped: <why>`` or ``not run``).
    """
    unknown = sorted(set(skip) - set(CHECKS))
    if unknown:
        raise KeyError(f"skip: no check {', '.join(map(repr, unknown))}; the checks: {', '.join(CHECKS)}")
    outcome: dict[str, str] = {}
    for name, check in algorithm_checks(algorithm, cfg, overrides=overrides, folder=folder):
        if name in skip:
            outcome[name] = "not run"
            continue
        try:
            check()
        except unittest.SkipTest as why:
            outcome[name] = f"skipped: {why}"
        else:
            outcome[name] = "passed"
    return outcome
