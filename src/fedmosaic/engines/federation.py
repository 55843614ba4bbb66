"""``fedmosaic.Federation``: one federation built from objects, stepped round by round.

The only round loop in fedmosaic. It builds the algorithm's halves (once, through
:mod:`fedmosaic.engines.protocol`), keeps the client states, runs
:func:`~fedmosaic.engines.protocol.run_round` over a transport (in-process by default; Flower's
coordinator passes its own), and records each round: in memory always, and in a run folder
(``metrics.jsonl``, ``timings.jsonl``, checkpoints, ``summary.json``) when one is given, from which a
new Federation over the same folder resumes bit-exactly after the last committed round.

    from fedmosaic import Federation
    fed = Federation(task, "fedavg", rounds=5, seed=0)
    for result in fed.rounds(5):
        print(result.round, result.eval.get("overall"))

Messages are intercepted only by wrappers: ``client_wrappers`` and ``server_wrappers`` are callables
``half -> half`` applied in order (each wraps the one before; client-level DP is applied first when
``privacy`` is enabled). ``callbacks`` get each :class:`RoundResult` after the round is committed.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedmosaic.algorithms.registry import get_algorithm
from fedmosaic.core.algorithm import Algorithm, AlgorithmConfig, ServerData, Settings
from fedmosaic.core.device import resolve_device
from fedmosaic.core.errors import ConfigError, FedmosaicWarning
from fedmosaic.core.message import Message
from fedmosaic.core.metrics import preload as preload_scoring
from fedmosaic.core.modality import ClientSpec
from fedmosaic.core.settings import ModelConfig, RobustnessConfig, TrainingConfig
from fedmosaic.engines.client_pool import asked_workers, resolve_workers
from fedmosaic.engines.folder_lock import FolderLock
from fedmosaic.engines.local import InProcessTransport, MemoryStateStore, configure_threads
from fedmosaic.engines.protocol import (
    ClientWrapper,
    RoundResult,
    ServerWrapper,
    Transport,
    build_client,
    build_server,
    run_round,
)
from fedmosaic.engines.run_folder import RunFolder, peak_rss_mb, read_jsonl
from fedmosaic.engines.state_store import ClientStateStore
from fedmosaic.models.build import preload as preload_models
from fedmosaic.privacy import privacy_summary
from fedmosaic.privacy.dp import PrivacyConfig

if TYPE_CHECKING:
    from fedmosaic.config import RunConfig
    from fedmosaic.core.task import Task

Callback = Callable[[RoundResult], None]
StateStore = ClientStateStore | MemoryStateStore


class Federation:
    """One algorithm on one task: its server half, its client half, the clients' states and the rounds.

    ``algorithm`` is an :class:`~fedmosaic.core.algorithm.Algorithm` class or a registered name;
    ``config`` its config object (or a dict of its fields; default: the algorithm's defaults).
    ``training``/``model``/``robustness``/``privacy`` default to their blocks' defaults (as in
    ``fedmosaic run``: replies screened, the weighted mean, no DP).

    ``folder=None`` keeps everything in memory. With a folder, every round is committed there (the
    run folder of ``fedmosaic run``) and a Federation built again over the same folder continues
    after the last committed round with the same numbers as an uninterrupted run.

    ``eval_clients`` (``engine.eval_clients``): a personalised algorithm's clients evaluate their own
    models, so each evaluated round asks only a seeded sample of that many (default: every client);
    ignored by the others, which evaluate one global model on the server.

    ``transport`` and ``specs`` are for engines that deliver messages elsewhere (Flower's
    coordinator); by default clients run in this process (``workers > 1``: in forked workers).
    ``device`` (``cpu``, ``auto``, ``cuda``, ``cuda:N``, ``mps``) is where both halves keep their
    models and batches; messages and client states stay numpy on the CPU.
    """

    def __init__(
        self,
        task: Task,
        algorithm: type[Algorithm] | str,
        config: AlgorithmConfig | dict[str, Any] | None = None,
        *,
        training: TrainingConfig | None = None,
        model: ModelConfig | None = None,
        robustness: RobustnessConfig | None = None,
        privacy: PrivacyConfig | None = None,
        seed: int = 0,
        rounds: int = 10,
        clients_per_round: int | None = None,
        eval_every: int = 1,
        eval_clients: int | None = None,
        dropout: float = 0.0,
        workers: int | str = 1,
        state_cache: int = 64,
        device: str = "cpu",
        client_wrappers: Sequence[ClientWrapper] = (),
        server_wrappers: Sequence[ServerWrapper] = (),
        callbacks: Sequence[Callback] = (),
        folder: Path | str | None = None,
        transport: Transport | None = None,
        specs: list[ClientSpec] | None = None,
        dataset: str | None = None,
    ) -> None:
        self.algorithm = get_algorithm(algorithm) if isinstance(algorithm, str) else algorithm
        self.config = _algorithm_config(self.algorithm, config)
        in_process = transport is None
        asked = asked_workers(workers) if in_process else 1
        self.device = resolve_device(device, key="device", workers=asked)
        # Before any half is built: a misfit is one line per problem, not a failure inside a model.
        if problems := self.algorithm.check_task(task.info):
            raise ConfigError("\n".join(f"algorithm: {line}" for line in problems))
        self.task = task
        self.specs = list(task.specs if specs is None else specs)
        self.seed, self.total_rounds, self.eval_every = int(seed), int(rounds), int(eval_every)
        if self.total_rounds < 1:
            raise ValueError(f"rounds: expected at least 1, got {rounds}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every: expected at least 1, got {eval_every}")
        if eval_clients is not None and eval_clients < 1:
            raise ValueError(f"eval_clients: expected at least 1, got {eval_clients}")
        # Only a personalised algorithm's clients evaluate models of their own; the others evaluate
        # one global model on the server, whose numbers do not depend on which clients exist.
        self.eval_clients = eval_clients if self.algorithm.personalised else None
        self.robustness = robustness or RobustnessConfig()
        self.privacy = privacy or PrivacyConfig()
        self.dataset = dataset or task.info.name
        self.callbacks: list[Callback] = list(callbacks)
        self.settings: Settings = Settings(
            info=task.info,
            algorithm=self.config,
            training=training or TrainingConfig(),
            model=model or ModelConfig(),
            seed=self.seed,
            rounds=self.total_rounds,
            clients_per_round=clients_per_round or len(self.specs),
            robustness=self.robustness,
            device=self.device,
        )
        pooled = task.pooled_train() if self.algorithm.needs_pooled_data else None
        data = ServerData(task.proxy, task.labelled, task.test, pooled, task.streams)
        self.server = build_server(self.algorithm, self.settings, data, server_wrappers)
        self.client = build_client(self.algorithm, self.settings, self.privacy, client_wrappers)
        preload_scoring()  # every run evaluates, at the latest after its last round
        preload_models(task.info)
        self.folder = RunFolder(Path(folder)) if folder is not None else None
        # Held until close(): no other process writes this folder while the federation lives.
        self._lock = FolderLock(folder, "folder").acquire() if folder is not None else None
        self.states: StateStore = (
            ClientStateStore(self.folder.client_states, state_cache)
            if self.folder is not None
            else MemoryStateStore()
        )
        self.workers = (
            resolve_workers(workers, self.device, self.settings.clients_per_round, bool(client_wrappers))
            if in_process
            else 1
        )
        self.transport: Transport = transport or InProcessTransport(
            self.client, task, self.states, self.seed, dropout, self.workers
        )
        self.history: list[RoundResult] = []
        self._totals: dict[str, Any] = {"bytes_up": 0, "bytes_down": 0, "wall_s": 0.0}
        self._timings: list[dict[str, Any]] = []
        try:
            self.round = self._restore()
        except BaseException:
            self.close()  # a folder that cannot be resumed is not kept locked by this process
            raise

    @classmethod
    def from_config(
        cls,
        cfg: RunConfig,
        task: Task | None = None,
        *,
        folder: Path | str | None = None,
        client_wrappers: Sequence[ClientWrapper] = (),
        server_wrappers: Sequence[ServerWrapper] = (),
        callbacks: Sequence[Callback] = (),
        transport: Transport | None = None,
        specs: list[ClientSpec] | None = None,
    ) -> Federation:
        """The federation a ``RunConfig`` describes (``task`` default: built from ``cfg.task``).

        ``folder`` receives the run's outputs; its ``config.toml`` is written when absent.
        """
        configure_threads(cfg.engine.threads)
        workers = asked_workers(cfg.engine.workers) if transport is None else 1
        # before the data is built or config.toml written
        device = resolve_device(cfg.engine.device, workers=workers)
        if task is None:
            from fedmosaic.data.tasks import build_task

            task = build_task(cfg)
        n_clients = len(task.specs if specs is None else specs)
        # Locked before config.toml is written: a refused federation writes nothing.
        lock = FolderLock(folder, "folder").acquire() if folder is not None else None
        try:
            if folder is not None and not RunFolder(Path(folder)).exists():
                RunFolder(Path(folder)).write_config(cfg.to_toml_dict())
            elif folder is not None:  # continuing a run: only under the config it started with
                RunFolder(Path(folder)).check_config(cfg.to_toml_dict(), key="folder")
            return cls(
                task,
                cfg.algorithm.name,
                cfg.algorithm,
                training=cfg.training,
                model=cfg.model,
                robustness=cfg.robustness,
                privacy=cfg.privacy,
                seed=cfg.seed,
                rounds=cfg.rounds,
                clients_per_round=cfg.clients.per_round or n_clients,
                eval_every=cfg.engine.eval_every,
                eval_clients=cfg.engine.eval_clients,
                dropout=cfg.engine.dropout,
                workers=cfg.engine.workers,
                state_cache=cfg.engine.state_cache,
                device=device,
                client_wrappers=client_wrappers,
                server_wrappers=server_wrappers,
                callbacks=callbacks,
                folder=folder,
                transport=transport,
                specs=specs,
                dataset=cfg.task.dataset,
            )
        finally:
            if lock is not None:
                lock.release()  # the federation holds its own (re-entrant) lock from here on

    # ------------------------------------------------------------------ stepping

    @property
    def finished(self) -> bool:
        """Whether all configured rounds have run."""
        return self.round >= self.total_rounds

    def step(self) -> RoundResult:
        """Run the next round, record it (and commit it to the folder, if any); its result."""
        if self.finished:
            raise ValueError(
                f"rounds: all {self.total_rounds} rounds have run; build the federation with more rounds"
            )
        r = self.round + 1
        t0 = time.perf_counter()
        row = run_round(
            self.server,
            self.transport,
            r,
            self.specs,
            seed=self.seed,
            rounds=self.total_rounds,
            eval_every=self.eval_every,
            robustness=self.robustness,
            eval_clients=self.eval_clients,
        )
        seconds = time.perf_counter() - t0
        self._record(r, row, seconds)
        result = RoundResult.from_row(row, seconds)
        self.history.append(result)
        for callback in self.callbacks:
            callback(result)
        return result

    def rounds(self, n: int | None = None) -> Iterator[RoundResult]:
        """The next ``n`` rounds (default: all that remain), one result at a time."""
        remaining = self.total_rounds - self.round
        if n is not None and not 0 <= n <= remaining:
            raise ValueError(f"n: expected 0 to the {remaining} remaining rounds, got {n}")
        for _ in range(remaining if n is None else n):
            yield self.step()

    def run(self) -> dict[str, Any]:
        """Run (or continue) to the last round; the summary (also written to the folder, if any)."""
        try:
            for _ in self.rounds():
                pass
            return self.summary()
        finally:
            self.close()

    def close(self) -> None:
        """Release what the transport holds (worker processes) and the folder's lock; idempotent."""
        self.transport.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ looking inside

    def client_state(self, client_id: str) -> Message:
        """The newest persistent state of ``client_id`` (an empty Message before it trained)."""
        if client_id not in {s.id for s in self.specs}:
            raise KeyError(f"client_id: no client {client_id!r} in this federation")
        return self.states.get(client_id)

    def rows(self) -> list[dict[str, Any]]:
        """Every round's metrics row so far (from the folder when there is one, so resumed rounds count)."""
        if self.folder is not None:
            return read_jsonl(self.folder.metrics)
        return [result.row for result in self.history]

    def summary(self) -> dict[str, Any]:
        """Final metrics, bytes, time and memory of the rounds so far (written to ``summary.json``)."""
        rows = self.rows()
        evaluated = [row for row in rows if "eval" in row]
        timings = read_jsonl(self.folder.timings) if self.folder is not None else self._timings
        totals = self._totals
        summary: dict[str, Any] = {
            "algorithm": self.algorithm.name,
            "dataset": self.dataset,
            "seed": self.seed,
            "rounds": len(rows),
            "clients": len(self.specs),
            "groups": {
                g: sum(1 for s in self.specs if s.group == g) for g in sorted({s.group for s in self.specs})
            },
            "data": self.task.data_summary(),
            "final": evaluated[-1]["eval"] if evaluated else {},
            "bytes_up": totals["bytes_up"],
            "bytes_down": totals["bytes_down"],
            "wall_s": totals["wall_s"],
            "seconds_per_round": totals["wall_s"] / max(len(rows), 1),
            "peak_rss_mb": max((t["peak_rss_mb"] for t in timings), default=peak_rss_mb()),
        }
        if self.privacy.enabled:
            n = len(self.specs)
            per_round = self.settings.clients_per_round
            pooled = self.algorithm.needs_pooled_data
            summary["privacy"] = privacy_summary(self.privacy, rows, n, per_round, pooled=pooled)
        if self.folder is not None:
            self.folder.write_summary(summary)
        return summary

    # ------------------------------------------------------------------ bookkeeping

    def _record(self, r: int, row: dict[str, Any], seconds: float) -> None:
        self.round = r
        self._totals["bytes_up"] += row["bytes_up"]
        self._totals["bytes_down"] += row["bytes_down"]
        self._totals["wall_s"] += seconds
        # "ended": wall-clock time (Unix seconds), so another process can tell when a round ran
        timing = {"round": r, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "ended": time.time()}
        self._timings.append(timing)
        if self.folder is None:
            return
        self.folder.append(self.folder.metrics, row)
        self.folder.append(self.folder.timings, timing)
        self.folder.commit(r, self.server.state(), self._totals)

    def _restore(self) -> int:
        """Continue after the folder's last committed round (0 in memory or in a new folder)."""
        if self.folder is None:
            return 0
        # A damaged last checkpoint falls back to the one before it (the runner recovers first and
        # prints its line; a Federation used from Python says it as a warning).
        if note := self.folder.recover():
            warnings.warn(note, FedmosaicWarning, stacklevel=3)
        checkpoint = self.folder.last_checkpoint()
        committed = 0
        if checkpoint is not None:
            marker, server_state = checkpoint
            committed = int(marker["round"])
            self.server.load_state(server_state)
            self._totals = {k: marker[k] for k in self._totals}
        # Anything written after the last commit belongs to an interrupted round: drop it.
        self.folder.discard_partial_writes()
        self.states.rollback(committed)
        for path in (self.folder.metrics, self.folder.timings):
            if path.exists():
                self.folder.truncate(path, committed)
        return committed


def _algorithm_config(algorithm: type[Algorithm], config: AlgorithmConfig | dict[str, Any] | None) -> Any:
    """``config`` validated as the algorithm's own config class (one line naming the field if not)."""
    from pydantic import ValidationError

    from fedmosaic.config import ConfigError, format_error

    if isinstance(config, algorithm.Config):
        return config
    fields = {"name": algorithm.name}
    if isinstance(config, AlgorithmConfig):
        fields.update(config.model_dump())
    elif config is not None:
        fields.update(config)
    try:
        return algorithm.Config.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError(format_error(exc, prefix="algorithm")) from None
