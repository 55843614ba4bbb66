"""Fault injection for tests and benchmarks: malformed replies by kind, and poisoned clients.

Both wrap a client half: pass them to :class:`fedmosaic.Federation` as client wrappers, e.g.
``client_wrappers=[lambda inner: CorruptingClient(inner, {"client_4"}, "nan")]``, so a real run
produces the replies and only the chosen clients' replies are altered on their way to the server
(after client-level DP, which is the innermost wrapper). Nothing here is used by a normal run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedmosaic.core.message import Message
from fedmosaic.core.seeding import Rng
from fedmosaic.core.task import ClientData

Corruption = Callable[[Message, str], Message]


def _with_array(reply: Message, name: str, value: np.ndarray) -> Message:
    return Message({**reply.arrays, name: value}, dict(reply.meta))


def _poke(value: np.ndarray, x: float) -> np.ndarray:
    out = value.copy()
    out.reshape(-1)[0] = x
    return out


def _scaled(reply: Message, factor: float) -> Message:
    arrays = {n: (a * factor).astype(a.dtype) if a.dtype.kind == "f" else a for n, a in reply.arrays.items()}
    return Message(arrays, dict(reply.meta))


# kind -> (reply, target array name) -> corrupted reply. The target is a floating-point array.
CORRUPTIONS: dict[str, Corruption] = {
    "nan": lambda r, n: _with_array(r, n, _poke(r.arrays[n], np.nan)),
    "inf": lambda r, n: _with_array(r, n, _poke(r.arrays[n], np.inf)),
    "wrong_shape": lambda r, n: _with_array(r, n, r.arrays[n].reshape(-1)[:-1]),
    "wrong_dtype": lambda r, n: _with_array(r, n, r.arrays[n].astype(np.float64)),
    "missing_array": lambda r, n: Message({k: v for k, v in r.arrays.items() if k != n}, dict(r.meta)),
    "extra_array": lambda r, n: _with_array(r, "intruder/payload", np.zeros(4, np.float32)),
    "norm_1e6": lambda r, n: _scaled(r, 1e6),
    "missing_meta": lambda r, n: Message(dict(r.arrays), {k: v for k, v in r.meta.items() if k != "n_train"}),
    "nan_meta": lambda r, n: Message(dict(r.arrays), {**r.meta, "n_train": float("nan")}),
}


def default_target(reply: Message, prefix: str = "") -> str:
    """The first (sorted) floating-point array of ``reply`` whose name starts with ``prefix``."""
    names = [n for n in sorted(reply.arrays) if n.startswith(prefix) and reply.arrays[n].dtype.kind == "f"]
    if not names:
        raise ValueError(f"reply has no floating-point array starting with {prefix!r}")
    return names[0]


class WrappedClient:
    """A client half that passes everything to ``inner`` and lets :meth:`alter` change chosen replies."""

    def __init__(self, inner: Any, clients: set[str]) -> None:
        self.inner = inner
        self.clients = set(clients)

    def alter(self, reply: Message, sent: Message, rng: Rng) -> Message:
        raise NotImplementedError

    def fit(self, message: Message, state: Message, data: ClientData, rng: Rng) -> tuple[Message, Message]:
        reply, new_state = self.inner.fit(message, state, data, rng)
        if data.spec.id in self.clients:
            reply = self.alter(reply, message, rng)
        return reply, new_state

    def evaluate(self, message: Message, state: Message, data: ClientData) -> Message:
        return self.inner.evaluate(message, state, data)


class CorruptingClient(WrappedClient):
    """Replies of ``clients`` corrupted by one :data:`CORRUPTIONS` kind (target: ``prefix``'s first array)."""

    def __init__(self, inner: Any, clients: set[str], kind: str, prefix: str = "") -> None:
        super().__init__(inner, clients)
        self.corrupt, self.prefix = CORRUPTIONS[kind], prefix

    def alter(self, reply: Message, sent: Message, rng: Rng) -> Message:
        return self.corrupt(reply, default_target(reply, self.prefix))


@dataclass(frozen=True)
class Attack:
    """A model-poisoning attack on a weight-sharing reply, relative to the weights that were sent.

    ``signflip``: send ``sent - scale * (trained - sent)``: the honest update reversed and amplified.
    ``noise``: send ``trained + N(0, (scale * RMS(trained - sent))^2)`` per coordinate.
    Arrays that were not sent, or are not floating point, pass unchanged.
    """

    kind: str = "signflip"
    scale: float = 10.0

    def __post_init__(self) -> None:
        if self.kind not in ("signflip", "noise"):
            raise ValueError(f"--attack: expected signflip or noise, got {self.kind!r}")

    def apply(self, reply: Message, sent: Message, rng: Rng) -> Message:
        """The poisoned reply (noise drawn from the client's round Rng, purpose ``attack``)."""
        gen = rng.numpy("attack")
        arrays = {}
        for name, value in reply.arrays.items():
            base = sent.arrays.get(name)
            if base is None or value.dtype.kind != "f":
                arrays[name] = value
                continue
            update = value.astype(np.float64) - base
            if self.kind == "signflip":
                poisoned = base - self.scale * update
            else:
                spread = self.scale * float(np.sqrt(np.mean(update**2))) if update.size else 0.0
                poisoned = value + gen.normal(0.0, spread, value.shape)
            arrays[name] = poisoned.astype(value.dtype)
        return Message(arrays, dict(reply.meta))


class PoisonedClient(WrappedClient):
    """Replies of ``clients`` poisoned by ``attack``."""

    def __init__(self, inner: Any, clients: set[str], attack: Attack) -> None:
        super().__init__(inner, clients)
        self.attack = attack

    def alter(self, reply: Message, sent: Message, rng: Rng) -> Message:
        return self.attack.apply(reply, sent, rng)
