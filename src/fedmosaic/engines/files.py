"""The file pipeline: one federation as steps over folders, for consortia without a live link.

A coordinator keeps the *root*; each site keeps only its own client's folder and what the server
published. Every step is a command that reads and writes files only:

    fedmosaic init-root --root R [--config C] [--set k=v]            build the tree, plan round 1
    fedmosaic train-clients --root R [--client k]                    clients train, write their replies
    fedmosaic aggregate-vectors --root R [--min-clients K]           the server aggregates the replies
    fedmosaic update-clients --root R [--client k] [--min-clients K] clients evaluate; the server closes

The root (``k`` = a client id)::

    R/config.toml                     the run's config                                     [published]
    R/server/task.json                task description, number of clients, the run's id   [published]
    R/server/server.json              the clients' specs (modalities, sample counts), the data summary
    R/server/data.npz                 the server's data: proxy, labelled and test sets (node_data format)
    R/server/streams.npz              its continuous recordings if the data set has them (reference protocol)
    R/server/state_rNNNNN_<step>.safetensors   the server's state (the one progress.json names)
    R/progress.json                   round, the step that is due, planned clients, bytes so far
    R/metrics.jsonl timings.jsonl summary.json report.md plots/   a run folder's outputs
    R/client_k/node.json, data.npz    the client's own data: a node folder holding one client
    R/client_k/model.safetensors      the client's persistent state (its own model)
    R/client_k/inbox.{safetensors,json}        the server's message and its envelope (run, round)
    R/client_k/outbox.{safetensors,json}       the client's reply and the round it answers
    R/client_k/eval_inbox.*, eval_outbox.*     the evaluation exchange, likewise

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
import json
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from fedmosaic.algorithms.registry import get_algorithm
from fedmosaic.config import RunConfig, load_config
from fedmosaic.core.algorithm import ClientSide, ServerData, ServerSide
from fedmosaic.core.checkpoint import atomic_write_bytes, atomic_write_json, load_message, save_message
from fedmosaic.core.device import resolve_device
from fedmosaic.core.errors import AlreadyDone, NotDue, PipelineError
from fedmosaic.core.message import Message
from fedmosaic.core.modality import ClientSpec
from fedmosaic.core.seeding import Rng
from fedmosaic.core.task import ClientData, TaskInfo
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.folder_lock import FolderLock
from fedmosaic.engines.local import configure_threads
from fedmosaic.engines.node_data import (
    NODE_FILE,
    NodeDataError,
    export_node,
    export_views,
    info_from_json,
    info_to_json,
    load_node,
    load_streams,
    load_views,
    save_streams,
)
from fedmosaic.engines.protocol import (
    aggregate_round,
    build_client,
    build_server,
    check_fit,
    eval_due,
    eval_sample,
    evaluate_round,
    nbytes,
    plan_round,
    settings_from_config,
)
from fedmosaic.engines.run_folder import peak_rss_mb, read_jsonl
from fedmosaic.privacy import privacy_summary

T = TypeVar("T")
FORMAT = 1
STEPS = ("train-clients", "aggregate-vectors", "update-clients")
PUBLISHED = ("config.toml", "server/task.json")  # what every site needs beside its own client_k/


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


def _names(ids: Iterable[str], limit: int = 10) -> str:
    """``a, b, c`` (the first ``limit``, then how many more): a thousand clients fit on one line."""
    ids = list(ids)
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _spec_to_json(spec: ClientSpec) -> dict[str, Any]:
    return {
        "id": spec.id,
        "modalities": sorted(spec.modalities),
        "n_train": spec.n_train,
        "group": spec.group,
    }


def _spec_from_json(data: dict[str, Any]) -> ClientSpec:
    return ClientSpec(data["id"], frozenset(data["modalities"]), int(data["n_train"]), str(data["group"]))


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
        published = self.root / "server" / "task.json"
        if not (self.root / "config.toml").is_file():
            raise PipelineError(
                f"--root: {self.root} holds no pipeline; run: fedmosaic init-root --root {self.root}"
            )
        if not published.is_file() and (self.root / "progress.json").is_file():
            raise PipelineError(
                f"--root: {self.root} was built by an older fedmosaic (no server/task.json: every step "
                "rebuilt the data set); build it again with fedmosaic init-root"
            )
        if not published.is_file():
            raise PipelineError(
                f"--root: {published} is missing; a site's folder needs the server's published files "
                f"({', '.join(PUBLISHED)}) beside its client folder"
            )
        self.cfg: RunConfig = load_config(self.root / "config.toml")
        configure_threads(self.cfg.engine.threads)
        resolve_device(self.cfg.engine.device)  # a device this machine lacks: one line, before any step
        meta = json.loads(published.read_text())
        if meta.get("format") != FORMAT:
            raise PipelineError(f"--root: {published} has format {meta.get('format')}, need {FORMAT}")
        self.run_id: str = meta["run"]
        self.info: TaskInfo = info_from_json(meta["info"])
        self.n_clients: int = int(meta["clients"])
        self.algorithm = get_algorithm(self.cfg.algorithm.name)
        self._specs: list[ClientSpec] | None = None

    # ------------------------------------------------------------------ set-up

    @classmethod
    def init(cls, root: Path | str, cfg: RunConfig) -> FilePipeline:
        """Split the data set once into the clients' folders and ``server/``; plan round 1 (``init-root``)."""
        root = Path(root)
        with FolderLock(root, "--root"):
            if (root / "progress.json").exists() or (root / "server" / "task.json").exists():
                raise PipelineError(f"--root: {root} already holds a pipeline; pick another folder")
            if cfg.engine.dropout:
                raise PipelineError(
                    "engine.dropout: simulated reply loss is the local engine's; in the file pipeline a "
                    "reply is lost when it does not come back (close the round with --min-clients)"
                )
            algorithm = get_algorithm(cfg.algorithm.name)
            resolve_device(cfg.engine.device)
            # Before anything is written: bad data or an algorithm that does not fit it leaves no tree.
            task = build_task(cfg, check=check_fit(cfg, baselines=False))
            _write_toml(root / "config.toml", cfg.to_toml_dict())
            for client in task.clients:
                export_node(task, [client.spec.id], root / client.spec.id)
            server = root / "server"
            server.mkdir(parents=True, exist_ok=True)
            views = {"proxy": task.proxy, "labelled": task.labelled, "test": task.test}
            if algorithm.needs_pooled_data:
                # The centralized upper bound trains on every client's data by definition: its server
                # is the one party that holds it all (no client takes part in its rounds).
                views["pooled"] = task.pooled_train()
            export_views(task, views, server / "data.npz")
            if task.streams is not None:
                save_streams(task.streams, server / "streams.npz")
            specs = [_spec_to_json(c.spec) for c in task.clients]  # task order: sampling and aggregation
            atomic_write_json(server / "server.json", {"clients": specs, "data": task.data_summary()})
            published = {
                "format": FORMAT,
                # Envelopes name it: mail from another pipeline (an old root, a neighbour's) never counts.
                "run": uuid.uuid4().hex,
                "info": info_to_json(task.info),
                "clients": len(task.clients),
            }
            atomic_write_json(server / "task.json", published)
            atomic_write_json(root / "progress.json", {"round": 1, "due": "plan"})
            pipeline = cls(root)
            pipeline._plan(1)
            return pipeline

    # ------------------------------------------------------------------ what the server holds

    @property
    def is_coordinator(self) -> bool:
        """Whether this is the coordinator's root (it has ``progress.json``) rather than a site's copy."""
        return (self.root / "progress.json").is_file()

    @property
    def progress(self) -> dict[str, Any]:
        """The coordinator's ``progress.json``: round, the step due, planned clients, bytes so far."""
        path = self.root / "progress.json"
        if not path.is_file():
            raise PipelineError(
                f"--root: {self.root} is a site's folder (no progress.json); the server's steps "
                "(aggregate-vectors, closing a round) run in the coordinator's root"
            )
        return json.loads(path.read_text())

    def _set_progress(self, **values: Any) -> None:
        atomic_write_json(self.root / "progress.json", {**self.progress, **values})

    @property
    def specs(self) -> list[ClientSpec]:
        """Every client's spec, in task order (the server's: a site does not hold them)."""
        if self._specs is None:
            path = self.root / "server" / "server.json"
            if not path.is_file():
                raise PipelineError(f"--root: {path} is missing; the server's steps need the server's files")
            self._specs = [_spec_from_json(s) for s in json.loads(path.read_text())["clients"]]
        return self._specs

    def _evaluated(self, r: int) -> list[ClientSpec]:
        """The clients evaluated in round ``r`` (``engine.eval_clients``, personalised algorithms only)."""
        k = self.cfg.engine.eval_clients if self.algorithm.personalised else None
        return eval_sample(self.specs, r, self.cfg.seed, k)

    def _server(self) -> ServerSide:
        """The server half on the server's own data (``server/data.npz``) and its committed state."""
        path = self.root / "server" / "data.npz"
        if not path.is_file():
            raise PipelineError(f"--root: {path} is missing; the server's steps need the server's files")
        views = load_views(path, self.info)
        settings = settings_from_config(self.cfg, self.info, len(self.specs))
        streams = load_streams(self.root / "server" / "streams.npz")
        data = ServerData(views["proxy"], views["labelled"], views["test"], views.get("pooled"), streams)
        server = build_server(self.algorithm, settings, data)
        name = self.progress.get("state")
        if name:
            server.load_state(load_message(self.root / "server" / name))
        return server

    def _save_server(self, server: ServerSide, r: int, step: str) -> str:
        """Write the server's state under a new name; it counts once ``progress.json`` names it.

        So a step that dies after this write but before its progress is recorded reruns from the
        state it started with (as the run folder's commit marker does for checkpoints).
        """
        name = f"state_r{r:05d}_{step}.safetensors"
        save_message(self.root / "server" / name, server.state())
        return name

    def _commit(self, state: str, **values: Any) -> None:
        """Record progress naming the server state ``state``, then drop the older states."""
        self._set_progress(state=state, **values)
        for old in (self.root / "server").glob("state_r*.safetensors"):
            if old.name != state:
                old.unlink(missing_ok=True)

    def _plan(self, r: int) -> None:
        """Server: write round ``r``'s messages into the chosen clients' inboxes."""
        server = self._server()
        plan = plan_round(server, r, self.specs, self.cfg.seed)
        for cid, message in plan.items():
            self._drop_mail(cid, "outbox")  # a reply found here from now on answers round r
            self._post(cid, "inbox", message, r)
        state = self._save_server(server, r, "plan")
        self._commit(
            state,
            round=r,
            due="train-clients",
            planned=list(plan),  # plan order: aggregation is order-exact
            bytes_down=nbytes(plan),
            seconds=0.0,
            peak_rss_mb=0.0,
        )

    # ------------------------------------------------------------------ mail

    def _post(self, cid: str, slot: str, message: Message, r: int, **facts: Any) -> None:
        folder = self.root / cid
        save_message(folder / f"{slot}.safetensors", message)
        # The envelope is written last: a message without one was cut short (or half copied) and
        # does not count.
        atomic_write_json(folder / f"{slot}.json", {"run": self.run_id, "client": cid, "round": r, **facts})

    def _mail(self, cid: str, slot: str) -> dict[str, Any] | None:
        """The envelope of ``client_k/<slot>`` if that mail is this run's and this client's, else None."""
        folder = self.root / cid
        try:
            envelope = json.loads((folder / f"{slot}.json").read_text())
        except (OSError, ValueError):
            return None
        if not (folder / f"{slot}.safetensors").is_file():
            return None
        if envelope.get("run") != self.run_id or envelope.get("client") != cid:
            return None  # another pipeline's mail, or another client's copied into the wrong folder
        return envelope if isinstance(envelope.get("round"), int) else None

    def _answered(self, cid: str, slot: str, r: int) -> bool:
        """Whether ``cid``'s ``slot`` holds its reply to round ``r`` (not an older one)."""
        envelope = self._mail(cid, slot)
        return envelope is not None and envelope["round"] == r

    def _drop_mail(self, cid: str, slot: str) -> None:
        for suffix in (".json", ".safetensors"):  # envelope first: a message left alone never counts
            (self.root / cid / f"{slot}{suffix}").unlink(missing_ok=True)

    def _late(self, ids: Iterable[str], slot: str, r: int) -> list[str]:
        """Of ``ids``, those whose ``slot`` answers an earlier round (ignored: that round is closed)."""
        return [c for c in ids if (e := self._mail(c, slot)) is not None and e["round"] < r]

    # ------------------------------------------------------------------ a client's own data and state

    def _holds_data(self, cid: str) -> bool:
        return (self.root / cid / NODE_FILE).is_file()

    def _data(self, cid: str) -> ClientData:
        folder = self.root / cid
        try:
            return load_node(str(folder)).client(cid)
        except (NodeDataError, KeyError):
            raise PipelineError(
                f"--client: {folder} holds no data of {cid} (no {NODE_FILE}); run its steps at its site"
            ) from None

    def _site_clients(self) -> list[str]:
        """The clients whose data is in this folder (a site's own; the coordinator's, if it kept them)."""
        return sorted(p.name for p in self.root.iterdir() if (p / NODE_FILE).is_file())

    def _client(self) -> ClientSide:
        settings = settings_from_config(self.cfg, self.info, self.n_clients)
        return build_client(self.algorithm, settings, self.cfg.privacy)

    def _state(self, cid: str) -> Message:
        self._settle(cid)
        path = self.root / cid / "model.safetensors"
        return load_message(path) if path.is_file() else Message()

    def _settle(self, cid: str) -> None:
        """Make a trained client's new state current once its reply is written.

        Training drops the previous reply, writes the new state aside (``model.pending``), then the
        reply, then moves the state into place: a crash before the reply exists leaves the old state,
        so the rerun trains from the same state as the interrupted try and gives the same numbers.
        """
        pending = self.root / cid / "model.pending.safetensors"
        if pending.is_file() and (self.root / cid / "outbox.json").is_file():
            pending.replace(self.root / cid / "model.safetensors")

    def _train(self, client: ClientSide, cid: str) -> None:
        envelope = self._mail(cid, "inbox")
        assert envelope is not None  # the callers checked
        r, t0 = envelope["round"], time.perf_counter()
        data, state = self._data(cid), self._state(cid)  # settles the previous round's state first
        self._drop_mail(cid, "outbox")  # from here on a reply beside model.pending is this round's
        message = load_message(self.root / cid / "inbox.safetensors")
        reply, state = client.fit(message, state, data, Rng(self.cfg.seed, r, cid))
        save_message(self.root / cid / "model.pending.safetensors", state)
        seconds = time.perf_counter() - t0
        self._post(cid, "outbox", reply, r, seconds=seconds, peak_rss_mb=peak_rss_mb())
        self._settle(cid)

    def _evaluate(self, client: ClientSide, cid: str) -> None:
        envelope = self._mail(cid, "eval_inbox")
        assert envelope is not None  # the callers checked
        r, t0 = envelope["round"], time.perf_counter()
        message = load_message(self.root / cid / "eval_inbox.safetensors")
        reply = client.evaluate(message, self._state(cid), self._data(cid))
        seconds = time.perf_counter() - t0
        self._post(cid, "eval_outbox", reply, r, seconds=seconds, peak_rss_mb=peak_rss_mb())

    # ------------------------------------------------------------------ where the pipeline stands

    def pending(self) -> list[str]:
        """The clients whose reply the current phase still waits for (coordinator only)."""
        progress = self.progress
        r = progress["round"]
        if progress["due"] == "train-clients":
            return [c for c in progress["planned"] if not self._answered(c, "outbox", r)]
        if progress["due"] == "update-clients":
            return [c for c in progress["eval_planned"] if not self._answered(c, "eval_outbox", r)]
        return []

    def next_step(self) -> str:
        """The step due in the coordinator's root (``done`` after the last round)."""
        due = self.progress["due"]
        if due == "train-clients" and not self.pending():
            return "aggregate-vectors"
        return "train-clients" if due == "plan" else due

    def status(self) -> str:
        """One line per folder state: the coordinator's next step and whom it waits for, or a site's."""
        if not self.is_coordinator:
            return "; ".join(self._site_status(cid) for cid in self._site_clients()) or (
                f"{self.root} holds no client's data"
            )
        progress = self.progress
        if progress["due"] == "done":
            return (
                f"all rounds done; metrics: {self.root / 'metrics.jsonl'}, report: {self.root / 'report.md'}"
            )
        pending = self.pending()
        waiting = f" (waiting for: {_names(pending)})" if pending else ""
        return f"round {progress['round']}: next step {self.next_step()}{waiting}"

    def _site_status(self, cid: str) -> str:
        inbox = self._mail(cid, "inbox")
        if inbox is None:
            return f"{cid}: no round plan yet (the server writes {cid}/inbox.*)"
        r = inbox["round"]
        if not self._answered(cid, "outbox", r):
            return f"{cid}: round {r}: train-clients is due"
        if not self._answered(cid, "eval_inbox", r):
            return (
                f"{cid}: round {r}: trained; send back {cid}/outbox.*, then wait for the server's "
                f"evaluation request ({cid}/eval_inbox.*) or next plan ({cid}/inbox.*)"
            )
        if not self._answered(cid, "eval_outbox", r):
            return f"{cid}: round {r}: update-clients is due"
        return (
            f"{cid}: round {r}: evaluated; send back {cid}/eval_outbox.*, then wait for the server's "
            f"next plan ({cid}/inbox.*)"
        )

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
        if not self._holds_data(cid):
            raise PipelineError(
                f"--client: {self.root / cid} holds no data of {cid} (no {NODE_FILE}); "
                "run its steps at its site"
            )

    def _waiting(self, step: str, r: int, missing: list[str], slot: str, arrived: int) -> NotDue:
        """The "not due" of a server step: whose replies are missing, and how to close without them."""
        late = self._late(missing, slot, r)
        ignored = f"; ignored late replies to earlier rounds from {_names(late)}" if late else ""
        what, due = ("trained replies", "train-clients") if slot == "outbox" else ("evaluations", step)
        text = (
            f"{step}: not due in round {r}; the next step is {due}: "
            f"waiting for the {what} of {_names(missing)} ({arrived} of {arrived + len(missing)} in{ignored})"
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
        if self.is_coordinator:
            todo = self._coordinator_train_todo(client)
        else:
            todo = self._site_todo("train-clients", client, "inbox", "outbox")
        algorithm_client = self._client()
        for cid in todo:
            self._train(algorithm_client, cid)
        return todo

    def _coordinator_train_todo(self, client: str | None) -> list[str]:
        progress = self._coordinator("train-clients", during="train-clients")
        r, planned = progress["round"], progress["planned"]
        pending = [c for c in planned if not self._answered(c, "outbox", r)]
        if client is not None:
            self._check_client("train-clients", client, planned, r)
            if client not in pending:
                waiting = f"; waiting for: {_names(pending)}" if pending else ""
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
        todo = [c for c in pending if self._holds_data(c)]
        if pending and not todo:
            raise NotDue(
                f"train-clients: not due here in round {r}: the clients still pending ({_names(pending)}) "
                "train at their sites (train-clients --client k), whose outboxes come back into this root"
            )
        return todo

    def _site_todo(self, step: str, client: str | None, ask: str, answer: str) -> list[str]:
        """In a site's folder: its clients with mail in ``ask`` not yet answered in ``answer``."""
        if client is not None and not self._holds_data(client):
            raise PipelineError(f"--client: {self.root / client} holds no data of {client} (no {NODE_FILE})")
        todo, done, waiting = [], [], []
        for cid in [client] if client is not None else self._site_clients():
            inbox = self._mail(cid, "inbox")
            request = self._mail(cid, ask)
            r = None if inbox is None else inbox["round"]
            if request is None or r is None or request["round"] != r:
                waiting.append((cid, r))
            elif self._answered(cid, answer, r):
                done.append((cid, r))
            else:
                todo.append(cid)
        if todo:
            return todo
        if done and not waiting:
            what = ", ".join(f"{cid} answered round {r} in {cid}/{answer}.*" for cid, r in done)
            raise AlreadyDone(f"{step}: already done: {what}; the next request comes from the server")
        if not waiting:
            raise PipelineError(f"--root: {self.root} holds no client's data (no client_k/{NODE_FILE})")
        if ask == "eval_inbox" and all(
            r is not None and not eval_due(r, self.cfg.engine.eval_every, self.cfg.rounds) for _, r in waiting
        ):
            raise AlreadyDone(
                f"{step}: already done: round {waiting[0][1]} has no evaluation "
                f"(engine.eval_every = {self.cfg.engine.eval_every}); nothing to do"
            )
        names = _names(cid for cid, _ in waiting)
        raise NotDue(
            f"{step}: not due: no unanswered request in {ask}.* of {names}; the server writes it "
            + ("with init-root and each round's close" if ask == "inbox" else "with aggregate-vectors")
        )

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
        answered = [c for c in planned if self._answered(c, "outbox", r)]
        missing = [c for c in planned if c not in answered]
        if missing and (min_clients is None or len(answered) < min_clients):
            raise self._waiting("aggregate-vectors", r, missing, "outbox", len(answered))
        server = self._server()
        plan = {c: load_message(self.root / c / "inbox.safetensors") for c in planned}
        replies = {c: load_message(self.root / c / "outbox.safetensors") for c in answered}
        row = aggregate_round(server, r, plan, replies, self.cfg.robustness, self.cfg.seed, dropped=missing)
        evaluating = eval_due(r, self.cfg.engine.eval_every, self.cfg.rounds)
        eval_plan = server.configure_evaluate(r, self._evaluated(r)) if evaluating else {}
        for cid, message in eval_plan.items():
            self._drop_mail(cid, "eval_outbox")
            self._post(cid, "eval_inbox", message, r)
        state = self._save_server(server, r, "aggregate")
        seconds, peak = self._client_costs(answered, "outbox")
        self._commit(
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

    def _client_costs(self, ids: Iterable[str], slot: str) -> tuple[float, float]:
        """Seconds and peak memory the clients reported in their replies' envelopes (sum, max)."""
        envelopes = [e for c in ids if (e := self._mail(c, slot)) is not None]
        return (
            sum(float(e.get("seconds", 0.0)) for e in envelopes),
            max((float(e.get("peak_rss_mb", 0.0)) for e in envelopes), default=0.0),
        )

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
        if not self.is_coordinator:
            if min_clients is not None:
                raise PipelineError(
                    "--min-clients: closing a round is the server's step; run it in the coordinator's root"
                )
            algorithm_client = self._client()
            for cid in self._site_todo("update-clients", client, "eval_inbox", "eval_outbox"):
                self._evaluate(algorithm_client, cid)
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
        pending = [c for c in asked if not self._answered(c, "eval_outbox", r)]
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
                    f"{self.root / client / 'eval_outbox.safetensors'}; waiting for: {_names(pending)}"
                )
            todo = [client] if client in pending else []  # none pending: this call closes the round
        else:
            todo = [c for c in pending if self._holds_data(c)]
        if todo:
            algorithm_client = self._client()
            for cid in todo:
                self._evaluate(algorithm_client, cid)
        answered = [c for c in asked if self._answered(c, "eval_outbox", r)]
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
        replies = {c: load_message(self.root / c / "eval_outbox.safetensors") for c in answered}
        row: dict[str, Any] = dict(progress["row"])  # round, clients, train, dropped/rejected/skipped
        if progress["evaluating"]:
            row.update(evaluate_round(self._server(), r, self._evaluated(r), replies, dropped))
        row["bytes_up"] = progress["bytes_up"] + nbytes(replies)
        row["bytes_down"] = progress["bytes_down"]
        seconds, peak = self._client_costs(answered, "eval_outbox")
        timing = {
            "round": r,
            "seconds": progress["seconds"] + seconds + spent + time.perf_counter() - t0,
            "peak_rss_mb": max(progress["peak_rss_mb"], peak, peak_rss_mb()),
        }
        # Rewritten, not appended: a rerun after a crash before the next plan replaces this round's row.
        self._rewrite("metrics.jsonl", row)
        self._rewrite("timings.jsonl", timing)
        if r >= self.cfg.rounds:
            self._finish()
        else:
            self._plan(r + 1)
        # Only now, with the round closed: until then a rerun of update-clients needs these files.
        for c in progress["eval_planned"]:
            self._drop_mail(c, "eval_inbox")
            self._drop_mail(c, "eval_outbox")
        return row

    def _rewrite(self, name: str, row: dict[str, Any]) -> None:
        rows = [old for old in read_jsonl(self.root / name) if old["round"] < row["round"]] + [row]
        atomic_write_bytes(
            self.root / name, "".join(json.dumps(x, sort_keys=True) + "\n" for x in rows).encode()
        )

    def _finish(self) -> None:
        """``summary.json`` as a run folder has it and ``on_finish`` (the CLI's writes ``report.md``),
        then mark the pipeline done.

        In this order: a crash in between leaves the last round due, and the rerun writes both again.
        """
        atomic_write_json(self.root / "summary.json", self.summary())
        if self.on_finish is not None:
            self.on_finish(self.root, self.cfg)
        self._set_progress(due="done")

    def summary(self) -> dict[str, Any]:
        """The run's summary, with the keys :class:`fedmosaic.Federation` writes (what report.md reads).

        ``wall_s`` adds up compute, not waiting: the server's steps plus the seconds each client's
        reply says it took, so a round that waited a week for a site still costs its seconds.
        """
        rows = read_jsonl(self.root / "metrics.jsonl")
        timings = read_jsonl(self.root / "timings.jsonl")
        evaluated = [row for row in rows if "eval" in row]
        specs = self.specs
        wall = sum(t["seconds"] for t in timings)
        summary: dict[str, Any] = {
            "algorithm": self.algorithm.name,
            "dataset": self.cfg.task.dataset,
            "seed": self.cfg.seed,
            "rounds": len(rows),
            "clients": len(specs),
            "groups": {g: sum(1 for s in specs if s.group == g) for g in sorted({s.group for s in specs})},
            "data": json.loads((self.root / "server" / "server.json").read_text())["data"],
            "final": evaluated[-1]["eval"] if evaluated else {},
            "bytes_up": sum(row["bytes_up"] for row in rows),
            "bytes_down": sum(row["bytes_down"] for row in rows),
            "wall_s": wall,
            "seconds_per_round": wall / max(len(rows), 1),
            "peak_rss_mb": max((t["peak_rss_mb"] for t in timings), default=peak_rss_mb()),
        }
        if self.cfg.privacy.enabled:
            n, per_round = len(specs), self.cfg.clients.per_round or len(specs)
            pooled = self.algorithm.needs_pooled_data
            summary["privacy"] = privacy_summary(self.cfg.privacy, rows, n, per_round, pooled=pooled)
        return summary
