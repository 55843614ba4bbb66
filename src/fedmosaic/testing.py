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
process), reply validation on. Keep the config small: on the default config (or the 6-client
sensor task for the autoencoder family) each built-in's battery takes 2-6 s on a 2-core machine.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
import types
import typing
import unittest
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any, Literal, TypeVar

import annotated_types
import numpy as np

from fedmosaic.algorithms.registry import get_algorithm
from fedmosaic.config import ConfigError, RunConfig, load_config, with_overrides
from fedmosaic.core.algorithm import Algorithm, ServerData, Settings
from fedmosaic.core.message import Message
from fedmosaic.core.task import Task
from fedmosaic.core.validation import ReplySpec, check_reply
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.federation import Federation
from fedmosaic.engines.files import FilePipeline
from fedmosaic.engines.protocol import RoundResult, build_server
from fedmosaic.engines.run_folder import read_jsonl

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

CHECKS: dict[str, str] = {
    "config_errors_name_the_field": "an invalid value of each constrained config field: one line naming it",
    "same_seed_same_rows": "two in-memory runs of the same seed give the same metrics rows",
    "server_state_round_trip": "server state -> fresh server's load_state -> state is bit-identical",
    "replies_match_reply_spec": "every reply passes the server's own reply_spec",
    "uploads_are_declared": "every uploaded array name and meta key matches the declared uploads",
    "flower_records_round_trip": "every message, reply and client state survives Flower records bit-exactly",
    "file_pipeline_matches_memory": "the file pipeline gives the in-memory federation's metrics rows",
}

# The default config: a 240-sample synthetic image+text task held by one image-only, one text-only and
# two image+text clients (every kind of client an algorithm meets), tiny encoders, one local epoch,
# 2 rounds. About 3x faster than tests/conftest.py's 10-client task (gvf: 2.2 s against 7 s a run).
TINY_OVERRIDES: tuple[str, ...] = (
    "task.options.n_samples=240",
    "task.proxy_size=32",
    "task.labelled_size=32",
    'clients.mix="image:1,text:1,image+text:2"',
    "training.local_epochs=1",
    "rounds=2",
    "engine.progress=false",
    "compare=[]",
    "model.embed_dim=16",
    "model.text_hidden=16",
    "output.plots=false",
)
# What every check needs of the run, forced onto the caller's config (see the module docstring).
_FORCED = (
    "engine.dropout=0",
    "engine.workers=1",
    "robustness.validate_replies=true",
    "engine.progress=false",
    "output.plots=false",
)
# Row keys only an engine with lossy delivery writes; the file pipeline has no delivery to lose.
_TRANSPORT_ONLY = ("dropped", "eval_dropped")


def tiny_config(algorithm: str, overrides: Sequence[str] = ()) -> RunConfig:
    """The default config: :data:`TINY_OVERRIDES` for the registered ``algorithm``, then ``overrides``."""
    return load_config(None, [*TINY_OVERRIDES, f"algorithm.name={algorithm}", *overrides])


# --------------------------------------------------------------------------------------- recording


def _copy(message: Message) -> Message:
    """A deep copy: what was sent, even if a half later changes the arrays in place."""
    return Message({k: np.array(v, copy=True) for k, v in message.arrays.items()}, dict(message.meta))


@dataclass
class Exchange:
    """One client call of a run: the message it got, its reply and (``fit`` only) its new state."""

    call: Literal["fit", "evaluate"]
    round: int
    client: str
    sent: Message
    reply: Message
    state: Message | None = None


@dataclass
class Recording:
    """Everything the battery's wrappers saw in one run."""

    exchanges: list[Exchange] = field(default_factory=list)
    specs: dict[tuple[int, str], ReplySpec] = field(default_factory=dict)  # (round, client) -> spec
    states: list[tuple[int, Message]] = field(default_factory=list)  # server state after each round
    has_reply_spec: bool = True
    round: int = 0
    settings: Settings | None = None  # what the run's halves were built with


