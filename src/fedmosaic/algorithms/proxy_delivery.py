"""Which clients hold the server's proxy inputs, for algorithms that ship them once (fedmekt, gvf).

Sending the proxy set once saves traffic, but a client can lose it: a restarted Flower SuperNode comes
back with empty state. Such a client's next reply cannot carry what the proxy set is needed for, so it
is rejected or missing. The rule: a client that was planned for a round and sent no valid reply (or
whose round was skipped without aggregation) no longer counts as a holder, and it gets the proxy
inputs again the next time it is sampled. A plain dropout therefore costs one extra delivery, and a
restarted node recovers after one lost round instead of being dropped for good.
"""

from __future__ import annotations

from collections.abc import Iterable

from fedmosaic.core.message import Message


class ProxyDelivery:
    """The set of clients holding the proxy inputs, and the round's planned clients awaiting a reply."""

    def __init__(self) -> None:
        self.holders: set[str] = set()
        self.awaiting: set[str] = set()

    def needs(self, client_id: str) -> bool:
        """Whether ``client_id`` must be sent the proxy inputs (and now counts as holding them)."""
        if client_id in self.holders:
            return False
        self.holders.add(client_id)
        return True

    def planned(self, client_ids: Iterable[str]) -> None:
        """Record the round's planned clients (call in ``configure``).

        Clients still awaited belong to a round that was never aggregated (skipped below
        ``robustness.min_clients``): whether they replied is unknown, so they count as not holding.
        """
        self.holders -= self.awaiting
        self.awaiting = set(client_ids)

    def replied(self, client_ids: Iterable[str]) -> None:
        """Planned clients without a valid reply may have lost the proxy: send it again (``aggregate``)."""
        self.holders -= self.awaiting - set(client_ids)
        self.awaiting = set()

    def to_meta(self, holders_key: str) -> dict[str, str]:
        """Both sets as state metadata (the file pipeline reloads the server between steps)."""
        return {holders_key: _join(self.holders), f"{holders_key}_awaiting": _join(self.awaiting)}

    def load_meta(self, state: Message, holders_key: str) -> None:
        """Restore what :meth:`to_meta` wrote (a state without the keys: nobody holds the proxy yet)."""
        self.holders = _split(state.meta.get(holders_key, ""))
        self.awaiting = _split(state.meta.get(f"{holders_key}_awaiting", ""))


def _join(ids: set[str]) -> str:
    return ",".join(sorted(ids))


def _split(text: object) -> set[str]:
    return set(filter(None, str(text).split(",")))
