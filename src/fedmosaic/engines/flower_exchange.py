"""The ServerApp's bounded waits on the SuperLink: for enough SuperNodes, and for their replies.

:mod:`fedmosaic.engines.flower` builds its rounds on these (and re-exports both).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

from flwr.app import Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from fedmosaic.core.errors import FlowerRunError

log = logging.getLogger("fedmosaic.flower")


def wait_for_nodes(
    grid: Grid, minimum: int, timeout_s: float, poll_s: float = 0.2, exclude: Collection[int] = ()
) -> list[int]:
    """Connected node ids once ``minimum`` are there; :class:`FlowerRunError` after ``timeout_s``.

    ``exclude``: nodes not to count (nor return), e.g. ones found gone though the SuperLink lists them.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = sorted(n for n in grid.get_node_ids() if n not in exclude)
        if len(nodes) >= minimum:
            return nodes
        if time.monotonic() >= deadline:
            raise FlowerRunError(
                f"min-nodes: {len(nodes)} SuperNode(s) connected after {timeout_s:.0f} s, {minimum} needed"
            )
        time.sleep(poll_s)


class Exchange:
    """One request/reply round trip with a set of nodes, bounded in time.

    Uses ``Grid.push_messages``/``pull_messages`` rather than ``send_and_receive``: the latter sleeps
    3 s between polls, which would dominate a round of a small task.

    With ``tolerate`` a node that fails (its ClientApp raised, or the SuperLink reports it offline)
    or does not answer within ``timeout_s`` is left out of the returned replies and recorded in
    :attr:`failed` (node id -> reason) instead of failing the run. With ``skip_gone`` only a node the
    SuperLink reports gone (Flower's ``NODE_UNAVAILABLE``: it missed its heartbeats) is left out, in
    :attr:`gone`; any other failure still raises.
    """

    def __init__(self, grid: Grid, timeout_s: float, poll_s: float, tolerate: bool = False) -> None:
        self.grid, self.timeout_s, self.poll_s, self.tolerate = grid, timeout_s, poll_s, tolerate
        self.failed: dict[int, str] = {}  # the last call's lost nodes (only filled when tolerating)
        self.gone: set[int] = set()  # the last call's nodes the SuperLink reported gone (skip_gone)

    def __call__(
        self,
        kind: str,
        contents: dict[int, RecordDict],
        group: str,
        tolerate: bool | None = None,
        skip_gone: bool = False,
    ) -> dict[int, RecordDict]:
        tolerate = self.tolerate if tolerate is None else tolerate
        self.failed, self.gone = {}, set()
        messages = [
            Message(content=content, dst_node_id=node, message_type=kind, group_id=group)
            for node, content in contents.items()
        ]
        ids = list(self.grid.push_messages(messages))
        node_of = dict(zip(ids, contents, strict=True))
        pending, replies = set(ids), {}
        deadline = time.monotonic() + self.timeout_s
        while pending:
            for reply in self.grid.pull_messages(list(pending)):
                source = reply.metadata.reply_to_message_id
                pending.discard(source)
                if reply.has_error():
                    reason = f"node {node_of[source]} failed on {kind} ({group}): {reply.error.reason}"
                    if skip_gone and reply.error.code == ErrorCode.NODE_UNAVAILABLE:
                        log.warning("%s; left out", reason)
                        self.gone.add(node_of[source])
                        continue
                    if not tolerate:
                        raise FlowerRunError(reason)
                    self._lose(node_of[source], reason)
                    continue
                replies[node_of[source]] = reply.content
            if pending and time.monotonic() >= deadline:
                missing = sorted(node_of[m] for m in pending)
                reason = f"did not answer {kind} ({group}) within reply-timeout-s={self.timeout_s:g} s"
                if not tolerate:
                    raise FlowerRunError(f"reply-timeout-s: node(s) {missing} {reason}")
                for node in missing:
                    self._lose(node, f"node {node} {reason}")
                break
            if pending:
                time.sleep(self.poll_s)
        return replies

    def _lose(self, node: int, reason: str) -> None:
        log.warning("%s; the round goes on without it", reason)
        self.failed[node] = reason
