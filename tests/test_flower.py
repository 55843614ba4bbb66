"""The Flower engine: records, node folders, and real federations on 127.0.0.1.

Integration tests start Flower's own commands (``flower-superlink``, ``flower-supernode``, ``flwr
run``) as subprocesses through :mod:`fedmosaic.engines.flower_local`: everything binds 127.0.0.1 on
free ports, every wait is bounded, every process is stopped by PID in a ``finally`` block (the
context manager). Each SuperNode has a node worker beside it (``fedmosaic node-worker``) and is
started by ``python -m fedmosaic.engines.supernode`` (idle poll 0.2 s). The fedavg run is in the
default (CI) selection; the other algorithms are ``slow``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import RecordDict

from conftest import TINY_OVERRIDES
from fedmosaic.algorithms.registry import algorithm_names, get_algorithm
from fedmosaic.config import ConfigError, RunConfig, load_config
from fedmosaic.core.message import Message
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.federation import Federation
from fedmosaic.engines.flower import (
    FlowerRunError,
    flower_federation,
    prepare_nodes,
    wait_for_nodes,
    write_app,
)
from fedmosaic.engines.flower_local import LocalFederation, Tls, alive, local_federation
from fedmosaic.engines.flower_records import clients_in, get_messages, get_state, put_messages, put_state
from fedmosaic.engines.node_data import NodeDataError, load_node, site_node
from fedmosaic.engines.run_folder import RunFolder, read_jsonl
from mhealth_files import mhealth_overrides, write_mhealth

ROOT = Path(__file__).resolve().parents[1]
# The tiny synthetic task of conftest.py (400 samples; 2 image, 2 text, 6 image+text clients).
TINY = list(TINY_OVERRIDES)
RUN_TIMEOUT_S = 420.0  # bounded wait for one Flower run (a loaded 2-core machine: ~1 min per round)


def tiny(*extra: str) -> RunConfig:
    return load_config(None, [*TINY, *extra])


def runs_on_image_text(algorithm: str) -> bool:
    """Whether ``algorithm`` builds for the image+text task (some need sensor windows)."""
    from fedmosaic.core.algorithm import ServerData
    from fedmosaic.engines.protocol import build_client, build_server, settings_from_config

    cfg = tiny(f"algorithm.name={algorithm}")
    task = build_task(cfg)
    halves = get_algorithm(algorithm)
    settings = settings_from_config(cfg, task.info, len(task.specs))
    try:
        build_client(halves, settings)
        build_server(halves, settings, ServerData(task.proxy, task.labelled, task.test))
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------- records and node data


def test_records_round_trip_is_bit_exact() -> None:
    rng = np.random.default_rng(0)
    messages = {
        "client_0": Message.of({"w": rng.normal(size=(3, 4)).astype(np.float32), "n": np.arange(5)}, k=3),
        "user-7.a": Message.of(
            {"x": np.zeros((0, 2), dtype=np.float64), "w": np.ones(2, np.float16)},
            flag=True,
            name="x",
            lr=0.1,
            one=1.0,
            nan=float("nan"),
            big=2**62,
        ),
        "empty": Message(),
    }
    records = RecordDict()
    put_messages(records, "train", messages)
    assert clients_in(records, "train") == list(messages) and clients_in(records, "evaluate") == []
    back = get_messages(records, "train")
    assert list(back) == list(messages)
    for cid, message in messages.items():
        assert str(back[cid].meta) == str(message.meta)  # str: nan != nan
        assert {k: type(v) for k, v in back[cid].meta.items()} == {
            k: type(v) for k, v in message.meta.items()
        }
        assert list(back[cid].arrays) == list(message.arrays)
        for name, array in message.arrays.items():
            assert back[cid].arrays[name].dtype == array.dtype
            assert back[cid].arrays[name].shape == array.shape
            assert back[cid].arrays[name].tobytes() == array.tobytes()
        assert back[cid].nbytes == message.nbytes
    with pytest.raises(ValueError, match="slot 'train' is already"):
        put_messages(records, "train", {"late": Message()})  # would silently drop the first clients
    empty = RecordDict()
    put_messages(empty, "evaluate", {"a": Message.of(n=1), "b": Message()})  # no arrays at all
    assert get_messages(empty, "evaluate") == {"a": Message.of(n=1), "b": Message()}
    assert get_state(records, "state", "nobody").is_empty()
    put_state(records, "state", "client_0", messages["client_0"])
    state = get_state(records, "state", "client_0")
    assert (
        state.meta == {"k": 3} and state.arrays["w"].tobytes() == messages["client_0"].arrays["w"].tobytes()
    )


def test_a_nodes_message_is_a_few_flower_objects_whatever_its_clients() -> None:
    # Flower moves every record, Array and chunk as an object of its own, one request each between
    # SuperNode and SuperLink: a model sent as an Array per tensor cost seconds per message, and three
    # records and an Array per client still made a 4-client message 18 objects (flower_records.py).
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    def model(k: int) -> dict[str, np.ndarray]:
        arrays = {f"layer{n}.weight": np.full((4, 3), k + n, dtype=np.float32) for n in range(50)}
        arrays["b.bias"], arrays["a.bias"] = np.ones(3, np.float64), np.arange(2)  # not in sorted order
        return arrays

    counts = {}
    for clients in (1, 4, 16):
        messages = {f"client_{k}": Message.of(model(k), n=k) for k in range(clients)}
        records = RecordDict()
        put_messages(records, "train", messages)
        assert list(records) == ["train/arrays", "train/index"]
        assert list(records["train/arrays"]) == ["packed"]
        counts[clients] = len(get_all_nested_objects(records))  # the Flower message itself adds one
        back = get_messages(records, "train")
        assert all(list(back[c].arrays) == list(m.arrays) for c, m in messages.items())  # sender's order
        assert all(
            back[c].arrays[k].tobytes() == v.tobytes() and back[c].arrays[k].dtype == v.dtype
            for c, m in messages.items()
            for k, v in m.arrays.items()
        )
    # the record dict, two records, one Array, one chunk (small models), however many clients
    assert counts == {1: 5, 4: 5, 16: 5}


@pytest.fixture(scope="module")
def node_folders(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three node folders from the tiny task: node_0 image/text-only clients, node_1 and node_2 image+text."""
    return prepare_nodes(tiny(), tmp_path_factory.mktemp("nodes"), 3)


