"""``fedmosaic.testing``'s conformance battery on every registered algorithm (one test per check), and
deliberately broken algorithms it must catch.

The autoencoder family (fedmekt, mmfedavg, mmfedprox) needs ``(channels, time)`` sensor windows, so
it runs on a small mHealth-format task; every other algorithm on the battery's default synthetic
image+text task. gvf's diagnostic variant runs with private vectors allowed, so one case covers both
names gvf can add to its uploads; one extra case covers fedmekt-S distilling only the last time step.
"""

from __future__ import annotations

import unittest
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import Field, field_validator

from fedmosaic.algorithms import registry
from fedmosaic.algorithms.autoencoder_base import AutoencoderConfig
from fedmosaic.algorithms.base import WEIGHT_UPLOADS
from fedmosaic.algorithms.fedavg import FedAvgClient, FedAvgConfig, FedAvgServer
from fedmosaic.algorithms.registry import algorithm_names, get_algorithm
from fedmosaic.config import RunConfig, load_config
from fedmosaic.core.algorithm import Algorithm, Uploads
from fedmosaic.core.message import Message
from fedmosaic.testing import CHECKS, AlgorithmChecks, check_algorithm, tiny_config
from mhealth_files import mhealth_overrides, write_mhealth

# Overrides an algorithm's one case runs with: the switch that adds an upload, on the diagnostic
# variant that adds the other (so one battery covers both extra names).
CASE_OVERRIDES = {"gvf-shared-encoders": ("algorithm.allow_private_vectors=true",)}
# (test id, algorithm, overrides): every registered algorithm once, plus config variants.
CASES = [(name, name, CASE_OVERRIDES.get(name, ())) for name in algorithm_names()] + [
    ("fedmekt-S-last-step", "fedmekt", ('algorithm.variant="S"', 'algorithm.kd_steps="last"')),
]

# Checks that truly cannot apply, and why. The battery skips them itself (unittest.SkipTest); this
# list pins which skips are expected, so a skip anywhere else fails instead of hiding a problem.
_POOLED = (
    "centralized trains on the pooled training data on the server: no client is ever called, so there "
    "is no message, reply or upload to check (it is the upper bound, not a federated algorithm)"
)
NOT_APPLICABLE = {
    ("centralized", "replies_match_reply_spec"): _POOLED,
    ("centralized", "uploads_are_declared"): _POOLED,
    ("centralized", "flower_records_round_trip"): _POOLED,
}


@pytest.fixture(scope="module")
def mhealth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mhealth(tmp_path_factory.mktemp("mhealth"))


def config_for(algorithm: str, overrides: tuple[str, ...], mhealth_dir: Path) -> RunConfig:
    """The battery's default synthetic task, or the sensor task for the autoencoder family."""
    cls = get_algorithm(algorithm)
    if not issubclass(cls.Config, AutoencoderConfig):
        return tiny_config(algorithm, overrides)
    # a proxy batch smaller than the 24-window proxy set, so fedmekt's batch indices matter
    batch = ["algorithm.proxy_batch=12"] if "proxy_batch" in cls.Config.model_fields else []
    # 2 server epochs, not the default 40: the same code path, a twentieth of the server's steps
    batch += ["algorithm.server_epochs=2"] if "server_epochs" in cls.Config.model_fields else []
    base = [*mhealth_overrides(mhealth_dir), "clients.per_round=4", f"algorithm.name={algorithm}"]
    return load_config(None, [*base, *batch, *overrides])


@pytest.fixture(scope="module")
def batteries(
    mhealth_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], AlgorithmChecks]]:
    """One battery per case, built on first use: its runs are shared by the case's checks."""
    built: dict[str, AlgorithmChecks] = {}

    def get(case: str) -> AlgorithmChecks:
        if case not in built:
            _, algorithm, overrides = next(c for c in CASES if c[0] == case)
            cfg = config_for(algorithm, overrides, mhealth_dir)
            built[case] = AlgorithmChecks(get_algorithm(algorithm), cfg, folder=tmp_path_factory.mktemp(case))
        return built[case]

    yield get
    built.clear()


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize(("case", "algorithm"), [(c, a) for c, a, _ in CASES], ids=[c for c, *_ in CASES])
def test_algorithm_conforms(
    case: str, algorithm: str, check: str, batteries: Callable[[str], AlgorithmChecks]
) -> None:
    expected_skip = NOT_APPLICABLE.get((algorithm, check))
    if check == "flower_records_round_trip":
        pytest.importorskip("flwr")  # the one skip the battery makes for a missing package
    try:
        batteries(case).run(check)
    except unittest.SkipTest as skip:
        assert expected_skip, f"{check} skipped for {case}, which NOT_APPLICABLE does not expect: {skip}"
        pytest.skip(expected_skip)
    assert expected_skip is None, f"{check} ran for {case}; NOT_APPLICABLE says it cannot apply"