class _RecordingClient:
    """A client-half wrapper that keeps a copy of every message in and out; it changes nothing."""

    def __init__(self, inner: Any, log: Recording) -> None:
        self.inner, self.log = inner, log

    def fit(self, message: Message, state: Message, data: Any, rng: Any) -> tuple[Message, Message]:
        reply, new_state = self.inner.fit(message, state, data, rng)
        self.log.exchanges.append(
            Exchange("fit", rng.round, data.spec.id, _copy(message), _copy(reply), _copy(new_state))
        )
        return reply, new_state

    def evaluate(self, message: Message, state: Message, data: Any) -> Message:
        reply = self.inner.evaluate(message, state, data)
        self.log.exchanges.append(
            Exchange("evaluate", self.log.round, data.spec.id, _copy(message), _copy(reply))
        )
        return reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _RecordingServer:
    """A server-half wrapper that notes the round and keeps the reply specs the engine asks for.

    The specs are the ones screening gets, at the moment it gets them (between ``configure`` and
    ``aggregate``), so the check judges replies exactly as the engine does, with no extra call.
    """

    def __init__(self, inner: Any, log: Recording) -> None:
        self.inner, self.log = inner, log
        log.has_reply_spec = callable(getattr(inner, "reply_spec", None))

    def configure(self, round: int, clients: Any, rng: Any) -> dict[str, Message]:
        self.log.round = round
        return self.inner.configure(round, clients, rng)

    def configure_evaluate(self, round: int, clients: Any) -> dict[str, Message]:
        self.log.round = round
        return self.inner.configure_evaluate(round, clients)

    def reply_spec(self, round: int, client_id: str, sent: Message) -> ReplySpec:
        # Without a method of its own, the engine would use an open spec: so does this wrapper.
        spec = (
            self.inner.reply_spec(round, client_id, sent) if self.log.has_reply_spec else ReplySpec.unknown()
        )
        self.log.specs[(round, client_id)] = spec
        return spec

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# --------------------------------------------------------------------------------------- comparing


def _same_scalar(a: Any, b: Any) -> bool:
    """Equal metadata values of the same type (a bool is not an int here); NaN equals NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def message_difference(a: Message, b: Message) -> str | None:
    """The first way ``b`` differs from ``a`` bit for bit (names, dtypes, shapes, bytes, metadata
    keys, value types and values; NaN equals NaN), or ``None``."""
    if sorted(a.arrays) != sorted(b.arrays):
        return f"array names {sorted(a.arrays)} became {sorted(b.arrays)}"
    for name in sorted(a.arrays):
        x, y = a.arrays[name], b.arrays[name]
        if x.dtype != y.dtype:
            return f"array {name!r}: dtype {x.dtype} became {y.dtype}"
        if x.shape != y.shape:
            return f"array {name!r}: shape {x.shape} became {y.shape}"
        if x.tobytes() != y.tobytes():  # C-order bytes: equal values, signed zeros and NaN payloads
            return f"array {name!r}: its bytes differ"
    if sorted(a.meta) != sorted(b.meta):
        return f"meta keys {sorted(a.meta)} became {sorted(b.meta)}"
    for key in sorted(a.meta):
        if not _same_scalar(a.meta[key], b.meta[key]):
            x, y = a.meta[key], b.meta[key]
            return f"meta {key!r}: {x!r} ({type(x).__name__}) became {y!r} ({type(y).__name__})"
    return None


def row_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The first difference between two metrics rows (or lists of rows), NaN equal to NaN, or ``None``."""
    where = path or "the rows"
    if isinstance(a, dict) and isinstance(b, dict):
        if sorted(a) != sorted(b):
            return f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for key in sorted(a):
            found = row_difference(a[key], b[key], f"{path}.{key}" if path else str(key))
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} vs {len(b)} entries"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = row_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return None if both_nan or a == b else f"{where}: {a!r} vs {b!r}"


def _listing(title: str, lines: list[str], limit: int = 12) -> str:
    """``title`` and the first ``limit`` lines (a broken upload can repeat hundreds of times)."""
    more = [f"... and {len(lines) - limit} more"] if len(lines) > limit else []
    return "\n  ".join([f"{title} ({len(lines)}):", *lines[:limit], *more])


