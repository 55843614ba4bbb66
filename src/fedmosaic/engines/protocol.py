"""The one round protocol every engine runs, and the one place an algorithm's halves are built.

A round is five phases: **plan** (the server half picks clients and writes their messages),
**deliver** (a :class:`Transport` carries each message to its client and the reply back),
**screen + aggregate** (:func:`~fedmosaic.engines.screening.screened_aggregate`), **evaluate**
(when :func:`eval_due` says so: evaluation messages, delivered the same way, then the server's
metrics) and **record** (one metrics row). :func:`run_round` runs them in one call for engines that
hold a live link (in-process, Flower); the file pipeline runs the same phase functions one CLI step
at a time. So screening, the ``eval_every`` rule and byte counts exist once, whatever carries the
messages.

The halves are built by :func:`build_server` and :func:`build_client` only: the settings, the
server's data, client-level DP (a wrapper, :mod:`fedmosaic.privacy.dp`) and then the caller's
wrappers, applied in order, each wrapping the one before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fedmosaic.algorithms.registry import get_algorithm
from fedmosaic.core.algorithm import Algorithm, ClientSide, ServerData, ServerSide, Settings
from fedmosaic.core.device import resolve_device
from fedmosaic.core.errors import ConfigError
from fedmosaic.core.message import Message
from fedmosaic.core.modality import ClientSpec
from fedmosaic.core.seeding import SERVER, Rng
from fedmosaic.core.settings import RobustnessConfig
from fedmosaic.core.task import TaskInfo
from fedmosaic.engines.screening import screened_aggregate
from fedmosaic.privacy.dp import PrivacyConfig, private_client

Exchanged = tuple[dict[str, Message], list[str]]  # replies in plan order, planned clients that never replied
ClientWrapper = Callable[[Any], Any]  # a client half -> a client half that intercepts its calls
ServerWrapper = Callable[[Any], Any]  # a server half -> a server half that intercepts its calls


class Transport(Protocol):
    """How a round's messages reach the clients and come back; nothing else.

    ``fit`` and ``evaluate`` get a plan ``{client_id: message}`` and return the replies in plan order
    plus the planned clients whose reply never came. ``annotate`` may add transport facts to the
    round's row (Flower: lost nodes); ``close`` releases what the transport holds.
    """

    def fit(self, round: int, plan: dict[str, Message]) -> Exchanged: ...

    def evaluate(self, round: int, plan: dict[str, Message]) -> Exchanged: ...

    def annotate(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------------------- building


def settings_from_config(cfg: Any, info: TaskInfo, n_clients: int, device: str | None = None) -> Settings:
    """The :class:`Settings` of a ``RunConfig`` (the coordinator's and every node's); ``n_clients`` is
    the default clients per round. ``device`` (default: the config's ``engine.device``) is resolved on
    this machine: one that is not here is a :class:`ConfigError` naming ``engine.device``."""
    return Settings(
        info=info,
        algorithm=cfg.algorithm,
        training=cfg.training,
        model=cfg.model,
        seed=cfg.seed,
        rounds=cfg.rounds,
        clients_per_round=cfg.clients.per_round or n_clients,
        robustness=cfg.robustness,
        device=resolve_device(cfg.engine.device) if device is None else device,
    )


def fit_problems(cfg: Any, info: TaskInfo, baselines: bool = True) -> list[str]:
    """Why the run's algorithms cannot run on a task described by ``info``, one line per problem.

    The main algorithm's lines are keyed ``algorithm.name``, each ``compare`` baseline's ``compare``
    (``baselines=False`` for engines that run the main algorithm only). Each algorithm declares its
    own requirements (:meth:`~fedmosaic.core.algorithm.Algorithm.check_task`).
    """
    named = [("algorithm.name", cfg.algorithm.name)]
    if baselines:
        named += [("compare", name) for name in dict.fromkeys(cfg.compare) if name != cfg.algorithm.name]
    return [f"{key}: {line}" for key, name in named for line in get_algorithm(name).check_task(info)]


def check_fit(cfg: Any, baselines: bool = True) -> Callable[[TaskInfo], None]:
    """A ``build_task`` check: raise :class:`ConfigError` with every :func:`fit_problems` line at once."""

    def check(info: TaskInfo) -> None:
        problems = fit_problems(cfg, info, baselines)
        if problems:
            raise ConfigError("\n".join(problems))

    return check


def wrap(half: Any, wrappers: Sequence[Callable[[Any], Any]]) -> Any:
    """``half`` wrapped by each of ``wrappers`` in order (the last one is the outermost)."""
    for wrapper in wrappers:
        half = wrapper(half)
    return half


def build_server(
    algorithm: type[Algorithm], settings: Settings, data: ServerData, wrappers: Sequence[ServerWrapper] = ()
) -> ServerSide:
    """The algorithm's server half on the server's data, wrapped by ``wrappers`` in order."""
    return wrap(algorithm.Server(settings, data), wrappers)


def build_client(
    algorithm: type[Algorithm],
    settings: Settings,
    privacy: PrivacyConfig | None = None,
    wrappers: Sequence[ClientWrapper] = (),
) -> ClientSide:
    """The algorithm's client half: DP on its uploads when ``privacy`` is enabled (innermost, so a
    fault-injecting wrapper alters what DP produced), then ``wrappers`` in order."""
    client = algorithm.Client(settings)
    if privacy is not None:
        client = private_client(client, privacy)
    return wrap(client, wrappers)


# --------------------------------------------------------------------------------------- the round


def eval_due(round: int, eval_every: int, rounds: int) -> bool:
    """Whether round ``round`` ends with an evaluation: every ``eval_every`` rounds and the last one."""
    return round % eval_every == 0 or round == rounds


def eval_sample(specs: list[ClientSpec], round: int, seed: int, k: int | None) -> list[ClientSpec]:
    """The clients a personalised algorithm evaluates in round ``round`` (``engine.eval_clients``).

    All of them when ``k`` is ``None`` or not below their number; else ``k`` drawn without
    replacement from the round's ``eval-clients`` generator, in list order, so a resumed run and
    every engine evaluate the same ones.
    """
    if k is None or k >= len(specs):
        return list(specs)
    picked = Rng(seed, round, SERVER).numpy("eval-clients").choice(len(specs), size=k, replace=False)
    return [specs[i] for i in np.sort(picked)]


def plan_round(server: ServerSide, round: int, specs: list[ClientSpec], seed: int) -> dict[str, Message]:
    """Phase 1: the server half's messages for this round, from the round's server generator."""
    return server.configure(round, specs, Rng(seed, round, SERVER))


def aggregate_round(
    server: ServerSide,
    round: int,
    plan: Mapping[str, Message],
    replies: Mapping[str, Message],
    robustness: RobustnessConfig | None,
    seed: int,
    dropped: Sequence[str] = (),
) -> dict[str, Any]:
    """Phase 3: screen and aggregate; the round's row so far (clients, train, dropped/rejected/skipped)."""
    train, screened = screened_aggregate(
        server, round, plan, replies, robustness, Rng(seed, round, SERVER), dropped
    )
    return {"round": round, "clients": sorted(plan), "train": train, **screened}