def test_node_folders_hold_exactly_the_local_clients(node_folders: list[Path]) -> None:
    task = build_task(tiny())
    seen = []
    for folder in node_folders:
        node = load_node(str(folder))
        for data in node.clients:
            ref = task.client(data.spec.id)
            assert data.spec == ref.spec
            for part in ("train", "val", "test"):
                mine, theirs = getattr(data, part), getattr(ref, part)
                assert np.array_equal(mine.labels, theirs.labels)
                assert np.array_equal(mine.mask, theirs.mask)
                for name in data.spec.modalities:
                    assert np.array_equal(mine.store[name][mine.indices], theirs.store[name][theirs.indices])
            seen.append(data.spec.id)
    assert seen == [c.spec.id for c in task.clients]
    groups = [{c.spec.group for c in load_node(str(f)).clients} for f in node_folders]
    assert groups == [{"image", "text"}, {"image+text"}, {"image+text"}]


def test_node_config_modalities_narrow_what_clients_hold(node_folders: list[Path]) -> None:
    node = load_node(str(node_folders[1]), frozenset({"image"}))
    assert {c.spec.group for c in node.clients} == {"image"}
    assert all("text" not in b[0] for c in node.clients for b in c.train.batches(8))
    assert [c.spec.id for c in load_node(str(node_folders[0]), frozenset({"text"})).clients] == [
        "client_2",
        "client_3",
    ]  # node_0's image-only clients are not hosted by a text-only site
    with pytest.raises(NodeDataError, match="node-config modalities"):
        load_node(str(node_folders[0]), frozenset({"audio"}))
    with pytest.raises(NodeDataError, match="data-dir"):
        load_node(str(node_folders[0].parent / "missing"))


