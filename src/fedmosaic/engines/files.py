"""The file pipeline: one federation as steps over folders, for consortia without a live link.

A coordinator keeps the *root*; each site keeps only its own client's folder and what the server
published. Every step is a command that reads and writes files only:

    fedmosaic init-root --root R [--config C] [--set k=v]            build the tree, plan round 1
    fedmosaic train-clients --root R [--client k]                    clients train, write their replies
    fedmosaic aggregate-vectors --root R [--min-clients K]           the server aggregates the replies
    fedmosaic update-clients --root R [--client k] [--min-clients K] clients evaluate; the server closes

This module runs the steps in order and decides what is due; its parts each keep one kind of file:
``files_tree`` (the tree ``init-root`` builds, and its layout), ``files_mail`` (messages and their
envelopes), ``files_sites`` (a client's folder: its data, state and two steps), ``files_server``
(``server/`` and ``progress.json``), ``files_outputs`` (the run-folder outputs: rows and summary).

Who reads what. ``init-root`` is the only step that loads the data set (``task.data_dir``); it
splits it once and writes every part where it belongs. A client's step reads ``config.toml``,
``server/task.json`` and its own ``client_k/`` only, so a site's folder is a copy of those three
(its ``progress.json`` is not needed: a client's envelopes say which round its mail is for). The
server's steps read ``server/``, ``progress.json`` and the clients' mail (the inbox it wrote, the
outbox it got back), never a client's data. A folder without ``progress.json`` is a site's.

Rounds close without clients that never reply: ``--min-clients K`` closes the phase with the
replies present (at least K) and records the others in the round's row (``dropped`` for training,
``eval_dropped`` for evaluation), as the live engines do. A reply counts only if its envelope names
this run, this client and the current round, so a late reply to a closed round is ignored.

A step that already happened raises :class:`AlreadyDone` (the CLI exits 0); one that must wait
raises :class:`NotDue`, naming the step that is due or the clients still pending. Randomness is
derived from (seed, round, client, purpose) exactly as in the local engine, so the same seed gives
the same numbers. Like every engine, this one never imports a specific algorithm.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fedmosaic.algorithms.registry import get_algorithm
from fedmosaic.config import RunConfig, load_config
from fedmosaic.core.algorithm import ClientSide
from fedmosaic.core.checkpoint import atomic_write_json
from fedmosaic.core.device import resolve_device
from fedmosaic.core.errors import AlreadyDone, NotDue, PipelineError
from fedmosaic.core.modality import ClientSpec
from fedmosaic.engines.files_mail import Mailbox
from fedmosaic.engines.files_outputs import pipeline_summary, rewrite_row
from fedmosaic.engines.files_server import ServerFolder
from fedmosaic.engines.files_sites import ClientFolders, client_list
from fedmosaic.engines.files_tree import FORMAT, PUBLISHED, build_tree, check_tree, read_published
from fedmosaic.engines.folder_lock import FolderLock
from fedmosaic.engines.local import configure_threads
from fedmosaic.engines.node_data import NODE_FILE
from fedmosaic.engines.protocol import (
    aggregate_round,
    build_client,
    eval_due,
    evaluate_round,
    nbytes,
    plan_round,
    settings_from_config,
)
from fedmosaic.engines.run_folder import peak_rss_mb

__all__ = ["FORMAT", "PUBLISHED", "AlreadyDone", "FilePipeline", "NotDue", "OnFinish", "PipelineError"]

T = TypeVar("T")
STEPS = ("train-clients", "aggregate-vectors", "update-clients")


def _locked(step: Callable[..., T]) -> Callable[..., T]:
    """Run a pipeline step holding the root's lock: two sites stepping one root never interleave."""

    @functools.wraps(step)
    def locked(self: FilePipeline, *args: Any, **kwargs: Any) -> T:
        with FolderLock(self.root, "--root"):
            return step(self, *args, **kwargs)

    return locked


# Called with the root and the config once the last round is closed and summary.json is written: the
# CLI passes one that writes report.md (the reporting layer sits above the engines, so they take it).
OnFinish = Callable[[Path, RunConfig], object]


