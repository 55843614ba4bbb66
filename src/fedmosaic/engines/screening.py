"""Screening: every engine's step between a round's replies and ``aggregate``.

Each arrived reply is checked against what the server half expects of that client this round
(``reply_spec``, :mod:`fedmosaic.core.validation`); a bad one is dropped with a logged reason and
the round goes on with the rest. Below ``robustness.min_clients`` usable replies the round is
skipped (the global state stays as it was) or the run stops, per ``robustness.below_min``. The
engines (local, Flower, files) call :func:`screened_aggregate` so all three decide alike.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedmosaic.core.errors import RoundFailed
from fedmosaic.core.message import Message
from fedmosaic.core.seeding import Rng
from fedmosaic.core.validation import ReplySpec, check_norms, check_reply

log = logging.getLogger("fedmosaic.robustness")


@dataclass
class Screening:
    """A round's replies split into the accepted ones and the rejected ones (client id -> reason)."""

    accepted: dict[str, Message]
    rejected: dict[str, str] = field(default_factory=dict)


def reply_spec(server: Any, round: int, client_id: str, sent: Message) -> ReplySpec:
    """The server half's spec for this reply (an open spec for a plug-in without ``reply_spec``)."""
    method = getattr(server, "reply_spec", None)
    return ReplySpec.unknown() if method is None else method(round, client_id, sent)


def screen(
    server: Any, round: int, plan: Mapping[str, Message], replies: Mapping[str, Message], robustness: Any
) -> Screening:
    """Check each reply (in client order) against its spec, then the survivors against the norm bound."""
    if robustness is None or not robustness.validate_replies:
        return Screening(dict(replies))
    specs = {cid: reply_spec(server, round, cid, plan[cid]) for cid in replies}
    rejected: dict[str, str] = {}
    for cid, reply in replies.items():
        reason = check_reply(reply, specs[cid])
        if reason:
            rejected[cid] = reason
    wellformed = {cid: r for cid, r in replies.items() if cid not in rejected}
    rejected.update(check_norms(wellformed, specs, robustness.norm_factor, robustness.norm_floor))
    for cid in sorted(rejected):
        log.warning("round %d: rejected the reply of %s: %s", round, cid, rejected[cid])
    accepted = {cid: r for cid, r in replies.items() if cid not in rejected}  # plan order kept
    return Screening(accepted, dict(sorted(rejected.items())))


def screened_aggregate(
    server: Any,
    round: int,
    plan: Mapping[str, Message],
    replies: Mapping[str, Message],
    robustness: Any,
    rng: Rng,
    dropped: Iterable[str] = (),
) -> tuple[dict[str, float], dict[str, Any]]:
    """Screen, apply the ``min_clients`` policy and aggregate the accepted replies.

    Returns the training statistics and what the round's metrics row records beside them:
    ``dropped`` (clients whose reply never arrived), ``rejected`` (client id -> reason) and
    ``skipped`` (why the round was not aggregated). Keys appear only when they have content.
    """
    screening = screen(server, round, plan, replies, robustness)
    extras: dict[str, Any] = {}
    if dropped := sorted(dropped):
        extras["dropped"] = dropped
    if screening.rejected:
        extras["rejected"] = screening.rejected
    minimum = 1 if robustness is None else robustness.min_clients
    usable = len(screening.accepted)
    if plan and usable < minimum:  # an empty plan (the centralized baseline) asks no client
        reason = f"{usable} usable of {len(plan)} planned replies, min_clients is {minimum}"
        if robustness is not None and robustness.below_min == "fail":
            raise RoundFailed(f"robustness.min_clients: round {round}: {reason}")
        log.warning("round %d skipped: %s", round, reason)
        extras["skipped"] = reason
        return {}, extras
    return server.aggregate(round, screening.accepted, rng), extras


def reply_lost(seed: int, round: int, client_id: str, probability: float) -> bool:
    """Whether ``engine.dropout`` loses this client's reply this round.

    One uniform draw from ``(seed, round, client, "engine-dropout")``: independent of everything
    the client draws, and the same on a resumed run.
    """
    return probability > 0 and bool(
        Rng(seed, round, client_id).numpy("engine-dropout").random() < probability
    )
