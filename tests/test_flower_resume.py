"""Resuming a Flower run, in-process: the real ServerApp (``run_server``) and the real ClientApp
handler (``flower_client.handle``) with the SuperLink replaced by a grid that calls the nodes here.

A "crash" is the ServerApp dying after the nodes trained round 3 but before it read their replies:
round 2 is the last committed one, and every node already wrote its clients' round-3 states. The
resumed run (a new ``run_server`` over the same ``out``, with fresh ``Context.state``s, as a new
``flwr run`` has) must write ``metrics.jsonl`` byte for byte as an uninterrupted run. The test with
real processes (kill the ServerApp, the SuperLink, a SuperNode) is in test_flower_resume_processes.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import RecordDict

from conftest import TINY_OVERRIDES
from fedmosaic.config import ConfigError, load_config
from fedmosaic.core.errors import FlowerRunError
from fedmosaic.core.message import Message
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.federation import Federation
from fedmosaic.engines.flower import DEFAULT_RUN_CONFIG, prepare_nodes, run_server
from fedmosaic.engines.flower_client import handle
from fedmosaic.engines.flower_records import get_state, put_json, put_messages, put_state
from fedmosaic.engines.flower_resume import RUN_KEY_FILE, load_run, resume_flag
from fedmosaic.engines.node_states import open_states
from fedmosaic.engines.run_folder import RunFolder
from test_flower_dropout import _Reply  # a Flower reply as Grid.pull_messages gives it

# scaffold: every client keeps a control variate c_i in its state, so a lost or stale state changes
# the next round's update; 3 rounds so the crash (round 3) comes after two committed ones.
SETS = [*TINY_OVERRIDES, "rounds=3", "output.plots=false", "algorithm.name=scaffold"]


class Killed(BaseException):
    """The ServerApp process dies (not an error it could handle)."""


class InProcessGrid:
    """A Grid whose nodes answer with the real ClientApp handler, in this process.

    Each node has a ``Context.state`` of its own that lives as long as this grid (a resumed run is a
    new ``flwr run``: a new grid). ``kill_at`` = (message type, group): the ServerApp dies once the
    nodes have answered that message, before it reads a reply.
    """

    def __init__(self, node_configs: dict[int, dict], kill_at: tuple[str, str] | None = None) -> None:
        self.node_configs, self.kill_at = node_configs, kill_at
        self.contexts = {node: RecordDict() for node in node_configs}
        self.replies: dict[str, _Reply] = {}
        self.pending_kill = False

    def get_node_ids(self) -> list[int]:
        return list(self.node_configs)

    def push_messages(self, messages) -> list[str]:
        ids = []
        for message in messages:
            node, kind = message.metadata.dst_node_id, message.metadata.message_type
            mid = f"m{len(self.replies)}-{node}-{kind}"
            try:
                content = handle(kind, message.content, self.contexts[node], self.node_configs[node])
                self.replies[mid] = _Reply(mid, content)
            except Exception as exc:  # Flower turns a ClientApp's exception into an error reply
                self.replies[mid] = _Reply(mid, reason=f"{type(exc).__name__}: {exc}")
            ids.append(mid)
            self.pending_kill |= self.kill_at == (kind, message.metadata.group_id)
        return ids

    def pull_messages(self, ids):
        if self.pending_kill:
            raise Killed
        return [self.replies.pop(mid) for mid in ids if mid in self.replies]


def _enter_run(patch: pytest.MonkeyPatch, tmp: Path) -> None:
    from flwr.supercore.task_identity import TaskIdentity

    # A flwr Message can only be made inside a run; the ServerApp process sets these.
    patch.setattr(TaskIdentity, "_run_id", 1, raising=False)
    patch.setattr(TaskIdentity, "_task_id", 1, raising=False)
    patch.setattr(TaskIdentity, "_node_id", 1, raising=False)
    patch.setenv("FEDMOSAIC_WORKER_DIR", str(tmp / "no-workers"))  # the ClientApp does the work itself


@pytest.fixture(autouse=True)
def _in_a_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _enter_run(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return prepare_nodes(load_config(None, SETS), tmp_path_factory.mktemp("nodes"), 2)


def uninterrupted_metrics(root: Path) -> bytes:
    """An uninterrupted run's metrics.jsonl (the local engine's: Flower's equal it, tests/test_flower.py)."""
    cfg = load_config(None, SETS)
    Federation.from_config(cfg, build_task(cfg), folder=root / "run").run()
    return (root / "run" / "metrics.jsonl").read_bytes()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return uninterrupted_metrics(tmp_path_factory.mktemp("local"))


