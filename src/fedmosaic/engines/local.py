"""The local engine: the whole federation simulated in one process (the default engine).

Per round: the server plans, each planned client fits on its own data with its own state, the
server aggregates, and (every ``eval_every`` rounds and at the end) evaluates. After each round the
engine commits a checkpoint, so ``--resume`` continues from the last finished round and, because
every random draw is derived from (seed, round, client, purpose), ends with the same metrics as an
uninterrupted run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch

from fedmosaic.algorithms.registry import get_algorithm
from fedmosaic.core.algorithm import ServerData, Settings
from fedmosaic.core.message import Message
from fedmosaic.core.seeding import SERVER, Rng
from fedmosaic.core.task import Task
from fedmosaic.engines.client_pool import ClientPool
from fedmosaic.engines.run_folder import RunFolder, peak_rss_mb, read_jsonl
from fedmosaic.engines.screening import reply_lost, screened_aggregate
from fedmosaic.engines.state_store import ClientStateStore
from fedmosaic.privacy import privacy_summary, private_client

if TYPE_CHECKING:
    from fedmosaic.config import RunConfig

RoundCallback = Callable[[int, dict[str, Any]], None]


def settings_for(cfg: RunConfig, task: Task, n_clients: int | None = None) -> Settings:
    """The settings both halves of the configured algorithm are built with.

    ``n_clients`` (default: the task's clients) is the federation's size when the task object does
    not hold the clients itself (the Flower coordinator's); it is the default clients per round.
    """
    return Settings(
        info=task.info,
        algorithm=cfg.algorithm,
        training=cfg.training,
        model=cfg.model,
        seed=cfg.seed,
        rounds=cfg.rounds,
        clients_per_round=cfg.clients.per_round or (len(task.clients) if n_clients is None else n_clients),
        robustness=cfg.robustness,
    )


def configure_threads(cfg: RunConfig) -> None:
    """Apply ``engine.threads`` to torch (process-wide; 0 keeps torch's own default)."""
    if cfg.engine.threads:
        torch.set_num_threads(cfg.engine.threads)


class LocalEngine:
    """Runs one configured algorithm on one task, writing into ``folder``."""

    def __init__(self, cfg: RunConfig, task: Task, folder: RunFolder) -> None:
        self.cfg = cfg
        self.task = task
        self.folder = folder
        configure_threads(cfg)
        algorithm = get_algorithm(cfg.algorithm.name)
        settings = settings_for(cfg, task)
        pooled = task.pooled_train() if algorithm.needs_pooled_data else None
        self.server = algorithm.Server(settings, ServerData(task.proxy, task.labelled, task.test, pooled))
        self.client = private_client(algorithm.Client(settings), cfg.privacy)
        self.states = ClientStateStore(folder.client_states, cfg.engine.state_cache)
        self.specs = task.specs
        workers = cfg.engine.workers
        self.pool = ClientPool(self.client, task, cfg.seed, workers) if workers > 1 else None

    def run(self, on_round: RoundCallback | None = None) -> dict[str, Any]:
        """Run (or continue) to ``cfg.rounds``; return the summary that was written."""
        cfg = self.cfg
        start, totals = self._restore()
        try:
            for r in range(start + 1, cfg.rounds + 1):
                self._run_round(r, totals, on_round)
        finally:
            if self.pool is not None:
                self.pool.close()
        return self._summarise(totals)

    def _run_round(self, r: int, totals: dict[str, Any], on_round: RoundCallback | None) -> None:
        """One round, then its metrics, timings and checkpoint."""
        t0 = time.perf_counter()
        row = self._round(r)
        seconds = time.perf_counter() - t0
        totals["bytes_up"] += row["bytes_up"]
        totals["bytes_down"] += row["bytes_down"]
        totals["wall_s"] += seconds
        self.folder.append(self.folder.metrics, row)
        self.folder.append(
            self.folder.timings, {"round": r, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}
        )
        self.folder.commit(r, self.server.state(), totals)
        if on_round is not None:
            on_round(r, row)

    def _restore(self) -> tuple[int, dict[str, Any]]:
        totals: dict[str, Any] = {"bytes_up": 0, "bytes_down": 0, "wall_s": 0.0}
        checkpoint = self.folder.last_checkpoint()
        committed = 0
        if checkpoint is not None:
            marker, server_state = checkpoint
            committed = int(marker["round"])
            self.server.load_state(server_state)
            totals = {k: marker[k] for k in totals}
        # Anything written after the last commit belongs to an interrupted round: drop it.
        self.folder.discard_partial_writes()
        self.states.rollback(committed)
        for path in (self.folder.metrics, self.folder.timings):
            if path.exists():
                self.folder.truncate(path, committed)
        return committed, totals

    def _round(self, r: int) -> dict[str, Any]:
        cfg, specs = self.cfg, self.specs
        plan = self.server.configure(r, specs, Rng(cfg.seed, r, SERVER))
        down = sum(m.nbytes for m in plan.values())
        replies, dropped = {}, []
        for cid, reply, state in self._fit(r, plan):
            self.states.put(cid, r, state)
            # engine.dropout: the client got its message and trained, its reply never arrives (a server
            # that ships its proxy set once, fedmekt or gvf, then ships it again: it cannot tell a lost
            # reply from a lost client state, algorithms/proxy_delivery.py)
            if reply_lost(cfg.seed, r, cid, cfg.engine.dropout):
                dropped.append(cid)
            else:
                replies[cid] = reply
        up = sum(m.nbytes for m in replies.values())
        train, screened = screened_aggregate(
            self.server, r, plan, replies, cfg.robustness, Rng(cfg.seed, r, SERVER), dropped
        )
        row: dict[str, Any] = {"round": r, "clients": sorted(plan), "train": train, **screened}
        if r % cfg.engine.eval_every == 0 or r == cfg.rounds:
            eval_plan = self.server.configure_evaluate(r, specs)
            eval_replies = {
                cid: self.client.evaluate(msg, self.states.get(cid), self.task.client(cid))
                for cid, msg in eval_plan.items()
            }
            down += sum(m.nbytes for m in eval_plan.values())
            up += sum(m.nbytes for m in eval_replies.values())
            row["eval"] = self.server.evaluate(r, specs, eval_replies)
        row["bytes_up"], row["bytes_down"] = up, down
        return row

    def _fit(self, r: int, plan: dict[str, Message]) -> Iterator[tuple[str, Message, Message]]:
        """``(client, reply, new state)`` for each planned client, in plan order, from the pool if any."""
        if self.pool is None:
            for cid, message in plan.items():
                data = self.task.client(cid)
                yield cid, *self.client.fit(message, self.states.get(cid), data, Rng(self.cfg.seed, r, cid))
            return
        jobs = [(cid, r, message, self.states.get(cid)) for cid, message in plan.items()]
        for (cid, *_), (reply, state) in zip(jobs, self.pool.fit(jobs), strict=True):
            yield cid, reply, state

    def _summarise(self, totals: dict[str, Any]) -> dict[str, Any]:
        rows = read_jsonl(self.folder.metrics)
        evaluated = [row for row in rows if "eval" in row]
        timings = read_jsonl(self.folder.timings)
        summary = {
            "algorithm": self.cfg.algorithm.name,
            "dataset": self.cfg.task.dataset,
            "seed": self.cfg.seed,
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
        if self.cfg.privacy.enabled:
            n, pooled = len(self.specs), get_algorithm(self.cfg.algorithm.name).needs_pooled_data
            per_round = self.cfg.clients.per_round or n
            summary["privacy"] = privacy_summary(self.cfg.privacy, rows, n, per_round, pooled=pooled)
        self.folder.write_summary(summary)
        return summary