def _json_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as ``metrics.jsonl`` holds them (what the file pipeline's rows went through)."""
    return [json.loads(json.dumps(row, sort_keys=True)) for row in rows]


# --------------------------------------------------------------------------------------- config values


def _members(annotation: Any) -> tuple[Any, ...]:
    """The types a field accepts (``int | None`` -> ``(int,)``; ``None`` is never an invalid value)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(m for m in typing.get_args(annotation) if m is not type(None))
    return (annotation,)


def _past(bound: Any, kind: type, side: Literal["below", "above"], strict: bool) -> Any:
    """The value just past a bound: the bound itself when it is strict, else the next int/float."""
    if strict:
        return kind(bound)
    if kind is int:
        return int(bound) - 1 if side == "below" else int(bound) + 1
    return math.nextafter(float(bound), -math.inf if side == "below" else math.inf)


def invalid_values(annotation: Any, metadata: Sequence[Any]) -> list[Any]:
    """Values a field of this type and these pydantic constraints must reject (empty if none is known).

    Types: a string for a number, a fraction for an int, ``"maybe"`` and ``2`` for a bool, a choice
    that is not one for a ``Literal``. Bounds (``Gt``/``Ge``/``Lt``/``Le``): the value just past.
    """
    members = _members(annotation)
    if str in members or any(
        typing.get_origin(m) is not Literal and m not in (bool, int, float) for m in members
    ):
        return []  # a free string (or a container/model) has no generic invalid value
    choices = [c for m in members if typing.get_origin(m) is Literal for c in typing.get_args(m)]
    out: list[Any] = []
    if bool in members:
        out += ["maybe", 2]
    if int in members and bool not in members:
        out.append(1.5)
    if any(m in (int, float) for m in members) or choices:
        bogus = "not-a-" + "-or-".join(map(str, choices)) if choices else "much"
        out.append(bogus)
    if choices and all(isinstance(c, int) and not isinstance(c, bool) for c in choices):
        out.append(max(choices) + 1)
    number = float if float in members else int if int in members and bool not in members else None
    if number is not None:
        for c in metadata:
            if isinstance(c, annotated_types.Gt):
                out.append(_past(c.gt, number, "below", strict=True))
            elif isinstance(c, annotated_types.Ge):
                out.append(_past(c.ge, number, "below", strict=False))
            elif isinstance(c, annotated_types.Lt):
                out.append(_past(c.lt, number, "above", strict=True))
            elif isinstance(c, annotated_types.Le):
                out.append(_past(c.le, number, "above", strict=False))
    return out


def _toml(value: Any) -> str:
    """``value`` as a TOML literal for a ``--set`` override."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    return repr(value)  # ints, floats (repr round-trips; inf/nan are TOML too)


# --------------------------------------------------------------------------------------- the battery

T = TypeVar("T")


def _once(method: Callable[[Any], T]) -> property:
    """A property computed on first use and kept, and so is its exception: when a run crashes, every
    check that needs it fails with the same error instead of running it again."""
    slot = f"_once_{method.__name__}"

    @wraps(method)
    def get(self: Any) -> T:
        if slot not in self.__dict__:
            try:
                self.__dict__[slot] = (method(self), None)
            except Exception as exc:
                self.__dict__[slot] = (None, exc)
        value, error = self.__dict__[slot]
        if error is not None:
            raise error
        return value

    return property(get)


class AlgorithmChecks:
    """The checks of :data:`CHECKS` for one registered Algorithm class and one config.

    The runs behind them (an in-memory federation recorded by wrappers, a second one, the file
    pipeline) happen once, on first use, and are shared by the checks. ``folder`` holds the file
    pipeline's tree (default: a temporary folder, removed with this object).
    """

    def __init__(
        self,
        algorithm: type[Algorithm],
        cfg: RunConfig | None = None,
        *,
        overrides: Sequence[str] = (),
        folder: Path | str | None = None,
    ) -> None:
        try:
            registered = get_algorithm(algorithm.name)
        except KeyError:
            registered = None
        if registered is not algorithm:
            raise ValueError(
                f"algorithm: {algorithm.__name__} is not registered as {algorithm.name!r}; decorate it with "
                "fedmosaic.algorithms.registry.register (config files and the file pipeline find it by name)"
            )
        base = tiny_config(algorithm.name) if cfg is None else cfg
        if base.algorithm.name != algorithm.name:
            raise ValueError(
                f"cfg: algorithm.name is {base.algorithm.name!r}, the class under test is {algorithm.name!r}"
            )
        self.algorithm = algorithm
        self.cfg = with_overrides(base, [*overrides, *_FORCED])
        self._tmp: tempfile.TemporaryDirectory[str] | None = None  # removed with this object
        if folder is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fedmosaic-checks-")
            folder = self._tmp.name
        self.folder = Path(folder)

    # ------------------------------------------------------------------ running the checks

    def items(self) -> Iterator[tuple[str, Callable[[], None]]]:
        """``(name, check)`` for each check in :data:`CHECKS` order; ``check()`` raises an
        ``AssertionError`` naming itself and the algorithm, or ``unittest.SkipTest``."""
        for name in CHECKS:
            yield name, self._named(name)

    def run(self, name: str) -> None:
        """Run the check called ``name``."""
        if name not in CHECKS:
            raise KeyError(f"no check {name!r}; the checks: {', '.join(CHECKS)}")
        self._named(name)()

    def _named(self, name: str) -> Callable[[], None]:
        body: Callable[[], None] = getattr(self, f"check_{name}")

        def check() -> None:
            try:
                body()
            except unittest.SkipTest:
                raise
            except AssertionError as exc:
                raise AssertionError(f"{name} failed for algorithm {self.algorithm.name!r}: {exc}") from None
            except Exception as exc:
                raise AssertionError(
                    f"{name} failed for algorithm {self.algorithm.name!r}: {type(exc).__name__}: {exc}"
                ) from exc

        check.__name__ = check.__qualname__ = name
        return check

    # ------------------------------------------------------------------ the runs, done once

    @_once
    def task(self) -> Task:
        """The config's task (built once; the in-memory runs share it, read-only)."""
        return build_task(self.cfg)

    @_once
    def recording(self) -> tuple[Recording, list[dict[str, Any]]]:
        """An in-memory run with every message, reply spec and per-round server state recorded; its rows."""
        log = Recording()
        fed = Federation.from_config(
            self.cfg,
            self.task,
            client_wrappers=[lambda half: _RecordingClient(half, log)],
            server_wrappers=[lambda half: _RecordingServer(half, log)],
        )

        def keep_state(result: RoundResult) -> None:
            log.states.append((result.round, _copy(fed.server.state())))

        fed.callbacks.append(keep_state)
        log.settings = fed.settings
        with fed:
            rows = [result.row for result in fed.rounds()]
        return log, copy.deepcopy(rows)

    @_once
    def second_rows(self) -> list[dict[str, Any]]:
        """The rows of a second, plain in-memory run of the same config."""
        with Federation.from_config(self.cfg, self.task) as fed:
            return [result.row for result in fed.rounds()]

    @_once
    def file_rows(self) -> list[dict[str, Any]]:
        """The rows the file pipeline writes, step by step as the CLI runs it."""
        root = self.folder / "file-pipeline"
        pipeline = FilePipeline.init(root, self.cfg)
        for _ in range(self.cfg.rounds):
            pipeline.train_clients()
            pipeline.aggregate_vectors()
            pipeline.update_clients()
        assert pipeline.progress["due"] == "done", f"after {self.cfg.rounds} rounds: {pipeline.progress}"
        return read_jsonl(root / "metrics.jsonl")

    def _messages_or_skip(self) -> list[Exchange]:
        log, _ = self.recording
        if not log.exchanges and self.algorithm.needs_pooled_data:
            raise unittest.SkipTest(
                f"{self.algorithm.name} pools client data on the server (needs_pooled_data): "
                "no client message exists to check"
            )
        assert log.exchanges, f"no client was called in {self.cfg.rounds} rounds"
        return log.exchanges

    # ------------------------------------------------------------------ the checks

    def check_config_errors_name_the_field(self) -> None:
        """Each generated invalid value: one ConfigError line starting ``algorithm.<field>:``."""
        cases: list[tuple[str, Any]] = [("no_such_field", 1)]  # an unknown key, for every config
        for name, info in self.algorithm.Config.model_fields.items():
            if name != "name":
                cases += [(info.alias or name, bad) for bad in invalid_values(info.annotation, info.metadata)]
        problems = []
        for key, bad in cases:
            override = f"algorithm.{key}={_toml(bad)}"
            attempts: dict[str, Callable[[], object]] = {
                f"--set {override}": lambda o=override: with_overrides(self.cfg, [o]),
                f"Federation(config={{{key!r}: {bad!r}}})": lambda k=key, b=bad: Federation(
                    self.task, self.algorithm, {k: b}
                ),
            }
            for how, attempt in attempts.items():
                try:
                    attempt()
                except ConfigError as exc:
                    message = str(exc)
                    if "\n" in message or not message.startswith(f"algorithm.{key}:"):
                        problems.append(
                            f"{how}: the error is not one line starting 'algorithm.{key}:': {message!r}"
                        )
                else:
                    problems.append(f"{how}: accepted")
        assert not problems, _listing(f"invalid values handled wrongly, of {2 * len(cases)} tried", problems)

    def check_same_seed_same_rows(self) -> None:
        """The recorded run (its wrappers only observe) and a plain one give the same rows."""
        _, rows = self.recording
        difference = row_difference(rows, self.second_rows)
        assert difference is None, f"two runs with seed {self.cfg.seed} differ at {difference}"

    def check_server_state_round_trip(self) -> None:
        """Each round's server state, loaded into a fresh server half, comes back bit-identical."""
        log, _ = self.recording
        assert log.states and log.settings is not None, "no round ran"
        task = self.task
        pooled = task.pooled_train() if self.algorithm.needs_pooled_data else None
        data = ServerData(task.proxy, task.labelled, task.test, pooled, task.streams)
        for round, state in log.states:
            fresh = build_server(self.algorithm, log.settings, data)  # as the run's, unwrapped
            fresh.load_state(_copy(state))
            difference = message_difference(state, fresh.state())
            assert difference is None, f"after round {round}: state -> load_state -> state: {difference}"

    def check_replies_match_reply_spec(self) -> None:
        """``check_reply(reply, server.reply_spec(...))`` is ``None`` for every fit reply of the run."""
        exchanges = self._messages_or_skip()
        log, rows = self.recording
        assert log.has_reply_spec, (
            "the server half has no reply_spec, so the engines accept replies of any names and shapes"
        )
        problems = []
        for ex in exchanges:
            if ex.call != "fit":
                continue
            spec = log.specs.get((ex.round, ex.client))
            if spec is None:
                problems.append(f"round {ex.round} {ex.client}: the engine never asked for its reply_spec")
                continue
            reason = check_reply(ex.reply, spec)
            if reason:
                problems.append(f"round {ex.round} {ex.client}: {reason}")
        for row in rows:
            problems += [
                f"round {row['round']} {c}: rejected: {why}" for c, why in row.get("rejected", {}).items()
            ]
            if "skipped" in row:
                problems.append(f"round {row['round']}: skipped: {row['skipped']}")
        assert not problems, _listing("replies its server does not accept", problems)

    def check_uploads_are_declared(self) -> None:
        """Every uploaded name matches ``declared_uploads(config)``; no meta value is a string."""
        exchanges = self._messages_or_skip()
        declared = self.algorithm.declared_uploads(self.cfg.algorithm)
        assert declared is not None, (
            "it declares no uploads: set `uploads = Uploads(fit_arrays=..., fit_meta=...)` on the class "
            "(fedmosaic.core.algorithm.Uploads), the names its clients may send"
        )
        info = self.task.info
        senders: dict[str, set[str]] = {}  # problem -> the clients it came from
        for ex in exchanges:
            held = self.task.client(ex.client).spec.modalities
            groups = [info.group(s) for s in info.subsets(frozenset(held))]
            for problem in declared.undeclared(ex.call, ex.reply, held, groups):
                senders.setdefault(problem, set()).add(ex.client)
        lines = [f"{p} (sent by {', '.join(sorted(c))})" for p, c in sorted(senders.items())]
        assert not lines, _listing("uploads its declaration does not allow", lines)

    def check_flower_records_round_trip(self) -> None:
        """put_message -> get_message of every message, reply and new client state is bit-exact."""
        exchanges = self._messages_or_skip()
        try:
            from flwr.app import RecordDict

            from fedmosaic.engines.flower_records import get_message, put_message
        except ImportError as exc:
            raise unittest.SkipTest(
                f"flwr is not installed ({exc}); pip install 'fedmosaic[flower]'"
            ) from None
        problems = []
        for ex in exchanges:
            parts = {"sent": ex.sent, "reply": ex.reply, "state": ex.state}
            for part, message in parts.items():
                if message is None:
                    continue
                records = RecordDict()
                put_message(records, part, ex.client, message)
                difference = message_difference(message, get_message(records, part, ex.client))
                if difference:
                    problems.append(f"round {ex.round} {ex.client} {ex.call} {part}: {difference}")
        assert not problems, _listing("messages Flower's records change", problems)

    def check_file_pipeline_matches_memory(self) -> None:
        """The file pipeline's metrics rows equal the in-memory run's (keys both write)."""
        _, rows = self.recording
        memory = [{k: v for k, v in r.items() if k not in _TRANSPORT_ONLY} for r in _json_rows(rows)]
        difference = row_difference(memory, self.file_rows)
        assert difference is None, f"file pipeline vs in-memory: {difference}"


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
