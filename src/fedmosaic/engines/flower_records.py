"""fedmosaic Messages <-> Flower records (one job: the conversion, nothing about rounds or data).

A fedmosaic :class:`~fedmosaic.core.message.Message` is named numpy arrays plus flat metadata. Two
layouts, for two places:

- **On the wire** (:func:`put_messages` / :func:`get_messages`): one Flower message carries the
  messages of every fedmosaic client a SuperNode hosts, as exactly two records whatever the number
  of clients: an ``ArrayRecord`` ``<slot>/arrays`` holding **one** Flower ``Array`` (every client's
  arrays' ``np.save`` bytes, one after another: dtype and shape kept, so a round trip is bit-exact
  and metrics can equal the local engine's) and a ``ConfigRecord`` ``<slot>/index`` (per client, in
  order: its id, its array names and its metadata, as JSON). Flower moves every record, ``Array``
  and 5 MB chunk as an object of its own, one request each between SuperNode and SuperLink. An
  array per model tensor made a node's 2.4 MB message about 400 requests (4 s to pull and 9 s to
  push on a 2-core machine, ``benchmarks/flower_overhead.py``); three records and an array per
  client still made a 4-client message 18 objects; packed per slot it is 5 (one more per further
  5 MB chunk) and the message itself.
- **A client's state on its node** (:func:`put_state` / :func:`get_state`): three records per client
  under ``<slot>/<client>/`` in Flower's ``Context.state``, which never crosses the network, so that
  the states of the clients a message plans can be picked out by key.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
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


def put_state(records: RecordDict, slot: str, client: str, message: Message) -> None:
    """Store ``client``'s state ``message`` in ``records`` (node-local layout): its arrays packed into
    one Flower Array, their names (as JSON: a ConfigRecord list may not be empty) and its metadata."""
    arrays = ArrayRecord()
    if message.arrays:
        arrays[PACKED] = Array.from_numpy_ndarray(pack_arrays(message.arrays))
    records[_key(slot, client, "arrays")] = arrays
    records[_key(slot, client, "names")] = ConfigRecord({"names": json.dumps(list(message.arrays))})
    records[_key(slot, client, "meta")] = ConfigRecord(dict(message.meta))


def get_state(records: RecordDict, slot: str, client: str) -> Message:
    """The state stored for ``client`` (an empty Message when there is none: a fresh client state)."""
    akey, nkey, mkey = (_key(slot, client, part) for part in ("arrays", "names", "meta"))
    meta = records[mkey] if mkey in records else ConfigRecord()
    if akey not in records or PACKED not in records[akey]:
        return Message({}, dict(meta.items()))
    names = json.loads(str(records[nkey]["names"]))
    return Message(unpack_arrays(records[akey][PACKED].numpy(), names), dict(meta.items()))


INDEX = "index"  # the ConfigRecord entry of a wire slot's per-client names and metadata


def put_messages(records: RecordDict, slot: str, messages: Mapping[str, Message]) -> None:
    """Store several clients' messages as one wire slot: one packed Array and one index record.

    The metadata travels as JSON, which keeps ``str``, ``int``, ``float`` and ``bool`` apart (and
    non-finite floats), exactly the types a Message's metadata may have.
    """
    if f"{slot}{SEP}{INDEX}" in records:
        raise ValueError(f"slot {slot!r} is already in the records: put all its messages at once")
    index = [[client, list(m.arrays), dict(m.meta)] for client, m in messages.items()]
    arrays = ArrayRecord()
    everything = {f"{n}/{name}": a for n, m in enumerate(messages.values()) for name, a in m.arrays.items()}
    if everything:
        arrays[PACKED] = Array.from_numpy_ndarray(pack_arrays(everything))
    records[f"{slot}{SEP}arrays"] = arrays
    records[f"{slot}{SEP}{INDEX}"] = ConfigRecord({INDEX: json.dumps(index)})


def clients_in(records: RecordDict, slot: str) -> list[str]:
    """The client ids that have a message in wire slot ``slot``, in insertion order (none if absent)."""
    key = f"{slot}{SEP}{INDEX}"
    return [entry[0] for entry in json.loads(str(records[key][INDEX]))] if key in records else []


def get_messages(records: RecordDict, slot: str) -> dict[str, Message]:
    """Every client message in wire slot ``slot``, in insertion order (none if the slot is absent)."""
    key = f"{slot}{SEP}{INDEX}"
    if key not in records:
        return {}
    index = json.loads(str(records[key][INDEX]))
    packed = records[f"{slot}{SEP}arrays"]
    names = [f"{n}/{name}" for n, (_, arrays, _) in enumerate(index) for name in arrays]
    everything = unpack_arrays(packed[PACKED].numpy(), names) if PACKED in packed else {}
    return {
        client: Message({name: everything[f"{n}/{name}"] for name in arrays}, meta)
        for n, (client, arrays, meta) in enumerate(index)
    }


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