def test_every_registered_algorithm_has_a_case() -> None:
    assert {algorithm for _, algorithm, _ in CASES} == set(algorithm_names())
    assert {check for _, check in NOT_APPLICABLE} <= set(CHECKS)


def test_check_algorithm_reports_each_outcome() -> None:
    outcome = check_algorithm(get_algorithm("centralized"), skip=["file_pipeline_matches_memory"])
    assert list(outcome) == list(CHECKS)
    assert outcome["file_pipeline_matches_memory"] == "not run"
    for check in CHECKS:
        if ("centralized", check) in NOT_APPLICABLE:
            assert outcome[check].startswith("skipped: centralized pools client data on the server")
        elif check != "file_pipeline_matches_memory":
            assert outcome[check] == "passed", (check, outcome[check])


def test_an_unregistered_algorithm_is_refused() -> None:
    class Unregistered(Algorithm):
        name = "unregistered"
        Config = FedAvgConfig
        Server = FedAvgServer
        Client = FedAvgClient
        uploads = WEIGHT_UPLOADS

    with pytest.raises(ValueError, match="is not registered as 'unregistered'"):
        check_algorithm(Unregistered)


# --------------------------------------------------------------------------- broken algorithms


class DropsAnArrayServer(FedAvgServer):
    """load_state forgets the head's weight matrix: a resumed run would restart it from scratch."""

    def load_state(self, state: Message) -> None:
        lost = next(n for n in sorted(state.arrays) if n.startswith("head.") and n.endswith("weight"))
        super().load_state(Message({k: v for k, v in state.arrays.items() if k != lost}, state.meta))


class UnseededClient(FedAvgClient):
    """Adds noise from a generator seeded by the operating system, not by the Rng it is given."""

    def fit(self, message: Message, state: Message, data, rng) -> tuple[Message, Message]:
        reply, state = super().fit(message, state, data, rng)
        noise = float(np.random.default_rng().normal(0, 1e-3))
        return Message(
            reply.arrays, {**reply.meta, "train_loss": float(reply.meta["train_loss"]) + noise}
        ), state


class ChattyClient(FedAvgClient):
    """Also uploads a number nobody declared (a meta key, so the reply spec still accepts it)."""

    def fit(self, message: Message, state: Message, data, rng) -> tuple[Message, Message]:
        reply, state = super().fit(message, state, data, rng)
        return Message(reply.arrays, {**reply.meta, "label_histogram_0": 3.0}), state


class MultiLineConfig(FedAvgConfig):
    """A bound whose error spans two lines."""

    width: int = Field(4, ge=1)

    @field_validator("width", mode="before")
    @classmethod
    def _positive(cls, value: object) -> object:
        if isinstance(value, int) and value < 1:
            raise ValueError("width must be positive\nsee docs/algorithms.md")
        return value


class WrongPrefixConfig(FedAvgConfig):
    """A bound whose error names another key."""

    width: int = Field(4, ge=1)

    @field_validator("width", mode="before")
    @classmethod
    def _positive(cls, value: object) -> object:
        if isinstance(value, int) and value < 1:
            raise ValueError("algorithm.size: must be positive")
        return value


def broken(name: str, **parts: object) -> type[Algorithm]:
    """FedAvg with some of its parts (Server, Client, Config, uploads) replaced."""
    attributes = {"name": name, "Config": FedAvgConfig, "Server": FedAvgServer, "Client": FedAvgClient}
    attributes["uploads"] = WEIGHT_UPLOADS
    attributes.update(parts)
    return type(f"Broken_{name.replace('-', '_')}", (Algorithm,), attributes)


BROKEN = {
    "drops-a-state-array": (
        broken("drops-a-state-array", Server=DropsAnArrayServer),
        "server_state_round_trip",
    ),
    "unseeded-noise": (broken("unseeded-noise", Client=UnseededClient), "same_seed_same_rows"),
    "undeclared-upload": (broken("undeclared-upload", Client=ChattyClient), "uploads_are_declared"),
    "under-declared": (
        broken("under-declared", uploads=Uploads(fit_arrays=("head.*",), fit_meta=("n_train", "train_loss"))),
        "uploads_are_declared",
    ),
    "declares-nothing": (broken("declares-nothing", uploads=None), "uploads_are_declared"),
    "multi-line-config-error": (
        broken("multi-line-config-error", Config=MultiLineConfig),
        "config_errors_name_the_field",
    ),
    "wrong-prefix-config-error": (
        broken("wrong-prefix-config-error", Config=WrongPrefixConfig),
        "config_errors_name_the_field",
    ),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_the_battery_catches_a_broken_algorithm(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cls, failing = BROKEN[name]
    registry.ensure_loaded()
    monkeypatch.setitem(registry.ALGORITHMS._items, name, cls)  # registered for this test only
    with pytest.raises(AssertionError, match=rf"^{failing} failed for algorithm '{name}': ") as failure:
        check_algorithm(cls)
    print(failure.value)  # what a plug-in author would read (pytest -s shows it)