class FilePipeline:
    """One federation in a folder tree (a coordinator's root or a site's copy); each step is a method.

    ``on_finish(root, cfg)`` runs when the last round closes, before the pipeline is marked done.
    """

    def __init__(self, root: Path | str, on_finish: OnFinish | None = None) -> None:
        self.root = Path(root)
        self.on_finish = on_finish
        check_tree(self.root)
        self.cfg: RunConfig = load_config(self.root / "config.toml")
        configure_threads(self.cfg.engine.threads)
        resolve_device(self.cfg.engine.device)  # a device this machine lacks: one line, before any step
        self.run_id, self.info, self.n_clients = read_published(self.root)
        self.mail = Mailbox(self.root, self.run_id)
        self.sites = ClientFolders(self.root, self.mail, self.cfg)
        self.algorithm = get_algorithm(self.cfg.algorithm.name)
        self.server = ServerFolder(self.root, self.cfg, self.algorithm, self.info)

    # ------------------------------------------------------------------ set-up

    @classmethod
    def init(cls, root: Path | str, cfg: RunConfig) -> FilePipeline:
        """Split the data set once into the clients' folders and ``server/``; plan round 1 (``init-root``)."""
        root = Path(root)
        with FolderLock(root, "--root"):
            build_tree(root, cfg)
            pipeline = cls(root)
            pipeline._plan(1)
            return pipeline

    # ------------------------------------------------------------------ what the server holds

    @property
    def progress(self) -> dict[str, Any]:
        """The coordinator's ``progress.json``: round, the step due, planned clients, bytes so far."""
        return self.server.progress

    @property
    def specs(self) -> list[ClientSpec]:
        """Every client's spec, in task order (the server's: a site does not hold them)."""
        return self.server.specs

    def _plan(self, r: int) -> None:
        """Server: write round ``r``'s messages into the chosen clients' inboxes."""
        server = self.server.load()
        plan = plan_round(server, r, self.specs, self.cfg.seed)
        for cid, message in plan.items():
            self.mail.drop(cid, "outbox")  # a reply found here from now on answers round r
            self.mail.post(cid, "inbox", message, r)
        state = self.server.save(server, r, "plan")
        self.server.commit(
            state,
            round=r,
            due="train-clients",
            planned=list(plan),  # plan order: aggregation is order-exact
            bytes_down=nbytes(plan),
            seconds=0.0,
            peak_rss_mb=0.0,
        )

    def _client(self) -> ClientSide:
        settings = settings_from_config(self.cfg, self.info, self.n_clients)
        return build_client(self.algorithm, settings, self.cfg.privacy)

    # ------------------------------------------------------------------ where the pipeline stands

    def pending(self) -> list[str]:
        """The clients whose reply the current phase still waits for (coordinator only)."""
        progress = self.progress
        r = progress["round"]
        if progress["due"] == "train-clients":
            return [c for c in progress["planned"] if not self.mail.answered(c, "outbox", r)]
        if progress["due"] == "update-clients":
            return [c for c in progress["eval_planned"] if not self.mail.answered(c, "eval_outbox", r)]
        return []

    def next_step(self) -> str:
        """The step due in the coordinator's root (``done`` after the last round)."""
        due = self.progress["due"]
        if due == "train-clients" and not self.pending():
            return "aggregate-vectors"
        return "train-clients" if due == "plan" else due

    def status(self) -> str:
        """One line per folder state: the coordinator's next step and whom it waits for, or a site's."""
        if not self.server.is_coordinator:
            return "; ".join(self.sites.status(cid) for cid in self.sites.here()) or (
                f"{self.root} holds no client's data"
            )
        progress = self.progress
        if progress["due"] == "done":
            return (
                f"all rounds done; metrics: {self.root / 'metrics.jsonl'}, report: {self.root / 'report.md'}"
            )
        pending = self.pending()
        waiting = f" (waiting for: {client_list(pending)})" if pending else ""
        return f"round {progress['round']}: next step {self.next_step()}{waiting}"

    def _hint(self, step: str) -> str:
        return f"fedmosaic {step} --root {self.root}"

    def _coordinator(self, step: str, during: str | None = None) -> dict[str, Any]:
        """The coordinator's progress for ``step``; :class:`AlreadyDone` once every round is done, or
        (with ``during``) once the round has moved past that phase."""
        progress = self.progress
        if progress["due"] == "plan":  # init-root was interrupted after writing the tree
            self._plan(progress["round"])
            progress = self.progress
        if progress["due"] == "done":
            raise AlreadyDone(f"{step}: already done: the pipeline finished all {self.cfg.rounds} rounds")
        if during is not None and progress["due"] != during:
            nxt = self.next_step()
            raise AlreadyDone(
                f"{step}: already done in round {progress['round']}; "
                f"the next step is {nxt} ({self._hint(nxt)})"
            )
        return progress

    def _check_client(self, step: str, cid: str, listed: list[str], r: int) -> None:
        if cid not in {s.id for s in self.specs}:
            raise PipelineError(f"--client: no client {cid!r} in {self.root}")
        if cid not in listed:
            raise PipelineError(f"{step} --client {cid}: client {cid} has no part in round {r}")
        if not self.sites.holds_data(cid):
            raise PipelineError(
                f"--client: {self.root / cid} holds no data of {cid} (no {NODE_FILE}); "
                "run its steps at its site"
            )

    def _waiting(self, step: str, r: int, missing: list[str], slot: str, arrived: int) -> NotDue:
        """The "not due" of a server step: whose replies are missing, and how to close without them."""
        late = self.mail.late(missing, slot, r)
        ignored = f"; ignored late replies to earlier rounds from {client_list(late)}" if late else ""
        what, due = ("trained replies", "train-clients") if slot == "outbox" else ("evaluations", step)
        text = (
            f"{step}: not due in round {r}; the next step is {due}: "
            f"waiting for the {what} of {client_list(missing)} "
            f"({arrived} of {arrived + len(missing)} in{ignored})"
        )
        if arrived:
            text += f"; to close the round without them: {self._hint(step)} --min-clients K (K <= {arrived})"
        return NotDue(text)

    @staticmethod
    def _check_min(min_clients: int | None, planned: int) -> None:
        if min_clients is not None and not 1 <= min_clients <= max(planned, 1):
            raise PipelineError(
                f"--min-clients: expected 1 to the {planned} clients asked, got {min_clients}"
            )

    # ------------------------------------------------------------------ steps

    @_locked
    def train_clients(self, client: str | None = None) -> list[str]:
        """Each planned client here (or only ``client``) trains on its own data and writes its reply.

        In the coordinator's root: the round's planned clients whose data is here. In a site's
        folder: its clients, each answering the round its inbox names. Returns the clients trained.
        """
        if self.server.is_coordinator:
            todo = self._coordinator_train_todo(client)
        else:
            todo = self.sites.due("train-clients", client, "inbox", "outbox")
        algorithm_client = self._client()
        for cid in todo:
            self.sites.train(algorithm_client, cid)
        return todo

    def _coordinator_train_todo(self, client: str | None) -> list[str]:
        progress = self._coordinator("train-clients", during="train-clients")
        r, planned = progress["round"], progress["planned"]
        pending = [c for c in planned if not self.mail.answered(c, "outbox", r)]
        if client is not None:
            self._check_client("train-clients", client, planned, r)
            if client not in pending:
                waiting = f"; waiting for: {client_list(pending)}" if pending else ""
                raise AlreadyDone(
                    f"train-clients --client {client}: already done: its reply to round {r} is in "
                    f"{self.root / client / 'outbox.safetensors'}{waiting}"
                )
            return [client]
        if planned and not pending:
            raise AlreadyDone(
                f"train-clients: already done in round {r}; the next step is aggregate-vectors "
                f"({self._hint('aggregate-vectors')})"
            )
        todo = [c for c in pending if self.sites.holds_data(c)]
        if pending and not todo:
            raise NotDue(
                f"train-clients: not due here in round {r}: the clients still pending "
                f"({client_list(pending)}) train at their sites (train-clients --client k), whose outboxes "
                "come back into this root"
            )
        return todo

    @_locked
    def aggregate_vectors(self, min_clients: int | None = None) -> dict[str, float]:
        """Server: aggregate the round's replies and send each client its evaluation request.

        Waits (:class:`NotDue`) until every planned client replied, or, with ``min_clients``, until
        at least that many did: the others are recorded as ``dropped`` and their replies, should they
        come later, are ignored.
        """
        t0 = time.perf_counter()
        progress = self._coordinator("aggregate-vectors", during="train-clients")
        r, planned = progress["round"], progress["planned"]
        self._check_min(min_clients, len(planned))
        answered = [c for c in planned if self.mail.answered(c, "outbox", r)]
        missing = [c for c in planned if c not in answered]
        if missing and (min_clients is None or len(answered) < min_clients):
            raise self._waiting("aggregate-vectors", r, missing, "outbox", len(answered))
        server = self.server.load()
        plan = {c: self.mail.read(c, "inbox") for c in planned}
        replies = {c: self.mail.read(c, "outbox") for c in answered}
        row = aggregate_round(server, r, plan, replies, self.cfg.robustness, self.cfg.seed, dropped=missing)
        evaluating = eval_due(r, self.cfg.engine.eval_every, self.cfg.rounds)
        eval_plan = server.configure_evaluate(r, self.server.evaluated(r)) if evaluating else {}
        for cid, message in eval_plan.items():
            self.mail.drop(cid, "eval_outbox")
            self.mail.post(cid, "eval_inbox", message, r)
        state = self.server.save(server, r, "aggregate")
        seconds, peak = self.mail.costs(answered, "outbox")
        self.server.commit(
            state,
            due="update-clients",
            row=row,
            evaluating=evaluating,
            eval_planned=list(eval_plan),
            bytes_up=nbytes(replies),
            bytes_down=progress["bytes_down"] + nbytes(eval_plan),
            seconds=progress["seconds"] + seconds + time.perf_counter() - t0,
            peak_rss_mb=max(progress["peak_rss_mb"], peak, peak_rss_mb()),
        )
        return row["train"]

    @_locked
    def update_clients(
        self, client: str | None = None, min_clients: int | None = None
    ) -> dict[str, Any] | None:
        """Clients here (or only ``client``) evaluate; in the coordinator's root the round then closes.

        The round closes when every asked client has replied, or, with ``min_clients``, when at least
        that many have (the others are recorded as ``eval_dropped``; no client evaluates in that call).
        Closing = the server's evaluation bookkeeping, one metrics row, and the next round's plan (or,
        after the last round, ``summary.json`` and ``report.md``). Returns the row when the round
        closed, else None.
        """
        if not self.server.is_coordinator:
            if min_clients is not None:
                raise PipelineError(
                    "--min-clients: closing a round is the server's step; run it in the coordinator's root"
                )
            algorithm_client = self._client()
            for cid in self.sites.due("update-clients", client, "eval_inbox", "eval_outbox"):
                self.sites.evaluate(algorithm_client, cid)
            return None
        t0 = time.perf_counter()
        progress = self._coordinator("update-clients")
        r = progress["round"]
        if progress["due"] == "train-clients":
            nxt = self.next_step()
            if r > 1:
                raise AlreadyDone(
                    f"update-clients: already done: round {r - 1} is closed; round {r}'s next step is "
                    f"{nxt} ({self._hint(nxt)})"
                )
            raise NotDue(f"update-clients: not due in round {r}; the next step is {nxt} ({self._hint(nxt)})")
        asked = progress["eval_planned"]
        self._check_min(min_clients, len(asked))
        pending = [c for c in asked if not self.mail.answered(c, "eval_outbox", r)]
        if min_clients is not None:
            # The server's decision to close now: no client work, so a client whose data is here but
            # that missed training (no state to evaluate) cannot stand in the way.
            if client is not None:
                raise PipelineError("--min-clients closes the round for the server; drop --client")
            todo = []
        elif client is not None:
            self._check_client("update-clients", client, asked, r)
            if client not in pending and pending:
                raise AlreadyDone(
                    f"update-clients --client {client}: already done: its evaluation of round {r} is in "
                    f"{self.root / client / 'eval_outbox.safetensors'}; waiting for: {client_list(pending)}"
                )
            todo = [client] if client in pending else []  # none pending: this call closes the round
        else:
            todo = [c for c in pending if self.sites.holds_data(c)]
        if todo:
            algorithm_client = self._client()
            for cid in todo:
                self.sites.evaluate(algorithm_client, cid)
        answered = [c for c in asked if self.mail.answered(c, "eval_outbox", r)]
        missing = [c for c in asked if c not in answered]
        if missing and (min_clients is None or len(answered) < min_clients):
            if todo:
                return None  # this call did its part; the round waits for the others
            raise self._waiting("update-clients", r, missing, "eval_outbox", len(answered))
        return self._close_round(progress, answered, missing, time.perf_counter() - t0)

    def _close_round(
        self, progress: dict[str, Any], answered: list[str], dropped: list[str], spent: float
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        r = progress["round"]
        replies = {c: self.mail.read(c, "eval_outbox") for c in answered}
        row: dict[str, Any] = dict(progress["row"])  # round, clients, train, dropped/rejected/skipped
        if progress["evaluating"]:
            row.update(evaluate_round(self.server.load(), r, self.server.evaluated(r), replies, dropped))
        row["bytes_up"] = progress["bytes_up"] + nbytes(replies)
        row["bytes_down"] = progress["bytes_down"]
        seconds, peak = self.mail.costs(answered, "eval_outbox")
        timing = {
            "round": r,
            "seconds": progress["seconds"] + seconds + spent + time.perf_counter() - t0,
            "peak_rss_mb": max(progress["peak_rss_mb"], peak, peak_rss_mb()),
        }
        # Rewritten, not appended: a rerun after a crash before the next plan replaces this round's row.
        rewrite_row(self.root / "metrics.jsonl", row)
        rewrite_row(self.root / "timings.jsonl", timing)
        if r >= self.cfg.rounds:
            self._finish()
        else:
            self._plan(r + 1)
        # Only now, with the round closed: until then a rerun of update-clients needs these files.
        for c in progress["eval_planned"]:
            self.mail.drop(c, "eval_inbox")
            self.mail.drop(c, "eval_outbox")
        return row

    def _finish(self) -> None:
        """``summary.json`` as a run folder has it and ``on_finish`` (the CLI's writes ``report.md``),
        then mark the pipeline done.

        In this order: a crash in between leaves the last round due, and the rerun writes both again.
        """
        atomic_write_json(self.root / "summary.json", self.summary())
        if self.on_finish is not None:
            self.on_finish(self.root, self.cfg)
        self.server.set_progress(due="done")

    def summary(self) -> dict[str, Any]:
        """The run's summary, with the keys :class:`fedmosaic.Federation` writes (what report.md reads)."""
        return pipeline_summary(self.root, self.cfg, self.algorithm, self.specs)
