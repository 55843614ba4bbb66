"""The round loop every live engine shares: plan, train, screen + aggregate, evaluate, commit.

An engine (local simulation, Flower) only says how a round's messages reach the clients and come back
(:meth:`RoundLoop._train`, :meth:`RoundLoop._evaluate`); the loop writes the same ``metrics.jsonl``,
``timings.jsonl``, checkpoints and ``summary.json`` for all of them, and resumes from the last
committed round.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fedmosaic.algorithms.registry import get_algorithm
from fedmosaic.core.message import Message
from fedmosaic.core.modality import ClientSpec
from fedmosaic.core.seeding import SERVER, Rng
from fedmosaic.engines.run_folder import RunFolder, peak_rss_mb, read_jsonl
from fedmosaic.engines.screening import screened_aggregate
from fedmosaic.engines.state_store import ClientStateStore
from fedmosaic.privacy import privacy_summary

if TYPE_CHECKING:
    from fedmosaic.config import RunConfig
    from fedmosaic.core.algorithm import ServerSide
    from fedmosaic.core.task import Task

RoundCallback = Callable[[int, dict[str, Any]], None]
Exchanged = tuple[dict[str, Message], list[str]]  # replies in plan order, planned clients that never replied


class RoundLoop:
    """Runs rounds of one algorithm's server half; subclasses deliver the messages."""

    def __init__(
        self,
        cfg: RunConfig,
        task: Task,
        folder: RunFolder,
        server: ServerSide,
        states: ClientStateStore,
        specs: list[ClientSpec],
    ) -> None:
        self.cfg, self.task, self.folder = cfg, task, folder
        self.server, self.states, self.specs = server, states, specs

    # ------------------------------------------------------------------ what an engine provides

    def _train(self, r: int, plan: dict[str, Message]) -> Exchanged:
        """Deliver the round's fit messages; the replies that came back and the planned clients that
        did not answer."""
        raise NotImplementedError

    def _evaluate(self, r: int, plan: dict[str, Message]) -> Exchanged:
        """Deliver the evaluation messages; as :meth:`_train`."""
        raise NotImplementedError

    def _annotate(self, row: dict[str, Any]) -> None:
        """Add engine-specific facts to a round's row (default: none)."""

    def _close(self) -> None:
        """Release what the engine holds when the run ends, finished or not (default: nothing)."""

    # ------------------------------------------------------------------ the loop

    def run(self, on_round: RoundCallback | None = None) -> dict[str, Any]:
        """Run (or continue) to ``cfg.rounds``; return the summary that was written."""
        start, totals = self._restore()
        try:
            for r in range(start + 1, self.cfg.rounds + 1):
                self._run_round(r, totals, on_round)
        finally:
            self._close()
        return self._summarise(totals)

    def _round(self, r: int) -> dict[str, Any]:
        cfg, specs = self.cfg, self.specs
        plan = self.server.configure(r, specs, Rng(cfg.seed, r, SERVER))
        replies, dropped = self._train(r, plan)
        down = sum(m.nbytes for m in plan.values())
        up = sum(m.nbytes for m in replies.values())
        train, screened = screened_aggregate(
            self.server, r, plan, replies, cfg.robustness, Rng(cfg.seed, r, SERVER), dropped
        )
        row: dict[str, Any] = {"round": r, "clients": sorted(plan), "train": train, **screened}
        if r % cfg.engine.eval_every == 0 or r == cfg.rounds:
            eval_plan = self.server.configure_evaluate(r, specs)
            eval_replies, eval_dropped = self._evaluate(r, eval_plan) if eval_plan else ({}, [])
            down += sum(m.nbytes for m in eval_plan.values())
            up += sum(m.nbytes for m in eval_replies.values())
            row["eval"] = self.server.evaluate(r, specs, eval_replies)
            if eval_dropped:
                row["eval_dropped"] = eval_dropped
        self._annotate(row)
        row["bytes_up"], row["bytes_down"] = up, down
        return row

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
