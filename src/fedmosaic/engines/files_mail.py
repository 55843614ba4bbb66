"""The file pipeline's mail: a message in ``client_k/<slot>.safetensors`` and its envelope beside it.

Mail is how the server and a client, who may sit at different sites and share no process, hand
each other messages: the sender writes the message, then the envelope (``<slot>.json``: the run,
the client, the round, and what the client reports about its work). A message counts only with an
envelope naming this run and this client, and answers only the round its envelope names, so a
half-copied message, a neighbour's mail or a late reply to a closed round is never taken for this
round's. Slots: ``inbox`` / ``outbox`` (training), ``eval_inbox`` / ``eval_outbox`` (evaluation).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fedmosaic.core.checkpoint import atomic_write_json, load_message, save_message
from fedmosaic.core.message import Message


class Mailbox:
    """The mail slots of every client folder under ``root`` for the run ``run_id``."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.root = root
        self.run_id = run_id

    def post(self, cid: str, slot: str, message: Message, r: int, **facts: Any) -> None:
        """Write ``message`` into ``cid``'s ``slot`` for round ``r``, envelope last (with ``facts``)."""
        folder = self.root / cid
        save_message(folder / f"{slot}.safetensors", message)
        # The envelope is written last: a message without one was cut short (or half copied) and
        # does not count.
        atomic_write_json(folder / f"{slot}.json", {"run": self.run_id, "client": cid, "round": r, **facts})

    def envelope(self, cid: str, slot: str) -> dict[str, Any] | None:
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

    def read(self, cid: str, slot: str) -> Message:
        """The message in ``cid``'s ``slot`` (the callers checked its envelope)."""
        return load_message(self.root / cid / f"{slot}.safetensors")

    def answered(self, cid: str, slot: str, r: int) -> bool:
        """Whether ``cid``'s ``slot`` holds its reply to round ``r`` (not an older one)."""
        envelope = self.envelope(cid, slot)
        return envelope is not None and envelope["round"] == r

    def drop(self, cid: str, slot: str) -> None:
        """Remove ``cid``'s ``slot``: envelope first, so a message left alone never counts."""
        for suffix in (".json", ".safetensors"):
            (self.root / cid / f"{slot}{suffix}").unlink(missing_ok=True)

    def late(self, ids: Iterable[str], slot: str, r: int) -> list[str]:
        """Of ``ids``, those whose ``slot`` answers an earlier round (ignored: that round is closed)."""
        return [c for c in ids if (e := self.envelope(c, slot)) is not None and e["round"] < r]

    def costs(self, ids: Iterable[str], slot: str) -> tuple[float, float]:
        """Seconds and peak memory the clients reported in their replies' envelopes (sum, max)."""
        envelopes = [e for c in ids if (e := self.envelope(c, slot)) is not None]
        return (
            sum(float(e.get("seconds", 0.0)) for e in envelopes),
            max((float(e.get("peak_rss_mb", 0.0)) for e in envelopes), default=0.0),
        )