def test_a_site_builds_its_own_node_folder_from_raw_data(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FEDMOSAIC_NODE_CACHE", str(tmp_path / "cache"))
    cfg = tiny()
    folder = site_node(cfg, tmp_path / "site_a", {"n_samples": 300}, "site_a")
    node = load_node(str(folder), frozenset({"image"}))
    assert [c.spec.id for c in node.clients] == [f"site_a.client_{k}" for k in range(10) if k not in (2, 3)]
    assert {c.spec.group for c in node.clients} == {"image"}  # the text-only clients are gone
    assert sum(len(c.train) + len(c.val) for c in load_node(str(folder)).clients) < 300
    stamp = (folder / "data.npz").stat().st_mtime_ns
    assert site_node(cfg, tmp_path / "site_a", {"n_samples": 300}, "site_a") == folder  # cached
    assert (folder / "data.npz").stat().st_mtime_ns == stamp
    assert site_node(cfg, tmp_path / "site_a", {"n_samples": 320}, "site_a") != folder


class _Grid:
    def __init__(self, counts: list[int]) -> None:
        self.counts = counts

    def get_node_ids(self) -> list[int]:
        return list(range(self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]))


def test_wait_for_nodes_is_bounded() -> None:
    assert wait_for_nodes(_Grid([0, 1, 3]), 3, timeout_s=5, poll_s=0.01) == [0, 1, 2]
    with pytest.raises(FlowerRunError, match="min-nodes: 1 SuperNode"):
        wait_for_nodes(_Grid([1]), 2, timeout_s=0.05, poll_s=0.01)


def test_pooled_data_algorithms_are_refused(tmp_path: Path) -> None:
    cfg = tiny("algorithm.name=centralized")
    with pytest.raises(ConfigError, match="pooled client data"):
        flower_federation(cfg, build_task(cfg), RunFolder(tmp_path), None, [], {}, 0)  # type: ignore[arg-type]


