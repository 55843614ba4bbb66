"""A client's own folder in the file pipeline: its data, its persistent state, its two steps.

Everything here reads and writes ``client_k/`` only (and the mail in it), which is what lets a
site keep nothing but its own folder beside the server's published files. Training writes the new
state aside first and makes it current only once the reply exists, so a step killed half way
reruns from the same state and gives the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from fedmosaic.config import RunConfig
from fedmosaic.core.algorithm import ClientSide
from fedmosaic.core.checkpoint import load_message, save_message
from fedmosaic.core.errors import AlreadyDone, NotDue, PipelineError
from fedmosaic.core.message import Message
from fedmosaic.core.seeding import Rng
from fedmosaic.core.task import ClientData
from fedmosaic.engines.files_mail import Mailbox
from fedmosaic.engines.node_data import NODE_FILE, NodeDataError, load_node
from fedmosaic.engines.protocol import eval_due
from fedmosaic.engines.run_folder import peak_rss_mb


def client_list(ids: Iterable[str], limit: int = 10) -> str:
    """``a, b, c`` (the first ``limit``, then how many more): a thousand clients fit on one line."""
    ids = list(ids)
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


class ClientFolders:
    """The client folders under ``root``: which hold a client's data, and each client's steps."""

    def __init__(self, root: Path, mail: Mailbox, cfg: RunConfig) -> None:
        self.root = root
        self.mail = mail
        self.cfg = cfg

    def holds_data(self, cid: str) -> bool:
        """Whether ``client_k/`` holds ``cid``'s own data (at its site, or kept by the coordinator)."""
        return (self.root / cid / NODE_FILE).is_file()

    def here(self) -> list[str]:
        """The clients whose data is in this folder (a site's own; the coordinator's, if it kept them)."""
        return sorted(p.name for p in self.root.iterdir() if (p / NODE_FILE).is_file())

    def data(self, cid: str) -> ClientData:
        """``cid``'s training, validation and test views, from its folder."""
        folder = self.root / cid
        try:
            return load_node(str(folder)).client(cid)
        except (NodeDataError, KeyError):
            raise PipelineError(
                f"--client: {folder} holds no data of {cid} (no {NODE_FILE}); run its steps at its site"
            ) from None

    def state(self, cid: str) -> Message:
        """``cid``'s persistent state (empty before its first round)."""
        self.settle(cid)
        path = self.root / cid / "model.safetensors"
        return load_message(path) if path.is_file() else Message()

    def settle(self, cid: str) -> None:
        """Make a trained client's new state current once its reply is written.

        Training drops the previous reply, writes the new state aside (``model.pending``), then the
        reply, then moves the state into place: a crash before the reply exists leaves the old state,
        so the rerun trains from the same state as the interrupted try and gives the same numbers.
        """
        pending = self.root / cid / "model.pending.safetensors"
        if pending.is_file() and (self.root / cid / "outbox.json").is_file():
            pending.replace(self.root / cid / "model.safetensors")

    def train(self, client: ClientSide, cid: str) -> None:
        """``cid`` trains on its inbox's message and writes its reply (``outbox``) and new state."""
        envelope = self.mail.envelope(cid, "inbox")
        assert envelope is not None  # the callers checked
        r, t0 = envelope["round"], time.perf_counter()
        data, state = self.data(cid), self.state(cid)  # settles the previous round's state first
        self.mail.drop(cid, "outbox")  # from here on a reply beside model.pending is this round's
        message = self.mail.read(cid, "inbox")
        reply, state = client.fit(message, state, data, Rng(self.cfg.seed, r, cid))
        save_message(self.root / cid / "model.pending.safetensors", state)
        seconds = time.perf_counter() - t0
        self.mail.post(cid, "outbox", reply, r, seconds=seconds, peak_rss_mb=peak_rss_mb())
        self.settle(cid)

    def evaluate(self, client: ClientSide, cid: str) -> None:
        """``cid`` evaluates on its ``eval_inbox`` message and writes its ``eval_outbox``."""
        envelope = self.mail.envelope(cid, "eval_inbox")
        assert envelope is not None  # the callers checked
        r, t0 = envelope["round"], time.perf_counter()
        message = self.mail.read(cid, "eval_inbox")
        reply = client.evaluate(message, self.state(cid), self.data(cid))
        seconds = time.perf_counter() - t0
        self.mail.post(cid, "eval_outbox", reply, r, seconds=seconds, peak_rss_mb=peak_rss_mb())

    def due(self, step: str, client: str | None, ask: str, answer: str) -> list[str]:
        """In a site's folder: its clients (or only ``client``) with mail in ``ask`` not yet answered in
        ``answer``; :class:`AlreadyDone` or :class:`NotDue`, saying why, when there are none."""
        if client is not None and not self.holds_data(client):
            raise PipelineError(f"--client: {self.root / client} holds no data of {client} (no {NODE_FILE})")
        todo, done, waiting = [], [], []
        for cid in [client] if client is not None else self.here():
            inbox = self.mail.envelope(cid, "inbox")
            request = self.mail.envelope(cid, ask)
            r = None if inbox is None else inbox["round"]
            if request is None or r is None or request["round"] != r:
                waiting.append((cid, r))
            elif self.mail.answered(cid, answer, r):
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
        names = client_list(cid for cid, _ in waiting)
        raise NotDue(
            f"{step}: not due: no unanswered request in {ask}.* of {names}; the server writes it "
            + ("with init-root and each round's close" if ask == "inbox" else "with aggregate-vectors")
        )

    def status(self, cid: str) -> str:
        """One line: where ``cid``'s steps stand at its site and what it waits for."""
        inbox = self.mail.envelope(cid, "inbox")
        if inbox is None:
            return f"{cid}: no round plan yet (the server writes {cid}/inbox.*)"
        r = inbox["round"]
        if not self.mail.answered(cid, "outbox", r):
            return f"{cid}: round {r}: train-clients is due"
        if not self.mail.answered(cid, "eval_inbox", r):
            return (
                f"{cid}: round {r}: trained; send back {cid}/outbox.*, then wait for the server's "
                f"evaluation request ({cid}/eval_inbox.*) or next plan ({cid}/inbox.*)"
            )
        if not self.mail.answered(cid, "eval_outbox", r):
            return f"{cid}: round {r}: update-clients is due"
        return (
            f"{cid}: round {r}: evaluated; send back {cid}/eval_outbox.*, then wait for the server's "
            f"next plan ({cid}/inbox.*)"
        )
