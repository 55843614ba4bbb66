"""A long-lived worker per SuperNode: the ClientApp's work without a process start per message.

``fedmosaic node-worker --node-config '<the SuperNode's node config>'`` imports torch and
fedmosaic's algorithms once, reads the node's data once, and then answers the messages the
per-message ClientApp (:mod:`fedmosaic.engines.flower_client`) forwards to it, with the same
function the ClientApp would run itself (:func:`fedmosaic.engines.flower_node.answer`).

The channel is a Unix socket in a directory only this user can open (mode 0700, checked before
every use), named after the node config's data keys, so a ClientApp finds the worker started with
the same ``--node-config`` and nobody else's. Each request and reply is one frame: an 8-byte length
and a Flower ``RecordDict`` in Flower's own protobuf encoding (no pickle: a malformed frame is an
error, never code). The worker answers one message at a time (a SuperNode sends one at a time);
a frame it cannot read, or a client half that raises, gets an error reply naming the cause, and
the worker goes on serving. Every read and write has a timeout, so neither side waits forever.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, RecordDict

from fedmosaic.core.errors import WorkerError

log = logging.getLogger("fedmosaic.node_worker")
KEYS = ("data-dir", "modalities", "options", "name")  # the node config entries that pick the node's data
HEADER = struct.Struct("!Q")
MAX_FRAME = 1 << 34  # 16 GiB: a length above this is a corrupt frame, not a message
REQUEST = "fedmosaic-worker"  # ConfigRecord of a request: the message type
ERROR = "fedmosaic-worker-error"  # ConfigRecord of an error reply: what went wrong
STATE_PREFIX = "state/"  # reply entries that are client states, not reply content
READ_TIMEOUT_S = 60.0  # the worker's bound on receiving one request (a stalled sender)
DEFAULT_TIMEOUT_S = 3600.0  # the ClientApp's bound on one reply (node config worker-timeout-s)


# ------------------------------------------------------------------------------------------- channel


def worker_dir() -> Path:
    """Where workers' sockets live: ``$FEDMOSAIC_WORKER_DIR``, else ``<tmp>/fedmosaic-workers-<uid>``."""
    return Path(
        os.environ.get("FEDMOSAIC_WORKER_DIR")
        or Path(tempfile.gettempdir()) / f"fedmosaic-workers-{os.getuid()}"
    )


def private_dir(path: Path, create: bool) -> Path:
    """``path`` as a directory only this user can enter; :class:`WorkerError` if it is anything else."""
    if create:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise WorkerError(
            f"node worker: {path} must be a directory owned by uid {os.getuid()} with mode 0700 "
            f"(found uid {info.st_uid}, mode {stat.filemode(info.st_mode)}); "
            "remove it or set FEDMOSAIC_WORKER_DIR"
        )
    return path


def node_key(node_config: Mapping[str, Any]) -> dict[str, str]:
    """The node config entries that pick the node's data, ``data-dir`` resolved (both sides agree)."""
    key = {k: str(node_config[k]) for k in KEYS if k in node_config}
    if "data-dir" in key:
        key["data-dir"] = str(Path(key["data-dir"]).expanduser().resolve())
    return key


def socket_path(node_config: Mapping[str, Any]) -> Path:
    """The socket of the worker for this node config."""
    digest = hashlib.sha256(json.dumps(node_key(node_config), sort_keys=True).encode()).hexdigest()[:20]
    return worker_dir() / f"{digest}.sock"


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 22))
        if not chunk:
            raise ConnectionError(f"the other side closed the channel with {left} of {n} bytes unread")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def send_frame(sock: socket.socket, records: RecordDict) -> None:
    """Write ``records`` as one frame (Flower's protobuf encoding of a RecordDict)."""
    from flwr.common.serde import recorddict_to_proto

    body = recorddict_to_proto(records).SerializeToString()
    sock.sendall(HEADER.pack(len(body)) + body)


def recv_frame(sock: socket.socket) -> RecordDict:
    """Read one frame; :class:`WorkerError` when it is not a RecordDict."""
    from flwr.common.serde import recorddict_from_proto
    from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict  # pylint: disable=E0611
    from google.protobuf.message import DecodeError

    (size,) = HEADER.unpack(_recv_exact(sock, HEADER.size))
    if size > MAX_FRAME:
        raise WorkerError(f"frame of {size} bytes announced (limit {MAX_FRAME}): not a fedmosaic message")
    proto = ProtoRecordDict()
    try:
        proto.ParseFromString(_recv_exact(sock, size))
        return recorddict_from_proto(proto)
    except (DecodeError, ValueError, TypeError) as exc:
        raise WorkerError(f"unreadable frame ({type(exc).__name__}: {exc})") from None