def test_app_folder_names_both_apps(tmp_path: Path) -> None:
    import tomllib

    app = tomllib.loads((write_app(tmp_path) / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert app["components"] == {
        "serverapp": "fedmosaic.engines.flower:server_app",
        "clientapp": "fedmosaic.engines.flower_client:client_app",
    }
    assert {"config", "set", "out", "min-nodes", "node-wait-s"} <= set(app["config"])


# ------------------------------------------------------------------------------- real federations


def start_federation(root: Path, folders: list[Path]):
    """One insecure SuperLink and a SuperNode per node folder on 127.0.0.1 (a context manager)."""
    from contextlib import contextmanager

    @contextmanager
    def federation():
        with local_federation(root / "flower") as fed:
            for k, folder in enumerate(folders):
                fed.start_supernode(f"node_{k}", folder)  # and its node worker
            fed.wait_workers()
            yield fed, write_app(root / "app"), root
        assert all(p.poll() is not None for p in fed.processes.values())
        assert not [pid for pid in fed.stopped if alive(pid)]

    return federation()


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory, node_folders: list[Path]):
    """Three SuperNodes, each pointing at its own node folder of the tiny image+text task."""
    with start_federation(tmp_path_factory.mktemp("federation"), node_folders) as fed:
        yield fed


@pytest.fixture(scope="module")
def sensor_federation(tmp_path_factory: pytest.TempPathFactory):
    """Three SuperNodes holding a tiny mHealth-format acc/gyro task (written here, no download)."""
    root = tmp_path_factory.mktemp("sensor")
    overrides = mhealth_overrides(write_mhealth(root / "mhealth"))
    folders = prepare_nodes(load_config(None, overrides), root / "nodes", 3)
    with start_federation(root, folders) as (fed, app, _):
        yield fed, app, root, overrides


def contiguous(messages: dict[str, Message]) -> dict[str, Message]:
    """The messages with every array C-contiguous, as any engine that serialises them delivers them."""
    return {
        cid: Message({k: np.ascontiguousarray(a) for k, a in m.arrays.items()}, dict(m.meta))
        for cid, m in messages.items()
    }


class ContiguousServer:
    """A server half whose plans arrive C-contiguous (everything else passes to ``inner``)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def configure(self, r, specs, rng):
        return contiguous(self.inner.configure(r, specs, rng))

    def configure_evaluate(self, r, specs):
        return contiguous(self.inner.configure_evaluate(r, specs))


class ContiguousClient:
    """A client half that gets and returns C-contiguous states and replies."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def fit(self, message: Message, state: Message, data, rng):
        reply, state = self.inner.fit(message, contiguous({"s": state})["s"], data, rng)
        return contiguous({"r": reply})["r"], contiguous({"s": state})["s"]

    def evaluate(self, message: Message, state: Message, data):
        return contiguous({"r": self.inner.evaluate(message, contiguous({"s": state})["s"], data)})["r"]


def serialising_local_engine(cfg: RunConfig, folder: Path) -> Federation:
    """The local engine, but every Message (plans, replies, client states) arrives C-contiguous.

    That is the one thing Flower changes about a Message: ``np.save`` writes a strided view (say a
    transposed embedding) as a C-ordered array, and torch's kernels can round differently on
    strided and contiguous input. With this engine as the reference Flower must match bit for bit.
    """
    return Federation.from_config(
        cfg,
        build_task(cfg),
        folder=folder,
        server_wrappers=[ContiguousServer],
        client_wrappers=[ContiguousClient],
    )


def run_both(
    fed: LocalFederation, app: Path, root: Path, algorithm: str, overrides: list[str] = TINY
) -> tuple[Path, Path, Path]:
    """The same tiny run on the local engine (plain and serialising) and on the federation."""
    sets = [*overrides, f"algorithm.name={algorithm}"]
    cfg = load_config(None, sets)
    local, reference = root / f"local-{algorithm}", root / f"serialising-{algorithm}"
    Federation.from_config(cfg, build_task(cfg), folder=local).run()
    serialising_local_engine(cfg, reference).run()
    flower = root / f"flower-{algorithm}"
    run_id = fed.submit(app, {"set": ";".join(sets), "out": str(flower), "min-nodes": 3})
    status = fed.wait_run(run_id, RUN_TIMEOUT_S)
    assert status == "finished:completed", f"{status}\n{fed.log('superlink')[-3000:]}"
    return local, reference, flower


def assert_close(ours: object, theirs: object, where: str = "", rel: float = 1e-3) -> None:
    """Equal structure, equal non-floats, floats within ``rel`` (relative) of each other."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and set(ours) == set(theirs), where
        for key in theirs:
            assert_close(ours[key], theirs[key], f"{where}/{key}", rel)
    elif isinstance(theirs, float):
        assert ours == pytest.approx(theirs, rel=rel, abs=1e-9), where
    else:
        assert ours == theirs, where


def assert_same_run(local: Path, reference: Path, flower: Path) -> None:
    """Flower's run folder against the local engine's.

    Bit-identical to the serialising local engine: the nodes hold the local engine's rows, arrays
    cross Flower as exact ``np.save`` bytes (C order), replies are aggregated in the local engine's
    client order, torch uses 1 thread. Against the plain local engine within 1e-3 relative: every
    built-in now sends contiguous arrays (fedmekt's embeddings since it copies them), so they match
    exactly; the tolerance is for a plug-in that sends strided views, which differ only by float
    rounding (measured before fedmekt's fix: 5e-5 on its server KD loss, evaluation identical).
    """
    assert (flower / "metrics.jsonl").read_bytes() == (reference / "metrics.jsonl").read_bytes()
    rows = read_jsonl(flower / "metrics.jsonl")
    plain = read_jsonl(local / "metrics.jsonl")
    for ours_row, plain_row in zip(rows, plain, strict=True):
        assert_close(ours_row, plain_row, f"round {plain_row['round']}")
    assert [r["round"] for r in rows] == [1, 2]
    for name in ("config.toml", "timings.jsonl", "summary.json", "report.md", "checkpoints/checkpoint.json"):
        assert (flower / name).is_file(), name
    import json
    import tomllib

    # the sensor runs switch plots off (tests/mhealth_files.py): then there must be none
    plots = tomllib.loads((flower / "config.toml").read_text())["output"]["plots"]
    assert bool(list((flower / "plots").glob("*.png"))) == plots

    ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (flower, reference))
    assert ours["engine"] == {"name": "flower", "nodes": 3}
    for key in ("final", "bytes_up", "bytes_down", "clients", "groups", "data", "rounds"):
        assert ours[key] == theirs[key], key


def test_fedavg_on_three_supernodes_equals_local_engine(federation) -> None:
    fed, app, root = federation
    local, reference, flower = run_both(fed, app, root, "fedavg")
    assert_same_run(local, reference, flower)
    assert (flower / "metrics.jsonl").read_bytes() == (local / "metrics.jsonl").read_bytes()
    rows = read_jsonl(flower / "metrics.jsonl")
    assert all(r["bytes_up"] > 0 and r["bytes_down"] > 0 for r in rows)  # weights went both ways
    # every node's worker did the work (the ClientApp processes only forwarded the messages)
    for k in range(3):
        assert fed.log(f"node_{k}-worker").count("train: answered") >= 2, fed.log(f"node_{k}-worker")[-2000:]


OTHERS = [  # fedmosaic's own (not a plug-in installed in the environment, such as the example)
    n
    for n in algorithm_names()
    if n != "fedavg"
    and not get_algorithm(n).needs_pooled_data
    and get_algorithm(n).__module__.startswith("fedmosaic.")
]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", OTHERS)
def test_every_algorithm_on_three_supernodes_equals_local_engine(request, algorithm: str) -> None:
    if runs_on_image_text(algorithm):
        fed, app, root = request.getfixturevalue("federation")
        assert_same_run(*run_both(fed, app, root, algorithm))
    else:  # built for sensor windows (fedmekt, mmfedavg ...): the same test on an acc/gyro task
        fed, app, root, overrides = request.getfixturevalue("sensor_federation")
        assert_same_run(*run_both(fed, app, root, algorithm, overrides))


@pytest.mark.slow
def test_too_few_nodes_fails_the_run_after_a_bounded_wait(federation) -> None:
    fed, app, root = federation
    run_id = fed.submit(
        app, {"set": ";".join(TINY), "out": str(root / "never"), "min-nodes": 4, "node-wait-s": 2.0}
    )
    assert fed.wait_run(run_id, 180) == "finished:failed"
    assert not (root / "never" / "metrics.jsonl").exists()


NODES = ["--node", "site_a", "--node", "rogue"]


def test_tls_and_node_authentication_refuse_an_unregistered_node(tmp_path: Path, node_folders) -> None:
    certs = tmp_path / "certs"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_dev_certs.py"), "--out", str(certs), *NODES],
        check=True,
        capture_output=True,
        timeout=60,
    )
    tls = Tls(certs / "ca.crt", certs / "server.crt", certs / "server.key")
    with local_federation(tmp_path / "flower", tls=tls, node_auth=True) as fed:
        fed.register(certs / "nodes" / "site_a.pub")
        # no run here, so no node workers; the SuperNodes go through fedmosaic.engines.supernode
        site_a, rogue_key = certs / "nodes" / "site_a", certs / "nodes" / "rogue"
        fed.start_supernode("site_a", node_folders[0], private_key=site_a, worker=False)
        rogue = fed.start_supernode("rogue", node_folders[1], private_key=rogue_key, worker=False)
        assert rogue.wait(timeout=90) != 0  # refused: the SuperLink does not know its public key
        assert "Failed to activate SuperNode" in fed.log("rogue")
        import json
        import time

        deadline, online = time.monotonic() + 90, []
        while time.monotonic() < deadline and not online:
            listed = fed.flwr("supernode", "list", "fedmosaic", "--format", "json").stdout
            nodes = json.loads(listed[listed.find("{") :]).get("nodes", []) if "{" in listed else []
            online = [n for n in nodes if n["status"] == "online"]
            time.sleep(0.5)
        assert len(online) == 1  # the registered node, over TLS
    assert all(p.poll() is not None for p in fed.processes.values())
    assert fed.stopped and not [pid for pid in fed.stopped if alive(pid)]
