"""The node worker (``fedmosaic node-worker``) and the light ClientApp that forwards to it.

The worker serves from a thread of the test process (torch is imported already, so no process start
is paid); the socket lives in a private folder under ``tmp_path``. What is checked: a forwarded
message gets the reply and client states the ClientApp would compute itself; without a worker the
ClientApp computes them itself; a malformed frame and a client's exception get an error reply and
the worker goes on serving; a folder other users could enter is refused. The Flower integration
test (tests/test_flower.py) runs a whole federation through workers.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

import tomli_w
from flwr.app import RecordDict

from conftest import TINY_OVERRIDES
from fedmosaic.config import load_config
from fedmosaic.core.seeding import SERVER, Rng
from fedmosaic.data.tasks import build_task
from fedmosaic.engines import node_worker
from fedmosaic.engines.federation import Federation
from fedmosaic.engines.flower import prepare_nodes
from fedmosaic.engines.flower_client import RUN, TRAIN, handle
from fedmosaic.engines.flower_node import answer
from fedmosaic.engines.flower_records import get_messages, get_state, put_json, put_messages
from fedmosaic.engines.node_worker import WorkerError, forward, serve, socket_path


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, RecordDict]:
    """A node folder of the tiny task (all clients) and a round-1 train message for it."""
    cfg = load_config(None, list(TINY_OVERRIDES))
    folder = prepare_nodes(cfg, tmp_path_factory.mktemp("nodes"), 1)[0]
    fed = Federation.from_config(cfg, build_task(cfg))
    plan = fed.server.configure(1, fed.specs, Rng(cfg.seed, 1, SERVER))
    content = RecordDict()
    put_json(content, RUN, round=1, config=tomli_w.dumps(cfg.to_toml_dict()), **{"clients-per-round": 10})
    put_messages(content, TRAIN, {cid: plan[cid] for cid in list(plan)[:2]})  # two clients keep it quick
    return {"data-dir": str(folder)}, content


@pytest.fixture
def worker_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # short: a Unix socket path is limited to ~107 bytes, pytest's tmp_path can be longer
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="fmw-test-"))
    monkeypatch.setenv("FEDMOSAIC_WORKER_DIR", str(folder))
    yield folder
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def start_worker(node_config: dict, requests: int, ready: Path) -> threading.Thread:
    thread = threading.Thread(target=serve, args=(node_config, ready, requests), daemon=True)
    thread.start()
    for _ in range(600):  # bounded: 60 s
        if ready.exists():
            return thread
        thread.join(0.1)
    raise TimeoutError("the worker did not start")


def same(a: RecordDict, b: RecordDict, slot: str) -> bool:
    ours, theirs = get_messages(a, slot), get_messages(b, slot)
    return (
        bool(ours)
        and list(ours) == list(theirs)
        and all(
            ours[c].meta == theirs[c].meta
            and list(ours[c].arrays) == list(theirs[c].arrays)
            and all(np.array_equal(ours[c].arrays[k], theirs[c].arrays[k]) for k in ours[c].arrays)
            for c in ours
        )
    )


def test_a_forwarded_message_gets_the_clientapps_own_answer_and_bad_input_an_error(
    node, worker_dir: Path, tmp_path: Path
) -> None:
    node_config, content = node
    thread = start_worker(node_config, requests=4, ready=tmp_path / "ready")
    assert oct(worker_dir.stat().st_mode & 0o777) == "0o700"
    expected_state = RecordDict()
    expected = answer(TRAIN, content, expected_state, node_config)  # what a ClientApp computes itself

    reply, states = forward(TRAIN, content, RecordDict(), node_config)
    assert same(reply, expected, TRAIN)
    assert sorted(states) == sorted(expected_state) and len(states) == 2 * 3  # two clients, three records
    for cid in get_messages(content, TRAIN):
        ours, theirs = get_state(states, "state", cid), get_state(expected_state, "state", cid)
        assert ours.meta == theirs.meta and list(ours.arrays) == list(theirs.arrays)
        assert all(np.array_equal(ours.arrays[k], theirs.arrays[k]) for k in ours.arrays)

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:  # a frame that is not a RecordDict
        sock.settimeout(30)
        sock.connect(str(socket_path(node_config)))
        sock.sendall(node_worker.HEADER.pack(5) + b"\xff\xff\xff\xff\xff")
        error = node_worker.recv_frame(sock)
    assert "bad request" in error[node_worker.ERROR]["reason"]

    broken = RecordDict({k: v for k, v in content.items() if not k.startswith(f"{TRAIN}/")})
    planned = get_messages(content, TRAIN)
    put_messages(broken, TRAIN, {**planned, "nobody": next(iter(planned.values()))})
    with pytest.raises(WorkerError, match=r"train failed: KeyError.*nobody"):
        forward(TRAIN, broken, RecordDict(), node_config)

    again, _ = forward(TRAIN, content, RecordDict(), node_config)  # still serving after both
    assert same(again, expected, TRAIN)
    thread.join(30)
    assert not thread.is_alive() and not socket_path(node_config).exists()


def test_without_a_worker_the_clientapp_does_the_work_itself(node, worker_dir: Path) -> None:
    node_config, content = node
    assert forward(TRAIN, content, RecordDict(), node_config) is None  # no socket folder yet
    state = RecordDict()
    reply = handle(TRAIN, content, state, node_config)
    expected_state = RecordDict()
    assert same(reply, answer(TRAIN, content, expected_state, node_config), TRAIN)
    assert sorted(state) == sorted(expected_state)


def test_a_socket_folder_others_can_enter_is_refused(node, worker_dir: Path, tmp_path: Path) -> None:
    node_config, content = node
    os.chmod(worker_dir, 0o755)
    with pytest.raises(WorkerError, match="mode 0700"):
        node_worker._bind(socket_path(node_config))  # the worker would not start
    assert forward(TRAIN, content, RecordDict(), node_config) is None  # not used: the work is done here


def test_the_worker_command_refuses_a_config_without_data_and_logs_with_levels(worker_dir: Path) -> None:
    import subprocess
    import sys
    import time

    command = [sys.executable, "-m", "fedmosaic.cli", "node-worker", "--node-config"]
    env = {**os.environ, "FEDMOSAIC_WORKER_DIR": str(worker_dir)}
    refused = subprocess.run([*command, 'name="a"'], capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].startswith("error: --node-config: data-dir missing")

    ready = worker_dir / "ready"
    proc = subprocess.Popen(  # the data is read per message, so a folder that is not there still serves
        [*command, 'data-dir="/nonexistent"', "--ready", str(ready)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), "the worker did not get ready within 120 s"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    # the level is in every line, so a warning stands out in a site's log
    assert " INFO fedmosaic.node_worker node worker ready in " in err