def forward(
    kind: str, content: RecordDict, states: RecordDict, node_config: Mapping[str, Any]
) -> tuple[RecordDict, RecordDict] | None:
    """Ask this node's worker; ``(reply content, new client states)``, or ``None`` when no worker runs.

    A worker that answers with an error raises :class:`WorkerError` (the ClientApp fails, and the
    coordinator sees the node's error); one that dies before answering counts as absent.
    """
    path = socket_path(node_config)
    try:
        private_dir(path.parent, create=False)
    except FileNotFoundError:
        return None
    except WorkerError as exc:
        log.warning("%s; doing the work in this process", exc)
        return None
    request = RecordDict({**content, **states})
    request[REQUEST] = ConfigRecord({"kind": kind})
    timeout = float(node_config.get("worker-timeout-s", DEFAULT_TIMEOUT_S))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return None  # no worker (or a stale socket of one that stopped)
        try:
            send_frame(sock, request)
            reply = recv_frame(sock)
        except (ConnectionError, BrokenPipeError) as exc:
            log.warning("node worker at %s went away (%s); doing the work in this process", path, exc)
            return None
        except TimeoutError:
            raise WorkerError(
                f"node worker at {path} did not answer within worker-timeout-s={timeout:g} s"
            ) from None
    if ERROR in reply:
        raise WorkerError(f"node worker: {reply[ERROR]['reason']}")
    new_states = RecordDict({k: v for k, v in reply.items() if k.startswith(STATE_PREFIX)})
    content_out = RecordDict({k: v for k, v in reply.items() if not k.startswith(STATE_PREFIX)})
    return content_out, new_states


# -------------------------------------------------------------------------------------------- worker


def _error(reason: str) -> RecordDict:
    return RecordDict({ERROR: ConfigRecord({"reason": reason})})


def serve_one(conn: socket.socket, node_config: Mapping[str, Any]) -> str:
    """Answer one request on ``conn``; the outcome as one line (for the worker's log)."""
    from fedmosaic.engines.flower_node import answer

    t0 = time.perf_counter()
    conn.settimeout(READ_TIMEOUT_S)
    try:
        request = recv_frame(conn)
        kind = str(request[REQUEST]["kind"]) if REQUEST in request else ""
        if not kind:
            raise WorkerError("request without a message type")
    except Exception as exc:  # whatever a malformed frame raises, the worker answers and goes on
        _try_send(conn, _error(f"bad request: {exc}"))
        return f"bad request: {exc}"
    del request[REQUEST]
    states = RecordDict({k: v for k, v in request.items() if k.startswith(STATE_PREFIX)})
    content = RecordDict({k: v for k, v in request.items() if not k.startswith(STATE_PREFIX)})
    try:
        reply = answer(kind, content, states, node_config)
    except Exception as exc:  # a client half's failure is the ClientApp's error, not the worker's end
        log.exception("%s message failed", kind)
        _try_send(conn, _error(f"{kind} failed: {type(exc).__name__}: {exc}"))
        return f"{kind}: failed ({type(exc).__name__}: {exc})"
    for key, record in states.items():
        reply[key] = record
    conn.settimeout(READ_TIMEOUT_S)
    _try_send(conn, reply)
    return f"{kind}: answered in {time.perf_counter() - t0:.2f} s"


def _try_send(conn: socket.socket, records: RecordDict) -> None:
    try:
        send_frame(conn, records)
    except OSError as exc:  # the ClientApp went away: nothing to answer to
        log.warning("could not send the reply: %s", exc)


def _bind(path: Path) -> socket.socket:
    """A listening socket at ``path``; :class:`WorkerError` if a live worker already holds it."""
    private_dir(path.parent, create=True)
    if path.exists():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(2.0)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # a worker that stopped without cleaning up
            else:
                raise WorkerError(f"node worker: another worker already serves this node config at {path}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(8)
    return sock


def serve(node_config: Mapping[str, Any], ready: Path | None = None, max_requests: int | None = None) -> None:
    """Warm up, then answer forwarded messages until SIGTERM/SIGINT (or ``max_requests``).

    ``ready`` (optional) is a file written once the socket accepts connections.
    """
    from fedmosaic.engines.flower_node import warm_up

    config = dict(node_config)
    t0 = time.perf_counter()
    warm_up(config)
    path = socket_path(config)
    sock = _bind(path)
    log.info("node worker ready in %.1f s at %s for %s", time.perf_counter() - t0, path, node_key(config))
    if ready is not None:
        ready.write_text(f"{os.getpid()} {path}\n")

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    if threading.current_thread() is threading.main_thread():  # (a test may serve from a thread)
        signal.signal(signal.SIGTERM, stop)
    served = 0
    try:
        while max_requests is None or served < max_requests:
            conn, _ = sock.accept()
            with conn:
                try:
                    log.info(serve_one(conn, config))
                except Exception:  # never let one connection end the worker
                    log.exception("request failed")
            served += 1
    finally:
        sock.close()
        path.unlink(missing_ok=True)


def parse_node_config(text: str) -> dict[str, Any]:
    """``'data-dir="/x" modalities="image"'`` (flower-supernode's syntax) -> a dict."""
    from flwr.common.config import parse_config_args

    return dict(parse_config_args([text]) if text.strip() else {})
