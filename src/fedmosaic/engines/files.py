"""The file pipeline: one federation as steps over a folder tree, for consortia without a live link.

A coordinator moves files between sites; every step is a command that reads and writes files only:

    fedmosaic init-root --root R [--config C] [--set k=v]   build the tree, plan round 1
    fedmosaic train-clients --root R [--client k]          each client trains, writes its reply
    fedmosaic aggregate-vectors --root R                   the server aggregates (global vectors ...)
    fedmosaic update-clients --root R [--client k]         clients take in the result, evaluate

The tree (``k`` = a client id)::

    R/config.toml                        the run's config (seed, algorithm, task ...)
    R/progress.json                      round and the step that is due
    R/metrics.jsonl                      one row per round, the same rows the local engine writes
    R/client_k/train/indices.npy, val/indices.npy   the client's samples (indices into the task)
    R/client_k/model.safetensors         the client's persistent state (its own model: best_model)
    R/client_k/inbox.safetensors         what the server sent it for the current round
    R/client_k/outbox.safetensors        its reply (for gvf: proxy vectors vec/<m> + adapters)
    R/client_k/eval_inbox / eval_outbox  the evaluation exchange of the round
    R/server/state.safetensors           the server's state (for gvf: the global vectors ...)

Each step is idempotent (a client that already did its part is skipped) and refuses to run out of
order with a message naming the step that is due. Randomness is derived from (seed, round, client,
purpose) exactly as in the local engine, so the same seed gives the same numbers. Like every engine,
this one never imports a specific algorithm.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from fedmosaic.algorithms.registry import get_algorithm
from fedmosaic.config import ConfigError, RunConfig, load_config
from fedmosaic.core.algorithm import ServerData
from fedmosaic.core.checkpoint import atomic_write_bytes, atomic_write_json, load_message, save_message
from fedmosaic.core.message import Message
from fedmosaic.core.seeding import Rng
from fedmosaic.core.task import Task
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.folder_lock import FolderLock
from fedmosaic.engines.local import configure_threads
from fedmosaic.engines.protocol import (
    aggregate_round,
    build_client,
    build_server,
    check_fit,
    eval_due,
    evaluate_round,
    nbytes,
    plan_round,
    settings_from_config,
)
from fedmosaic.engines.run_folder import read_jsonl
from fedmosaic.privacy import privacy_summary

T = TypeVar("T")
STEPS = ("train-clients", "aggregate-vectors", "update-clients")


class PipelineError(ConfigError):
    """A step that cannot run now (wrong order, missing files); one line naming what is due."""


def _locked(step: Callable[..., T]) -> Callable[..., T]:
    """Run a pipeline step holding the root's lock: two sites stepping one root never interleave."""

    @functools.wraps(step)
    def locked(self: FilePipeline, *args: Any, **kwargs: Any) -> T:
        with FolderLock(self.root, "--root"):
            return step(self, *args, **kwargs)

    return locked


def _write_toml(path: Path, tree: dict[str, Any]) -> None:
    from fedmosaic.engines.run_folder import RunFolder

    RunFolder(path.parent).write_config(tree)  # the same TOML writer as run folders


