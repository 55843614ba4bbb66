"""Reply validation: what a server half expects back from a client, and the checks against it.

Each server half says, per client and round, what a well-formed reply holds (:class:`ReplySpec`,
from its ``reply_spec`` method): the arrays by name with shape and dtype (required, or optional such
as vectors of private samples), which must equal what was sent (FedMEKT's proxy indices), and the
metadata keys. The engine checks every reply before ``aggregate`` (``engines/screening.py``); a
reply that fails is left out of the round, so it never touches the global state.

Two kinds of check, each giving a one-line reason or ``None``:

* :func:`check_reply`, one reply against its spec: missing or unexpected names, shape, dtype,
  finite values, equality, metadata keys present and the listed ones finite.
* :func:`check_norms`, over a round's structurally valid replies: a floating-point array passes
  when its RMS (the norm divided by ``sqrt(size)``, so arrays of any size compare) is at most
  ``factor x max(RMS of the array the server sent under that name, median RMS of that array in the
  round's *other* replies, floor)``. The sent array is the server's own, and the median leaves the
  reply under test out, so one client cannot raise its own bar; together they cover weights (sent
  and returned), embeddings (FedMEKT returns the shape of the global ones it got) and vectors that
  only clients produce (gvf's proxy vectors: the peers' median). ``floor`` only matters when both
  references are about zero (a zero-initialised bias, a single holder). Integer arrays (batch-norm
  counters, indices) are not norm-bounded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from fedmosaic.core.message import Message


@dataclass(frozen=True)
class ArraySpec:
    """One expected array: its shape (``None`` = any length on that axis) and dtype.

    ``reference``: what the server sent under this name (the norm bound's own scale), if anything.
    ``equals``: the reply must carry exactly this array (indices the client has to echo).
    """

    shape: tuple[int | None, ...]
    dtype: np.dtype
    required: bool = True
    reference: np.ndarray | None = None
    equals: np.ndarray | None = None

    @classmethod
    def like(cls, sent: np.ndarray, *, required: bool = True, echo: bool = False) -> ArraySpec:
        """The spec of an array returned with the shape and dtype it was sent with.

        ``echo``: it must come back unchanged (no norm reference needed then).
        """
        return cls(
            tuple(sent.shape),
            sent.dtype,
            required,
            reference=None if echo else sent,
            equals=sent if echo else None,
        )


@dataclass(frozen=True)
class ReplySpec:
    """What a well-formed reply holds. ``open``: names not listed are allowed (a plug-in without a spec)."""

    arrays: Mapping[str, ArraySpec] = field(default_factory=dict)
    meta: tuple[str, ...] = ()
    finite_meta: tuple[str, ...] = ()
    open: bool = False

    @classmethod
    def echo(
        cls,
        sent: Message,
        names: Iterable[str] | None = None,
        meta: tuple[str, ...] = ("n_train", "train_loss"),
        finite_meta: tuple[str, ...] = ("n_train",),
    ) -> ReplySpec:
        """The spec of a weight-sharing reply: the sent arrays (or ``names`` of them) back, same shapes."""
        keep = sent.arrays if names is None else {n: sent.arrays[n] for n in names}
        return cls({n: ArraySpec.like(a) for n, a in keep.items()}, meta, finite_meta)

    @classmethod
    def unknown(cls) -> ReplySpec:
        """For a server half without ``reply_spec``: any names, only finiteness and norms are checked."""
        return cls(open=True)


def _describe(name: str, reason: str) -> str:
    return f"array {name!r}: {reason}"


def _check_array(name: str, value: np.ndarray, spec: ArraySpec | None) -> str | None:
    if spec is not None:
        if value.dtype != spec.dtype:
            return _describe(name, f"dtype {value.dtype}, expected {spec.dtype}")
        if len(value.shape) != len(spec.shape) or any(
            want is not None and got != want for got, want in zip(value.shape, spec.shape, strict=True)
        ):
            shown = tuple("*" if s is None else s for s in spec.shape)
            return _describe(name, f"shape {tuple(value.shape)}, expected {shown}")
    if value.dtype.kind in "fc":
        bad = ~np.isfinite(value)
        if bad.any():
            kind = "NaN" if np.isnan(value).any() else "Inf"
            return _describe(name, f"{int(bad.sum())} non-finite value(s) ({kind})")
    elif value.dtype.kind not in "biu":
        return _describe(name, f"dtype {value.dtype} is not numeric")
    if spec is not None and spec.equals is not None and not np.array_equal(value, spec.equals):
        return _describe(name, "differs from the array the server sent (it must come back unchanged)")
    return None


def check_reply(reply: Message, spec: ReplySpec) -> str | None:
    """The first problem of ``reply`` against ``spec`` as one line, or ``None`` if it is well-formed."""
    missing = sorted(n for n, s in spec.arrays.items() if s.required and n not in reply.arrays)
    if missing:
        return f"missing array(s) {', '.join(map(repr, missing))}"
    if not spec.open:
        extra = sorted(n for n in reply.arrays if n not in spec.arrays)
        if extra:
            return f"unexpected array(s) {', '.join(map(repr, extra))}"
    for name in sorted(reply.arrays):
        reason = _check_array(name, reply.arrays[name], spec.arrays.get(name))
        if reason:
            return reason
    absent = sorted(k for k in spec.meta if k not in reply.meta)
    if absent:
        return f"missing meta key(s) {', '.join(map(repr, absent))}"
    for key in spec.finite_meta:
        value = reply.meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"meta {key!r}: expected a finite number, got {value!r}"
    return None


def rms(value: np.ndarray) -> float:
    """Root mean square of an array, in float64 (0 for an empty array)."""
    if value.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(value, dtype=np.float64))))


def check_norms(
    replies: Mapping[str, Message],
    specs: Mapping[str, ReplySpec],
    factor: float,
    floor: float,
) -> dict[str, str]:
    """The replies whose floating-point arrays break the norm bound (see the module docstring)."""
    scales: dict[str, dict[str, float]] = {}  # array name -> client -> RMS
    for cid, reply in replies.items():
        for name, value in reply.arrays.items():
            if value.dtype.kind == "f":
                scales.setdefault(name, {})[cid] = rms(value)
    rejected: dict[str, str] = {}
    for cid in sorted(replies):
        for name in sorted(replies[cid].arrays):
            if name not in scales or cid not in scales[name]:
                continue
            own = scales[name][cid]
            references = [floor]
            spec = specs[cid].arrays.get(name)
            if spec is not None and spec.reference is not None:
                references.append(rms(spec.reference))
            peers = [s for other, s in scales[name].items() if other != cid]
            if peers:
                references.append(float(np.median(peers)))
            bound = factor * max(references)
            if own > bound:
                rejected[cid] = _describe(
                    name, f"RMS {own:.3g} exceeds the norm bound {bound:.3g} ({factor:g} x reference)"
                )
                break
    return rejected
