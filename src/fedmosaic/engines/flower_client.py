"""The Flower ``ClientApp``: light to start, it forwards each message to the node's worker.

Flower starts a fresh ``flwr-clientapp`` process for every message a SuperNode receives. This module
is what that process imports, so it imports only Flower and the standard library: when a node
worker (``fedmosaic node-worker``, :mod:`fedmosaic.engines.node_worker`) runs beside the SuperNode
with the same node config, the message and the planned clients' states go to it over a private
Unix socket and its reply comes back; torch, fedmosaic's algorithms and the node's data stay loaded
there between messages. Without a worker the process does the work itself
(:func:`fedmosaic.engines.flower_node.answer`, imported only then), exactly as before.

Client states live in Flower's ``Context.state``, or with node config ``state-dir`` on the node's disk
(:mod:`fedmosaic.engines.node_states`), either way in this process: the worker gets them with the
message and returns the new ones, so a worker can be started, stopped or restarted at any time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

# Flower message types: the ClientApp answers "query" (which clients do you host?), "train", "evaluate".
QUERY, TRAIN, EVALUATE = "query", "train", "evaluate"
RUN = "fedmosaic"  # ConfigRecord holding the run config and the round
STATE = "state"  # Context.state slot of the clients' persistent states
log = logging.getLogger("fedmosaic.flower")


def _states_of(content: RecordDict, kind: str, state: RecordDict) -> RecordDict:
    """The entries of ``state`` that belong to the clients a ``kind`` message plans (none for a query)."""
    from fedmosaic.engines.flower_records import clients_in

    planned = clients_in(content, kind)
    prefixes = tuple(f"{STATE}/{cid}/" for cid in planned)
    return RecordDict({key: record for key, record in state.items() if prefixes and key.startswith(prefixes)})


def handle(kind: str, content: RecordDict, state: RecordDict, node_config: Mapping[str, Any]) -> RecordDict:
    """The reply content to a ``kind`` message: from the node worker if one runs, else computed here.

    A ``train`` message updates the client states: in ``state`` (Flower's ``Context.state``), or with
    node config ``state-dir`` on the node's disk, written before the reply leaves
    (:mod:`fedmosaic.engines.node_states`; numpy and safetensors, no torch).
    """
    from fedmosaic.engines.node_states import open_states

    disk = open_states(kind, content, node_config)
    if disk is not None:
        state = disk.load()
    reply = _answer(kind, content, state, node_config)
    if disk is not None:
        disk.save(state)
    return reply


def _answer(kind: str, content: RecordDict, state: RecordDict, node_config: Mapping[str, Any]) -> RecordDict:
    """:func:`handle` once the clients' states are in ``state``."""
    from fedmosaic.engines.node_worker import forward

    states = _states_of(content, kind, state)
    forwarded = forward(kind, content, states, node_config)
    if forwarded is not None:
        reply, new_states = forwarded
        for key, record in new_states.items():
            state[key] = record
        return reply
    from fedmosaic.engines.flower_node import answer  # no worker: pay torch's import here

    return answer(kind, content, state, node_config)


def _handler(kind: str):
    def on_message(message: Message, context: Context) -> Message:
        reply = handle(kind, message.content, context.state, context.node_config)
        return Message(reply, reply_to=message)

    on_message.__name__ = f"handle_{kind}"
    on_message.__doc__ = f"Answer a {kind!r} message (the node worker's reply, or computed in this process)."
    return on_message


handle_query, handle_train, handle_evaluate = _handler(QUERY), _handler(TRAIN), _handler(EVALUATE)
client_app = ClientApp()
client_app.query()(handle_query)
client_app.train()(handle_train)
client_app.evaluate()(handle_evaluate)
