"""What the battery's wrappers record of a run: every message between the halves, the reply specs
the engine asked for, the server's state after each round."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fedmosaic.core.algorithm import Settings
from fedmosaic.core.message import Message
from fedmosaic.core.validation import ReplySpec


def copy_message(message: Message) -> Message:
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


class RecordingClient:
    """A client-half wrapper that keeps a copy of every message in and out; it changes nothing."""

    def __init__(self, inner: Any, log: Recording) -> None:
        self.inner, self.log = inner, log

    def fit(self, message: Message, state: Message, data: Any, rng: Any) -> tuple[Message, Message]:
        reply, new_state = self.inner.fit(message, state, data, rng)
        self.log.exchanges.append(
            Exchange(
                "fit",
                rng.round,
                data.spec.id,
                copy_message(message),
                copy_message(reply),
                copy_message(new_state),
            )
        )
        return reply, new_state

    def evaluate(self, message: Message, state: Message, data: Any) -> Message:
        reply = self.inner.evaluate(message, state, data)
        self.log.exchanges.append(
            Exchange("evaluate", self.log.round, data.spec.id, copy_message(message), copy_message(reply))
        )
        return reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class RecordingServer:
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
