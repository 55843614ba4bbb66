"""gvf's messages as typed records, each with ``to_message`` and ``from_message``.

A model parameter travels under its own name (``adapters.image.0.weight``); every other array is
named ``<kind>/<modality>``:

=========== ============================================================ ==========================
kind        what                                                          in
=========== ============================================================ ==========================
``proxy``   the proxy set's inputs of a held modality (sent once)         :class:`FitInstruction`,
                                                                          :class:`ClientState`
``gv``      the global vectors, k × d per modality (row i = pair i)       instruction, update, state
``anchor``  the federation's mean vector of each proxy sample             :class:`FitInstruction`
``pseudo``  the federation's label of each proxy sample (-1 = unsure)     :class:`FitInstruction`
``vec``     a client's vectors of the proxy samples                       :class:`FitReply`
``priv``    a client's vectors of its private samples (only if allowed)   :class:`FitReply`
=========== ============================================================ ==========================

Parsing splits each name once (:func:`split_names`); a kind a record does not hold is an error, so a
message meant for another step cannot be read by mistake.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fedmosaic.core.message import Message

# Prefixes of the arrays that are not parameters (kept as public names: tests and scripts use them).
PROXY, BANK, ANCHOR, PSEUDO, VEC, PRIV = "proxy/", "gv/", "anchor/", "pseudo/", "vec/", "priv/"

Arrays = dict[str, np.ndarray]


def split_names(arrays: Arrays, kinds: tuple[str, ...]) -> tuple[Arrays, dict[str, Arrays]]:
    """``(parameters, {prefix: {modality: array}})`` of a message's arrays, for the prefixes ``kinds``.

    Array order is kept within each part. A ``<kind>/`` name of another kind is a ``ValueError``.
    """
    params: Arrays = {}
    by_kind: dict[str, Arrays] = {kind: {} for kind in kinds}
    for name, value in arrays.items():
        kind, slash, modality = name.partition("/")
        if not slash:
            params[name] = value
        elif kind + slash in by_kind:
            by_kind[kind + slash][modality] = value
        else:
            raise ValueError(f"gvf: unexpected array {name!r} (expected parameters or {', '.join(kinds)})")
    return params, by_kind


def named(prefix: str, by_modality: Arrays) -> Arrays:
    """``{prefix + modality: array}``: the wire names of one kind."""
    return {prefix + m: v for m, v in by_modality.items()}


@dataclass
class FitInstruction:
    """Server → client before training: the shared part θ for its modalities (the variant
    gvf-shared-encoders adds their encoders), the global vectors, the proxy anchor and proxy labels
    of its modalities' proxy samples, and in its first round the proxy inputs."""

    round: int
    shared: Arrays = field(default_factory=dict)
    bank: Arrays = field(default_factory=dict)
    pseudo: Arrays = field(default_factory=dict)
    anchor: Arrays = field(default_factory=dict)
    proxy: Arrays = field(default_factory=dict)

    _KINDS = (BANK, PSEUDO, ANCHOR, PROXY)

    def to_message(self) -> Message:
        arrays = {
            **self.shared,
            **named(BANK, self.bank),
            **named(PSEUDO, self.pseudo),
            **named(ANCHOR, self.anchor),
            **named(PROXY, self.proxy),
        }
        return Message(arrays, {"round": self.round})

    @classmethod
    def from_message(cls, message: Message) -> FitInstruction:
        params, kinds = split_names(message.arrays, cls._KINDS)
        return cls(
            int(message.meta.get("round", 0)),
            params,
            kinds[BANK],
            kinds[PSEUDO],
            kinds[ANCHOR],
            kinds[PROXY],
        )


@dataclass
class FitReply:
    """Client → server after training: the trained shared part, the vectors of the proxy samples
    (and of private samples when allowed), and the scalars of the contribution weight.

    ``delta = val_loss_global − val_loss_local``: how much the client's own update of θ lowered the
    cross-entropy on its validation set. The two losses are reported for diagnosis only.
    """

    n_train: float  # the client sends its count (an int); weights use it as a float
    train_loss: float
    delta: float
    shared: Arrays = field(default_factory=dict)
    vectors: Arrays = field(default_factory=dict)
    private: Arrays = field(default_factory=dict)
    val_loss_local: float = math.nan
    val_loss_global: float = math.nan

    _KINDS = (VEC, PRIV)
    META = ("n_train", "train_loss", "delta", "val_loss_local", "val_loss_global")

    def to_message(self) -> Message:
        arrays = {**self.shared, **named(VEC, self.vectors), **named(PRIV, self.private)}
        meta = {
            "n_train": self.n_train,
            "train_loss": self.train_loss,
            "delta": self.delta,
            "val_loss_local": self.val_loss_local,
            "val_loss_global": self.val_loss_global,
        }
        return Message(arrays, meta)

    @classmethod
    def from_message(cls, message: Message) -> FitReply:
        params, kinds = split_names(message.arrays, cls._KINDS)
        meta = message.meta
        return cls(
            n_train=float(meta["n_train"]),
            train_loss=float(meta["train_loss"]),
            delta=float(meta["delta"]),
            shared=params,
            vectors=kinds[VEC],
            private=kinds[PRIV],
            val_loss_local=float(meta.get("val_loss_local", math.nan)),
            val_loss_global=float(meta.get("val_loss_global", math.nan)),
        )


@dataclass
class Update:
    """Server → client before evaluation (the design's update step): the aggregated shared part for
    its modalities and the global vectors. Empty when the client keeps what it trained."""

    shared: Arrays = field(default_factory=dict)
    bank: Arrays = field(default_factory=dict)

    def to_message(self) -> Message:
        return Message({**self.shared, **named(BANK, self.bank)})

    @classmethod
    def from_message(cls, message: Message) -> Update:
        params, kinds = split_names(message.arrays, (BANK,))
        return cls(params, kinds[BANK])


@dataclass
class ClientState:
    """What a client keeps between rounds: its encoders and shared part, the proxy inputs it was
    sent, and the global vectors it trained with."""

    params: Arrays = field(default_factory=dict)
    proxy: Arrays = field(default_factory=dict)
    bank: Arrays = field(default_factory=dict)

    def to_message(self) -> Message:
        return Message({**self.params, **named(PROXY, self.proxy), **named(BANK, self.bank)})

    @classmethod
    def from_message(cls, message: Message) -> ClientState:
        params, kinds = split_names(message.arrays, (PROXY, BANK))
        return cls(params, kinds[PROXY], kinds[BANK])