def node_configs(nodes: list[Path], states: Path | None) -> dict[int, dict]:
    return {
        k + 1: {"data-dir": str(folder), **({"state-dir": str(states / f"node_{k}")} if states else {})}
        for k, folder in enumerate(nodes)
    }


def serve(grid: InProcessGrid, out: Path, **run_config: object) -> dict:
    rc = {**DEFAULT_RUN_CONFIG, "out": str(out), "min-nodes": 2, "node-wait-s": 5.0, "poll-s": 0.0}
    return run_server(grid, {**rc, **run_config})  # type: ignore[arg-type]


def crash_in_round_3(nodes: list[Path], states: Path | None, out: Path) -> None:
    grid = InProcessGrid(node_configs(nodes, states), kill_at=("train", "round-3"))
    with pytest.raises(Killed):
        serve(grid, out, set=";".join(SETS))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]  # killed mid-round 3: rounds 1 and 2 committed


@pytest.fixture(scope="module")
def _crashed_once(nodes: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crashed")
    with pytest.MonkeyPatch.context() as patch:  # the autouse fixture is function-scoped
        _enter_run(patch, root)
        crash_in_round_3(nodes, root / "states", root / "out")
    return root


@pytest.fixture
def crashed(_crashed_once: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of a run killed mid-round 3 (``out``) and its nodes' state folders (``states``)."""
    shutil.copytree(_crashed_once, tmp_path / "crashed")
    return tmp_path / "crashed" / "out", tmp_path / "crashed" / "states"


def round_versions(states: Path) -> set[str]:
    return {p.name for p in states.glob("node_*/*/*/r*.safetensors")}


def test_a_resumed_run_writes_the_uninterrupted_runs_metrics(nodes, reference, crashed) -> None:
    out, states = crashed
    # the nodes had already written round 3's states: the resumed round 3 must not read them
    assert "r00003.safetensors" in round_versions(states)
    summary = serve(InProcessGrid(node_configs(nodes, states)), out, resume=True)
    assert (out / "metrics.jsonl").read_bytes() == reference
    assert summary["rounds"] == 3
    timings = [json.loads(line)["round"] for line in (out / "timings.jsonl").read_text().splitlines()]
    assert timings == [1, 2, 3]  # the interrupted round's timing is gone, the redone one is there
    assert json.loads((out / "checkpoints" / "checkpoint.json").read_text())["round"] == 3


def test_the_comparison_catches_client_states_that_were_not_restored(nodes, reference, crashed) -> None:
    # The same resume, but the nodes lost their clients' states (the files, not the folder):
    # scaffold's round 3 then starts from zero control variates and the numbers differ.
    out, states = crashed
    for path in states.glob("node_*/*/*/r*.safetensors"):
        path.unlink()
    serve(InProcessGrid(node_configs(nodes, states)), out, resume=True)
    rows = (out / "metrics.jsonl").read_bytes()
    assert rows != reference
    assert rows.splitlines()[:2] == reference.splitlines()[:2]  # only the resumed round differs


def test_a_resume_refuses_nodes_that_cannot_have_the_states(nodes, crashed, tmp_path: Path) -> None:
    out, _ = crashed
    before = (out / "metrics.jsonl").read_bytes()
    # a node that keeps states in memory: they died with the old run
    with pytest.raises(
        FlowerRunError, match=r"node-config state-dir: missing, but run \w+ resumes after round 2"
    ):
        serve(InProcessGrid(node_configs(nodes, None)), out, resume=True)
    # a node started with another (empty) state-dir
    with pytest.raises(FlowerRunError, match="holds no states of run"):
        serve(InProcessGrid(node_configs(nodes, tmp_path / "elsewhere")), out, resume=True)
    assert (out / "metrics.jsonl").read_bytes() == before  # nothing of the failed resumes was written


def test_run_config_resume_is_checked_before_anything_is_written(nodes, tmp_path: Path) -> None:
    grid = InProcessGrid(node_configs(nodes, tmp_path / "states"))
    with pytest.raises(ConfigError, match="resume: expected true or false, got 'yes'"):
        serve(grid, tmp_path / "a", resume="yes")
    with pytest.raises(ConfigError, match="resume: needs out"):
        run_server(grid, {**DEFAULT_RUN_CONFIG, "resume": True})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"out: .* holds no run to resume \(no config.toml\)"):
        serve(grid, tmp_path / "b", resume=True)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

    local = tmp_path / "local"  # a local engine's run folder: no Flower run key
    cfg = load_config(None, [*SETS, "rounds=1"])
    Federation.from_config(cfg, build_task(cfg), folder=local).run()
    with pytest.raises(ConfigError, match="was not started by the Flower engine"):
        serve(grid, local, resume=True)
    with pytest.raises(ConfigError, match="continue it with resume=true"):
        serve(grid, local, set=";".join(SETS))
    with pytest.raises(ConfigError, match="leave config and set empty"):
        serve(grid, local, resume=True, set="rounds=4")


def test_a_resumed_run_given_more_rounds_goes_on_as_a_local_run_does(nodes, crashed, tmp_path: Path) -> None:
    out, states = crashed
    config_before = (out / "config.toml").read_bytes()
    for bad, message in (
        (-1, "expected a whole number"),
        ("4", "expected a whole number"),
        (True, "expected a whole number"),
    ):
        with pytest.raises(ConfigError, match=f"rounds: {message}"):
            serve(InProcessGrid(node_configs(nodes, states)), out, resume=True, rounds=bad)
    with pytest.raises(ConfigError, match="rounds: 3 must exceed the run's 3 rounds"):
        serve(InProcessGrid(node_configs(nodes, states)), out, resume=True, rounds=3)
    with pytest.raises(ConfigError, match="rounds: extends a resumed run"):
        serve(InProcessGrid(node_configs(nodes, states)), tmp_path / "new", set=";".join(SETS), rounds=4)
    assert (out / "config.toml").read_bytes() == config_before and not (tmp_path / "new").exists()

    # interrupted in round 3 of 3, resumed with 5 rounds: rounds 3, 4 and 5 run
    summary = serve(InProcessGrid(node_configs(nodes, states)), out, resume=True, rounds=5)
    assert summary["rounds"] == 5
    cfg = load_config(None, SETS)  # the local engine: 3 rounds, then extended to 5 and continued
    local = tmp_path / "local"
    Federation.from_config(cfg, build_task(cfg), folder=local).run()
    RunFolder(local).extend_rounds(5)
    cfg = load_config(local / "config.toml")
    Federation.from_config(cfg, build_task(cfg), folder=local).run()
    assert (out / "metrics.jsonl").read_bytes() == (local / "metrics.jsonl").read_bytes()
    extended = json.loads(RunFolder(out).fingerprint.read_text())["extended"]
    assert extended == [{"from": 3, "to": 5, "after_round": 2}]


def test_a_resume_refuses_an_edited_config(nodes, crashed) -> None:
    out, states = crashed
    config = out / "config.toml"
    config.write_text(config.read_text().replace("seed = 0", "seed = 1"))
    with pytest.raises(ConfigError, match=r"resume: .* changed since it started: seed 0 -> 1"):
        serve(InProcessGrid(node_configs(nodes, states)), out, resume=True)


def test_a_damaged_run_key_is_one_line(nodes, crashed) -> None:
    out, states = crashed
    (out / "checkpoints" / RUN_KEY_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match=r"resume: .*flower_run.json is damaged \(JSONDecodeError\)"):
        serve(InProcessGrid(node_configs(nodes, states)), out, resume=True)


def test_resume_flag_and_load_run() -> None:
    assert resume_flag(True) is True and resume_flag(False) is False
    for bad in ("true", 1, None):
        with pytest.raises(ConfigError, match="resume: expected true or false"):
            resume_flag(bad)
    cfg, folder, resume = load_run({**DEFAULT_RUN_CONFIG, "set": "rounds=3", "out": "/tmp/x"})
    assert (cfg.rounds, folder.path, resume) == (3, Path("/tmp/x"), False)


# ------------------------------------------------------------------------- node states, one message


def _message(kind: str, round: int, clients: list[str], **run: object) -> RecordDict:
    content = RecordDict()
    put_json(content, "fedmosaic", round=round, config="", **run)
    put_messages(content, kind, {cid: Message() for cid in clients})
    return content


def _state(value: float) -> Message:
    return Message.of({"c": np.full(3, value, np.float32)}, step=int(value))


def test_node_states_read_the_committed_round_and_drop_an_interrupted_attempts(tmp_path: Path) -> None:
    cfg = {"data-dir": "x", "state-dir": str(tmp_path / "states")}
    run = {"run-key": "abc123"}

    def train(round: int, value: float | None, **extra: object) -> Message:
        disk = open_states("train", _message("train", round, ["client_0"], **run, **extra), cfg)
        assert disk is not None
        states = disk.load()
        before = get_state(states, "state", "client_0")
        if value is not None:
            put_state(states, "state", "client_0", _state(value))
            disk.save(states)
        return before

    assert train(1, 1.0).is_empty()
    assert train(2, 2.0).meta == {"step": 1}
    assert train(3, 3.0).meta == {"step": 2}  # the attempt the coordinator never committed
    folder = tmp_path / "states" / "abc123" / "client_0"
    (folder / ".r00003.safetensors.x.tmp").write_bytes(b"half")  # a writer killed mid-write
    # the coordinator resumes after round 2: round 3 again reads round 2's state, not the stale one
    assert train(3, None, **{"resumed-after": 2}).meta == {"step": 2}
    assert sorted(p.name for p in folder.iterdir()) == ["r00001.safetensors", "r00002.safetensors"]
    evaluate = open_states("evaluate", _message("evaluate", 2, ["client_0"], **run), cfg)
    assert evaluate is not None
    np.testing.assert_array_equal(
        get_state(evaluate.load(), "state", "client_0").arrays["c"], np.full(3, 2.0)
    )
    assert (tmp_path / "states" / "abc123").stat().st_mode & 0o777 == 0o700  # private to the node's user


def test_node_states_refuse_bad_input_with_one_line(tmp_path: Path) -> None:
    content = _message("train", 1, ["client_0"], **{"run-key": "../escape"})
    with pytest.raises(ConfigError, match=r"run-key: '\.\./escape' is not a run key"):
        open_states("train", content, {"state-dir": str(tmp_path)})
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"state-dir: .* exists and is not a directory"):
        open_states(
            "train", _message("train", 1, [], **{"run-key": "k"}), {"state-dir": str(tmp_path / "file")}
        )
    with pytest.raises(ConfigError, match="coordinator sent no run key"):
        open_states("train", _message("train", 1, []), {"state-dir": str(tmp_path)})
    # without state-dir a new run keeps states in Context.state as before
    assert open_states("train", _message("train", 1, [], **{"run-key": "k"}), {"data-dir": "x"}) is None
    assert not (tmp_path / "k").exists()


def test_the_clientapp_still_imports_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, fedmosaic.engines.flower_client, fedmosaic.engines.node_states; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120, check=False).returncode == 0