class FilePipeline:
    """One federation in a folder tree; each public method is one CLI step."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not (self.root / "progress.json").is_file():
            raise PipelineError(
                f"--root: {self.root} holds no pipeline; run: fedmosaic init-root --root {root}"
            )
        self.cfg: RunConfig = load_config(self.root / "config.toml")
        configure_threads(self.cfg.engine.threads)
        self._task: Task | None = None

    # ------------------------------------------------------------------ set-up

    @classmethod
    def init(cls, root: Path, cfg: RunConfig) -> FilePipeline:
        """Build the tree from a data set and modality mix, and plan round 1 (``init-root``)."""
        root = Path(root)
        with FolderLock(root, "--root"):
            if (root / "progress.json").exists():
                raise PipelineError(
                    f"--root: {root} already holds a pipeline (progress.json); pick another folder"
                )
            # Before anything is written: bad data or an algorithm that does not fit it leaves no tree.
            task = build_task(cfg, check=check_fit(cfg, baselines=False))
            _write_toml(root / "config.toml", cfg.to_toml_dict())
            for c in task.clients:
                for part, view in (("train", c.train), ("val", c.val)):
                    (root / c.spec.id / part).mkdir(parents=True, exist_ok=True)
                    np.save(root / c.spec.id / part / "indices.npy", view.indices)
            atomic_write_json(root / "progress.json", {"round": 1, "due": "plan"})
            pipeline = cls(root)
            pipeline._task = task
            pipeline._plan(1)
            return pipeline

    @property
    def task(self) -> Task:
        if self._task is None:
            self._task = build_task(self.cfg)  # the same split from the same config and seed
        return self._task

    @property
    def progress(self) -> dict[str, Any]:
        return json.loads((self.root / "progress.json").read_text())

    def _set_progress(self, **values: Any) -> None:
        atomic_write_json(self.root / "progress.json", {**self.progress, **values})

    def _dir(self, cid: str) -> Path:
        return self.root / cid  # client ids are already "client_<k>"

    def _algorithm(self) -> tuple[Any, Any]:
        algorithm = get_algorithm(self.cfg.algorithm.name)
        task = self.task
        settings = settings_from_config(self.cfg, task.info, len(task.specs))
        pooled = task.pooled_train() if algorithm.needs_pooled_data else None
        server = build_server(algorithm, settings, ServerData(task.proxy, task.labelled, task.test, pooled))
        state = self.root / "server" / "state.safetensors"
        if state.is_file():
            server.load_state(load_message(state))
        return server, build_client(algorithm, settings, self.cfg.privacy)

    def _save_server(self, server: Any) -> None:
        save_message(self.root / "server" / "state.safetensors", server.state())

    def _plan(self, r: int) -> None:
        """Server: write round ``r``'s messages into the chosen clients' inboxes."""
        server, _ = self._algorithm()
        plan = plan_round(server, r, self.task.specs, self.cfg.seed)
        for cid, message in plan.items():
            save_message(self._dir(cid) / "inbox.safetensors", message)
            (self._dir(cid) / "outbox.safetensors").unlink(missing_ok=True)
        self._save_server(server)
        self._set_progress(
            round=r,
            due="train-clients",
            planned=sorted(plan),
            bytes_down=nbytes(plan),
        )

    # ------------------------------------------------------------------ steps

    def _require(self, step: str) -> dict[str, Any]:
        progress = self.progress
        if progress["due"] == "done":
            raise PipelineError(f"{step}: the pipeline finished all {self.cfg.rounds} rounds")
        if progress["due"] != step:
            raise PipelineError(
                f"{step}: not due in round {progress['round']}; the next step is {progress['due']} "
                f"(fedmosaic {progress['due']} --root {self.root})"
            )
        return progress

    def _pick(self, step: str, listed: list[str], client: str | None) -> list[str]:
        if client is None or client in listed:  # decided without building the task (no data read)
            return listed if client is None else [client]
        if client not in {s.id for s in self.task.specs}:
            raise PipelineError(f"--client: no client {client!r} in {self.root}")
        if client not in listed:
            raise PipelineError(f"{step} --client {client}: client {client} has no part in this round")
        return [client]

    def _require_files(self, step: str, files: dict[str, str]) -> None:
        """One line naming the first missing file ``{client: file name}`` (its folder, if that is what is
        missing): checked before the task is built, so a site that lacks its folder learns it at once."""
        for cid, name in files.items():
            folder = self._dir(cid)
            if not folder.is_dir():
                raise PipelineError(
                    f"{step}: client folder {folder} is missing; a site needs its own folder from the "
                    f"pipeline root (init-root wrote it) to run {step}"
                )
            if not (folder / name).is_file():
                raise PipelineError(f"{step}: {folder / name} is missing (client {cid}'s part of round)")

    def _state(self, cid: str) -> Message:
        self._settle(cid)
        path = self._dir(cid) / "model.safetensors"
        return load_message(path) if path.is_file() else Message()

    def _settle(self, cid: str) -> None:
        """Make a trained client's new state current once its reply is written.

        Training writes the new state aside (``model.pending``), then the reply, then moves the state
        into place: a crash before the reply exists leaves the old state, so the rerun trains from
        the same state as the interrupted try and gives the same numbers.
        """
        pending = self._dir(cid) / "model.pending.safetensors"
        if pending.is_file() and (self._dir(cid) / "outbox.safetensors").is_file():
            pending.replace(self._dir(cid) / "model.safetensors")

    @_locked
    def train_clients(self, client: str | None = None) -> list[str]:
        """Each planned client (or only ``client``) trains on its data and writes its reply."""
        progress = self._require("train-clients")
        r, done = progress["round"], []
        todo = self._pick("train-clients", progress["planned"], client)
        self._require_files("train-clients", {cid: "inbox.safetensors" for cid in todo})
        _, algorithm_client = self._algorithm()
        for cid in todo:
            outbox = self._dir(cid) / "outbox.safetensors"
            if outbox.is_file():
                self._settle(cid)
                continue  # idempotent: this client already trained this round
            message = load_message(self._dir(cid) / "inbox.safetensors")
            reply, state = algorithm_client.fit(
                message, self._state(cid), self.task.client(cid), Rng(self.cfg.seed, r, cid)
            )
            save_message(self._dir(cid) / "model.pending.safetensors", state)
            save_message(outbox, reply)
            self._settle(cid)
            done.append(cid)
        if all((self._dir(c) / "outbox.safetensors").is_file() for c in progress["planned"]):
            self._set_progress(due="aggregate-vectors")
        return done

    @_locked
    def aggregate_vectors(self) -> dict[str, float]:
        """Server: aggregate the replies and send each client its evaluation request."""
        progress = self._require("aggregate-vectors")
        r = progress["round"]
        self._require_files("aggregate-vectors", {c: "outbox.safetensors" for c in progress["planned"]})
        server, _ = self._algorithm()
        replies = {c: load_message(self._dir(c) / "outbox.safetensors") for c in progress["planned"]}
        plan = {c: load_message(self._dir(c) / "inbox.safetensors") for c in progress["planned"]}
        row = aggregate_round(server, r, plan, replies, self.cfg.robustness, self.cfg.seed)
        train = row.pop("train")
        screened = {k: v for k, v in row.items() if k not in ("round", "clients")}
        evaluating = eval_due(r, self.cfg.engine.eval_every, self.cfg.rounds)
        eval_plan = server.configure_evaluate(r, self.task.specs) if evaluating else {}
        for cid, message in eval_plan.items():
            save_message(self._dir(cid) / "eval_inbox.safetensors", message)
            (self._dir(cid) / "eval_outbox.safetensors").unlink(missing_ok=True)
        self._save_server(server)
        self._set_progress(
            due="update-clients",
            train=train,
            screened=screened,
            evaluating=evaluating,
            eval_planned=sorted(eval_plan),
            bytes_up=nbytes(replies),
            bytes_down=progress["bytes_down"] + nbytes(eval_plan),
        )
        return train

    @_locked
    def update_clients(self, client: str | None = None) -> dict[str, Any] | None:
        """Clients take in the round's result and evaluate; the last one closes the round.

        Closing = the server's evaluation bookkeeping (it only combines what the clients reported, or
        tests its global model), one metrics row, and the next round's plan.
        """
        progress = self._require("update-clients")
        todo = (
            self._pick("update-clients", progress["eval_planned"], client) if progress["eval_planned"] else []
        )
        waiting = [c for c in todo if not (self._dir(c) / "eval_outbox.safetensors").is_file()]
        self._require_files("update-clients", {cid: "eval_inbox.safetensors" for cid in waiting})
        _, algorithm_client = self._algorithm()
        for cid in todo:
            outbox = self._dir(cid) / "eval_outbox.safetensors"
            if outbox.is_file():
                continue
            message = load_message(self._dir(cid) / "eval_inbox.safetensors")
            save_message(outbox, algorithm_client.evaluate(message, self._state(cid), self.task.client(cid)))
        if not all((self._dir(c) / "eval_outbox.safetensors").is_file() for c in progress["eval_planned"]):
            return None
        return self._close_round(progress)

    def _close_round(self, progress: dict[str, Any]) -> dict[str, Any]:
        r = progress["round"]
        server, _ = self._algorithm()
        replies = {
            c: load_message(self._dir(c) / "eval_outbox.safetensors") for c in progress["eval_planned"]
        }
        row: dict[str, Any] = {"round": r, "clients": progress["planned"], "train": progress["train"]}
        row.update(progress.get("screened", {}))  # rejected replies / skipped round (engines/screening.py)
        if progress["evaluating"]:
            row.update(evaluate_round(server, r, self.task.specs, replies))
        row["bytes_up"] = progress["bytes_up"] + nbytes(replies)
        row["bytes_down"] = progress["bytes_down"]
        # Rewritten, not appended: a rerun after a crash before the next plan replaces this round's row.
        rows = [old for old in read_jsonl(self.root / "metrics.jsonl") if old["round"] < r] + [row]
        atomic_write_bytes(
            self.root / "metrics.jsonl", "".join(json.dumps(x, sort_keys=True) + "\n" for x in rows).encode()
        )
        if r >= self.cfg.rounds:
            self._set_progress(due="done")
            summary = {"rounds": r, "final": row.get("eval", {})}
            if self.cfg.privacy.enabled:
                n, rows = len(self.task.specs), read_jsonl(self.root / "metrics.jsonl")
                per_round = self.cfg.clients.per_round or n
                summary["privacy"] = privacy_summary(self.cfg.privacy, rows, n, per_round)
            atomic_write_json(self.root / "summary.json", summary)
        else:
            self._plan(r + 1)
        # Only now, with the round closed: until then a rerun of update-clients needs these files.
        for c in progress["eval_planned"]:
            for name in ("eval_inbox.safetensors", "eval_outbox.safetensors"):
                (self._dir(c) / name).unlink(missing_ok=True)
        return row
