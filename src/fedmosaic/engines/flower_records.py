"""fedmosaic Messages <-> Flower records (one job: the conversion, nothing about rounds or data).

A fedmosaic :class:`~fedmosaic.core.message.Message` is named numpy arrays plus flat metadata; in
Flower it becomes an ``ArrayRecord`` (the arrays) and a ``ConfigRecord`` (the metadata), stored in
a ``RecordDict`` under ``<slot>/<client id>/arrays`` and ``<slot>/<client id>/meta``. One Flower
message carries the messages of every fedmosaic client a SuperNode hosts, so a node hosting several
clients gets one round trip per round. The same pair of records keeps a client's persistent state
in Flower's ``Context.state`` between rounds.

A message's arrays travel as **one** Flower ``Array``: their ``np.save`` bytes one after another
(dtype and shape kept, so a round trip is bit-exact and metrics can equal the local engine's), with
their names, in order, beside the metadata. Flower moves every ``Array`` (and each of its chunks) as
an object of its own, one HTTP request each between SuperNode and SuperLink; an array per model
tensor made a node's 2.4 MB message about 400 requests, which took 4 s to pull and 9 s to push on a
2-core machine (``benchmarks/flower_overhead.py``). Packed, it is one or two.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedmosaic.core.message import Message
from fedmosaic.core.modality import ClientSpec

SEP = "/"  # client ids are [A-Za-z0-9_.-]+ (see data.splitting.owner_client_id), so '/' cannot clash


def _key(slot: str, client: str, part: str) -> str:
    return f"{slot}{SEP}{client}{SEP}{part}"


PACKED = "packed"  # the ArrayRecord key of a message's packed arrays


def pack_arrays(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The arrays' ``np.save`` bytes, one after another, as one uint8 array (no pickles)."""
    buffer = io.BytesIO()
    for value in arrays.values():
        np.save(buffer, np.asarray(value), allow_pickle=False)
    return np.frombuffer(buffer.getbuffer(), dtype=np.uint8)


def unpack_arrays(packed: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """The arrays :func:`pack_arrays` packed, under ``names`` in their order."""
    buffer = io.BytesIO(packed.tobytes())
    return {name: np.load(buffer, allow_pickle=False) for name in names}


def put_message(records: RecordDict, slot: str, client: str, message: Message) -> None:
    """Store ``message`` in ``records`` for ``client``: its arrays packed into one Flower Array, their
    names (as JSON: a ConfigRecord list may not be empty) and its metadata in two ConfigRecords."""
    arrays = ArrayRecord()
    if message.arrays:
        arrays[PACKED] = Array.from_numpy_ndarray(pack_arrays(message.arrays))
    records[_key(slot, client, "arrays")] = arrays
    records[_key(slot, client, "names")] = ConfigRecord({"names": json.dumps(list(message.arrays))})
    records[_key(slot, client, "meta")] = ConfigRecord(dict(message.meta))


def get_message(records: RecordDict, slot: str, client: str) -> Message:
    """The message stored for ``client`` (an empty Message when there is none: a fresh client state)."""
    akey, nkey, mkey = (_key(slot, client, part) for part in ("arrays", "names", "meta"))
    meta = records[mkey] if mkey in records else ConfigRecord()
    if akey not in records or PACKED not in records[akey]:
        return Message({}, dict(meta.items()))
    names = json.loads(str(records[nkey]["names"]))
    return Message(unpack_arrays(records[akey][PACKED].numpy(), names), dict(meta.items()))


def clients_in(records: RecordDict, slot: str) -> list[str]:
    """The client ids that have a message in ``slot``, in insertion order."""
    prefix, suffix = f"{slot}{SEP}", f"{SEP}meta"
    return [k[len(prefix) : -len(suffix)] for k in records if k.startswith(prefix) and k.endswith(suffix)]


def put_messages(records: RecordDict, slot: str, messages: dict[str, Message]) -> None:
    """Store several clients' messages (insertion order kept)."""
    for client, message in messages.items():
        put_message(records, slot, client, message)


def get_messages(records: RecordDict, slot: str) -> dict[str, Message]:
    """Every client message in ``slot``, in insertion order."""
    return {client: get_message(records, slot, client) for client in clients_in(records, slot)}


def put_json(records: RecordDict, name: str, **values: Any) -> None:
    """Small structured values (settings, client lists) as JSON strings in one ConfigRecord.

    ConfigRecord holds scalars and flat lists only; JSON keeps nested structures readable in logs.
    """
    records[name] = ConfigRecord({k: json.dumps(v, sort_keys=True) for k, v in values.items()})


def get_json(records: RecordDict, name: str) -> dict[str, Any]:
    """What :func:`put_json` stored under ``name``."""
    return {k: json.loads(str(v)) for k, v in records[name].items()}


def spec_to_json(spec: ClientSpec, order: int) -> dict[str, Any]:
    """A client's spec as JSON data (``order`` is its position in the task, for a stable client order)."""
    return {
        "id": spec.id,
        "modalities": sorted(spec.modalities),
        "n_train": spec.n_train,
        "group": spec.group,
        "order": order,
    }


def spec_from_json(data: dict[str, Any]) -> ClientSpec:
    """The spec :func:`spec_to_json` described."""
    return ClientSpec(data["id"], frozenset(data["modalities"]), int(data["n_train"]), str(data["group"]))
