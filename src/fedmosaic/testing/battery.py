"""The checks of :data:`CHECKS` and the runs they share (:class:`AlgorithmChecks`); the default config."""

from __future__ import annotations

import copy
import tempfile
import unittest
from collections.abc import Callable, Iterator, Sequence
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

from fedmosaic.algorithms.registry import get_algorithm
from fedmosaic.config import ConfigError, RunConfig, load_config, with_overrides
from fedmosaic.core.algorithm import Algorithm, ServerData
from fedmosaic.core.task import Task
from fedmosaic.core.validation import check_reply
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.federation import Federation
from fedmosaic.engines.files import FilePipeline
from fedmosaic.engines.protocol import RoundResult, build_server
from fedmosaic.engines.run_folder import read_jsonl
from fedmosaic.testing.compare import json_rows, listing, message_difference, row_difference
from fedmosaic.testing.recording import (
    Exchange,
    Recording,
    RecordingClient,
    RecordingServer,
    copy_message,
)
from fedmosaic.testing.values import invalid_values, toml_literal

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
# 2 rounds: a fraction of the time of tests/conftest.py's 10-client task.
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
# What every check needs of the run, forced onto the caller's config (see fedmosaic.testing's docstring).
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
            client_wrappers=[lambda half: RecordingClient(half, log)],
            server_wrappers=[lambda half: RecordingServer(half, log)],
        )

        def keep_state(result: RoundResult) -> None:
            log.states.append((result.round, copy_message(fed.server.state())))

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
            override = f"algorithm.{key}={toml_literal(bad)}"
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
        assert not problems, listing(f"invalid values handled wrongly, of {2 * len(cases)} tried", problems)

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
            fresh.load_state(copy_message(state))
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
        assert not problems, listing("replies its server does not accept", problems)

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
        assert not lines, listing("uploads its declaration does not allow", lines)

    def check_flower_records_round_trip(self) -> None:
        """Every message and reply through Flower's wire records (put_messages -> get_messages), and
        every new client state through the node's state records (put_state -> get_state), is bit-exact."""
        exchanges = self._messages_or_skip()
        try:
            from flwr.app import RecordDict

            from fedmosaic.engines.flower_records import get_messages, get_state, put_messages, put_state
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
                if part == "state":
                    put_state(records, part, ex.client, message)
                    back = get_state(records, part, ex.client)
                else:
                    put_messages(records, part, {ex.client: message})
                    back = get_messages(records, part)[ex.client]
                difference = message_difference(message, back)
                if difference:
                    problems.append(f"round {ex.round} {ex.client} {ex.call} {part}: {difference}")
        assert not problems, listing("messages Flower's records change", problems)

    def check_file_pipeline_matches_memory(self) -> None:
        """The file pipeline's metrics rows equal the in-memory run's (keys both write)."""
        _, rows = self.recording
        memory = [{k: v for k, v in r.items() if k not in _TRANSPORT_ONLY} for r in json_rows(rows)]
        difference = row_difference(memory, self.file_rows)
        assert difference is None, f"file pipeline vs in-memory: {difference}"