def evaluate_round(
    server: ServerSide,
    round: int,
    specs: list[ClientSpec],
    replies: Mapping[str, Message],
    dropped: Sequence[str] = (),
) -> dict[str, Any]:
    """Phase 4's closing half: the server's metrics from the evaluation replies, as row entries."""
    out: dict[str, Any] = {"eval": server.evaluate(round, specs, dict(replies))}
    if dropped:
        out["eval_dropped"] = list(dropped)
    return out


def nbytes(messages: Mapping[str, Message]) -> int:
    """The exact byte count of ``messages`` (the sum of their arrays' ``nbytes``)."""
    return sum(m.nbytes for m in messages.values())


def run_round(
    server: ServerSide,
    transport: Transport,
    round: int,
    specs: list[ClientSpec],
    *,
    seed: int,
    rounds: int,
    eval_every: int,
    robustness: RobustnessConfig | None,
    eval_clients: int | None = None,
) -> dict[str, Any]:
    """One whole round over ``transport``; the metrics row (what ``metrics.jsonl`` holds).

    ``eval_clients``: evaluate only a seeded sample of that many clients (:func:`eval_sample`); for
    personalised algorithms, whose clients evaluate their own models (``None``: every client).
    """
    plan = plan_round(server, round, specs, seed)
    replies, dropped = transport.fit(round, plan)
    down, up = nbytes(plan), nbytes(replies)
    row = aggregate_round(server, round, plan, replies, robustness, seed, dropped)
    if eval_due(round, eval_every, rounds):
        evaluated = eval_sample(specs, round, seed, eval_clients)
        eval_plan = server.configure_evaluate(round, evaluated)
        eval_replies, eval_dropped = transport.evaluate(round, eval_plan) if eval_plan else ({}, [])
        down += nbytes(eval_plan)
        up += nbytes(eval_replies)
        row.update(evaluate_round(server, round, evaluated, eval_replies, eval_dropped))
    transport.annotate(row)
    row["bytes_up"], row["bytes_down"] = up, down
    return row


# --------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class RoundResult:
    """What one round produced, typed; ``row`` is exactly the line written to ``metrics.jsonl``.

    ``eval`` is empty in rounds without evaluation (see ``eval_every``); ``skipped`` says why a
    round was not aggregated (too few usable replies), else ``None``.
    """

    round: int
    clients: list[str]
    train: dict[str, float]
    eval: dict[str, dict[str, float]]
    rejected: dict[str, str]
    dropped: list[str]
    eval_dropped: list[str]
    skipped: str | None
    bytes_up: int
    bytes_down: int
    seconds: float
    row: dict[str, Any] = field(repr=False)

    @classmethod
    def from_row(cls, row: dict[str, Any], seconds: float) -> RoundResult:
        """The typed view of a metrics row."""
        return cls(
            round=int(row["round"]),
            clients=list(row["clients"]),
            train=dict(row["train"]),
            eval=dict(row.get("eval", {})),
            rejected=dict(row.get("rejected", {})),
            dropped=list(row.get("dropped", [])),
            eval_dropped=list(row.get("eval_dropped", [])),
            skipped=row.get("skipped"),
            bytes_up=int(row["bytes_up"]),
            bytes_down=int(row["bytes_down"]),
            seconds=seconds,
            row=row,
        )
