"""Plug-ins: entry points, ``plugins = [...]`` / ``--plugin``, the encoder registry, one-line errors,
and the example package (examples/fedmosaic-example-plugin) with its FedAvgM.

The entry points of a distribution installed during the session are only seen by a new interpreter,
so those tests run the CLI in subprocesses. Every interpreter start costs seconds here (torch and
transformers load), so the subprocesses are few: each does as much as it can. Everything else runs
in this process, with the registries restored after each test (``registries`` fixture).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from fedmosaic.algorithms.registry import ALGORITHMS, algorithm_names, get_algorithm
from fedmosaic.cli import app
from fedmosaic.config import ConfigError, load_config
from fedmosaic.core import plugins
from fedmosaic.core.algorithm import ServerData, Settings
from fedmosaic.core.errors import PluginError
from fedmosaic.core.message import Message
from fedmosaic.core.modality import Modality
from fedmosaic.core.seeding import Rng
from fedmosaic.core.settings import ModelConfig, TrainingConfig
from fedmosaic.core.task import TaskInfo
from fedmosaic.data.registry import DATASETS
from fedmosaic.engines.run_folder import read_jsonl
from fedmosaic.models.build import build_encoder
from fedmosaic.models.encoders import ENCODERS, encoder_names

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fedmosaic-example-plugin"
EXAMPLE_PACKAGE = "fedmosaic_example_plugin"

# A tiny run of the example's three parts: FedAvgM on the blobs data set with the MLP encoder.
PLUGIN_RUN = [
    "algorithm.name=fedavgm",
    "task.dataset=blobs",
    "task.options.n_samples=200",
    "model.embedding_encoder=mlp",
    "model.embed_dim=8",
    "clients.mix={each = 1, all = 2}",
    "rounds=2",
    "compare=[]",
    "engine.progress=false",
    "output.plots=false",
]

# A plug-in that is not installed: a module on PYTHONPATH, named by --plugin or plugins = [...].
TMP_PLUGIN = """
from fedmosaic.algorithms.fedavg import FedAvg
from fedmosaic.algorithms.registry import register


@register
class TmpAvg(FedAvg):
    name = "tmp-avg"
    summary = "FedAvg under another name, from a module that is not installed"
"""

# A plug-in taking a built-in's name.
DUP_PLUGIN = """
from fedmosaic.algorithms.fedavg import FedAvg
from fedmosaic.algorithms.registry import register


@register
class Impostor(FedAvg):
    name = "fedavg"
"""


def _sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


@pytest.fixture
def registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a test registers or breaks in the three registries is undone after it."""
    for registry in (ALGORITHMS, DATASETS, ENCODERS):
        registry.ensure_loaded()
        monkeypatch.setattr(registry, "_items", dict(registry._items))
        monkeypatch.setattr(registry, "_origins", dict(registry._origins))
        monkeypatch.setattr(registry, "_state", registry._state)


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registries: None) -> Iterator[Path]:
    """A folder on sys.path with the modules ``tmp_plugin`` and ``dup_plugin``."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "tmp_plugin.py").write_text(TMP_PLUGIN)
    (folder / "dup_plugin.py").write_text(DUP_PLUGIN)
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in ("tmp_plugin", "dup_plugin", "broken_plugin"):
        sys.modules.pop(name, None)


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch, registries: None) -> Iterator[Any]:
    """The example's FedAvgM module imported afresh from its source folder (no installation needed)."""
    before = {n: m for n, m in sys.modules.items() if n.startswith(EXAMPLE_PACKAGE)}
    for name in before:
        del sys.modules[name]
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    yield importlib.import_module(f"{EXAMPLE_PACKAGE}.fedavgm")
    # Put back what was imported before (the registries are restored to match), drop the rest.
    for name in [n for n in sys.modules if n.startswith(EXAMPLE_PACKAGE)]:
        del sys.modules[name]
    sys.modules.update(before)


@pytest.fixture
def fedavgm(example: Any) -> type:
    """The plug-in's algorithm class: what a conformance check takes."""
    return example.FedAvgM


# ------------------------------------------------------------------------ FedAvgM, by hand


class _Toy(nn.Module):
    """Two weights and one buffer: small enough to follow the server step on paper."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 2.0]))
        self.register_buffer("count", torch.tensor([0.0]))


def _fedavgm_server(example: Any, **config: float) -> Any:
    info = TaskInfo("toy", (Modality("a", "embedding", (2,)),), 2, ("x", "y"))
    settings = Settings(
        info=info,
        algorithm=example.FedAvgMConfig(**config),
        training=TrainingConfig(),
        model=ModelConfig(embed_dim=2),
        seed=0,
        rounds=2,
        clients_per_round=2,
    )
    server = example.FedAvgMServer(settings, ServerData(None, None, None))  # type: ignore[arg-type]
    server.model = _Toy()  # the server step only sees named arrays: a toy model keeps them few
    return server


def _replies() -> dict[str, Message]:
    # Weighted by n_train (1 and 3): the average is w = [0, 5], count = 5.
    return {
        "A": Message({"w": np.array([3.0, 2.0], np.float32), "count": np.array([2.0], np.float32)},
                     {"n_train": 1, "train_loss": 1.0}),
        "B": Message({"w": np.array([-1.0, 6.0], np.float32), "count": np.array([6.0], np.float32)},
                     {"n_train": 3, "train_loss": 2.0}),
    }  # fmt: skip


def test_fedavgm_server_step_by_hand(example: Any) -> None:
    server = _fedavgm_server(example, server_lr=0.5, beta=0.5)
    # Round 1: delta = [1, 2] - [0, 5] = [1, -3]; v = [1, -3]; w = [1, 2] - 0.5 v = [0.5, 3.5].
    train = server.aggregate(1, _replies(), Rng(0, 1, "server"))
    assert train == {"train_loss": pytest.approx(1.75)}  # (1 * 1 + 3 * 2) / 4
    np.testing.assert_allclose(server.model.w.detach().numpy(), [0.5, 3.5])
    np.testing.assert_allclose(server.velocity["w"], [1.0, -3.0])
    assert server.model.count.item() == 5.0 and "count" not in server.velocity  # buffers: plain average
    # Round 2, same replies: delta = [0.5, -1.5]; v = 0.5 [1, -3] + delta = [1, -3]; w = [0, 5].
    state = server.state()
    server.aggregate(2, _replies(), Rng(0, 2, "server"))
    np.testing.assert_allclose(server.model.w.detach().numpy(), [0.0, 5.0])

    resumed = _fedavgm_server(example, server_lr=0.5, beta=0.5)  # from round 1's checkpoint
    resumed.load_state(state)
    np.testing.assert_allclose(resumed.velocity["w"], [1.0, -3.0])
    resumed.aggregate(2, _replies(), Rng(0, 2, "server"))
    np.testing.assert_allclose(resumed.model.w.detach().numpy(), [0.0, 5.0])


def test_fedavgm_without_momentum_is_fedavg(example: Any) -> None:
    server = _fedavgm_server(example, server_lr=1.0, beta=0.0)
    server.aggregate(1, _replies(), Rng(0, 1, "server"))
    np.testing.assert_allclose(server.model.w.detach().numpy(), [0.0, 5.0])  # the weighted average


def test_fedavgm_config_bounds_and_reply_spec(example: Any) -> None:
    with pytest.raises(ConfigError, match=r"^algorithm\.beta: "):
        load_config(None, [*PLUGIN_RUN, "algorithm.beta=1"], plugins=[f"{EXAMPLE_PACKAGE}.fedavgm"])
    with pytest.raises(ConfigError, match=r"^algorithm\.server_lr: "):
        load_config(None, ["algorithm.name=fedavgm", "algorithm.server_lr=0"])
    cfg = example.FedAvgMConfig()
    assert (cfg.server_lr, cfg.beta) == (1.0, 0.9)
    server = _fedavgm_server(example)
    sent = Message({"w": np.zeros(2, np.float32)})
    assert set(server.reply_spec(1, "A", sent).arrays) == {"w"}  # FedAvg's: the sent weights, echoed


def test_fedavgm_passes_the_conformance_check(fedavgm: type) -> None:
    from fedmosaic.testing import check_algorithm

    check_algorithm(fedavgm)  # the battery every built-in passes (tests/test_conformance.py)


def test_example_encoder_and_data_set(example: Any) -> None:
    importlib.import_module(f"{EXAMPLE_PACKAGE}.mlp")
    importlib.import_module(f"{EXAMPLE_PACKAGE}.blobs")
    assert encoder_names("embedding") == ["mlp", "projection"]
    encoder = build_encoder(
        Modality("a", "embedding", (5,)), ModelConfig(embed_dim=4, embedding_encoder="mlp")
    )
    assert encoder(torch.randn(3, 5)).shape == (3, 4)
    cfg = load_config(None, PLUGIN_RUN)
    assert cfg.dataset_options().n_samples == 200


# ------------------------------------------------------------- plugins = [...], errors, registry


def test_plugins_key_loads_a_module_before_validation(plugin_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('plugins = ["tmp_plugin"]\n\n[algorithm]\nname = "tmp-avg"\n')
    cfg = load_config(config, ["compare=[]"])
    assert cfg.plugins == ["tmp_plugin"] and cfg.algorithm.name == "tmp-avg"
    assert get_algorithm("tmp-avg").__module__ == "tmp_plugin"
    # --plugin adds to the config's list (once), so the run's saved config names it too
    cfg = load_config(config, ["compare=[]"], plugins=["tmp_plugin", "json"])
    assert cfg.plugins == ["tmp_plugin", "json"] and cfg.to_toml_dict()["plugins"] == cfg.plugins


def test_a_reimported_plugin_is_not_registered_twice(plugin_dir: Path) -> None:
    module = importlib.import_module("tmp_plugin")
    first = get_algorithm("tmp-avg")
    importlib.reload(module)  # a new class object, same module and name
    assert get_algorithm("tmp-avg") is not first and get_algorithm("tmp-avg").__module__ == "tmp_plugin"


def _one_line_cli_error(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_bad_plugin_import_is_one_line(plugin_dir: Path) -> None:
    expected = (
        "plugins: cannot import 'no_such_plugin': ModuleNotFoundError: No module named 'no_such_plugin'"
    )
    with pytest.raises(ConfigError) as info:
        load_config(None, ["plugins=['no_such_plugin']"])
    assert str(info.value) == expected
    assert _one_line_cli_error(["algorithms", "--plugin", "no_such_plugin"]) == f"error: {expected}"
    (plugin_dir / "broken_plugin.py").write_text("import math\nraise RuntimeError('bad\\nnews')\n")
    with pytest.raises(ConfigError) as info:
        load_config(None, [], plugins=["broken_plugin"])
    assert str(info.value) == "plugins: cannot import 'broken_plugin': RuntimeError: bad news"


def test_a_name_registered_twice_is_one_line(plugin_dir: Path) -> None:
    expected = "algorithm 'fedavg' is registered twice: by fedmosaic.algorithms.fedavg and by dup_plugin"
    with pytest.raises(ConfigError) as info:
        load_config(None, ["compare=[]"], plugins=["dup_plugin"])
    assert str(info.value) == expected
    assert _one_line_cli_error(["run", "--plugin", "dup_plugin"]) == f"error: {expected}"
    assert get_algorithm("fedavg").__module__ == "fedmosaic.algorithms.fedavg"  # the built-in stays


def _fake_distribution(folder: Path, entry_points: str) -> None:
    """A distribution ``broken-plugin`` with these entry points, visible to importlib.metadata."""
    info = folder / "broken_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


def test_a_failing_entry_point_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registries
) -> None:
    _fake_distribution(tmp_path, "[fedmosaic.algorithms]\nbroken = no_such_module_of_broken\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(ALGORITHMS, "_state", "unloaded")  # as in a new process
    expected = (
        "entry point 'broken' (fedmosaic.algorithms, from distribution 'broken-plugin'): "
        "ModuleNotFoundError: No module named 'no_such_module_of_broken'"
    )
    for _ in range(2):  # still failing on the next lookup: no run goes on without a plug-in
        with pytest.raises(PluginError) as info:
            get_algorithm("fedavg")
        assert str(info.value) == expected
    with pytest.raises(ConfigError) as info:
        load_config(None, [])
    assert str(info.value) == expected


def test_an_entry_point_must_name_a_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registries
) -> None:
    _fake_distribution(tmp_path, "[fedmosaic.algorithms]\nobj = json:dumps\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(ALGORITHMS, "_state", "unloaded")
    with pytest.raises(PluginError, match=r"^entry point 'obj' .*points at an object \('json:dumps'\)"):
        get_algorithm("fedavg")


def test_entry_points_are_read_on_first_lookup_once(monkeypatch: pytest.MonkeyPatch, registries) -> None:
    calls = []
    real = plugins.entry_points
    monkeypatch.setattr(plugins, "entry_points", lambda group: calls.append(group) or real(group=group))
    monkeypatch.setattr(ALGORITHMS, "_state", "unloaded")  # as in a new process
    assert calls == []
    get_algorithm("fedavg")
    get_algorithm("fedprox")
    assert "fedavg" in algorithm_names()
    assert calls == ["fedmosaic.algorithms"]


def test_encoder_names_are_checked_against_the_registry() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["model.image_encoder=x"])
    assert str(info.value) == (
        "model.image_encoder: unknown encoder 'x'; known: cnn, mobilenet_v3_large, mobilenet_v3_small"
    )
    with pytest.raises(ConfigError, match=r"^model\.timeseries_encoder: unknown encoder 'gru'"):
        load_config(None, ["model.timeseries_encoder=gru"])
    assert load_config(None, ["model.text_encoder=some/hub-model"]).model.text_encoder == "some/hub-model"


# ------------------------------------------------- the installed example, seen by new interpreters


@pytest.fixture(scope="session")
def example_installed() -> None:
    """The example package pip-installed (editable) into this environment, offline.

    No index, no dependencies (fedmosaic is here) and no build isolation (setuptools is here), so
    nothing is downloaded. It stays installed: reinstalling is idempotent.
    """
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
         "--no-build-isolation", "-e", str(EXAMPLE)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def _python(args: list[str], cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


# Runs CLI commands one after the other in one new interpreter, a marker line before each one's
# output: `python -c DRIVER '[[...], [...]]'`.
DRIVER = textwrap.dedent(
    """
    import json, sys
    from fedmosaic.cli import app
    for argv in json.loads(sys.argv[1]):
        print("=== " + " ".join(argv[:1]), flush=True)
        code = app(argv, standalone_mode=False)
        if code:
            sys.exit(code)
    """
)


@pytest.fixture(scope="module")
def cli_session(example_installed: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The CLI commands under test, run in one new interpreter that sees the installed example.

    One interpreter for all of them: starting one costs several seconds here (torch, transformers),
    and each command's own plug-in loading is what a new process would do too (entry points on
    the first lookup, ``plugins`` from the config it reads). Only the step that must not have been
    told about a plug-in gets a process of its own (``test_named_plugin_travels_with_the_config``).
    """
    folder = tmp_path_factory.mktemp("cli")
    (folder / "modules").mkdir()
    (folder / "modules" / "tmp_plugin.py").write_text(TMP_PLUGIN)
    run, root, named = folder / "run", folder / "root", folder / "named"
    steps = [[step, "--root", str(root)] for step in ("train-clients", "aggregate-vectors", "update-clients")]
    named_run = [*PLUGIN_RUN, "algorithm.name=tmp-avg", "rounds=1"]
    commands = [
        ["algorithms", "--plugin", "tmp_plugin"],
        ["datasets"],
        ["encoders"],
        ["run", "--out", str(run), "--quiet", *_sets([*PLUGIN_RUN, "algorithm.beta=0.5"])],
        ["init-root", "--root", str(root), *_sets([*PLUGIN_RUN, "algorithm.beta=0.5"])],
        *steps,
        *steps,
        ["init-root", "--root", str(named), "--plugin", "tmp_plugin", *_sets(named_run)],
    ]
    done = _python(["-c", DRIVER, json.dumps(commands)], folder, folder / "modules")
    outputs = {}
    for block in done.stdout.split("=== ")[1:]:
        command, _, text = block.partition("\n")
        outputs.setdefault(command, text)  # the first of each command
    return {"folder": folder, "run": run, "root": root, "named": named, "out": outputs}


def test_cli_lists_installed_and_named_plugins(cli_session: dict[str, Any]) -> None:
    out = cli_session["out"]
    names = {line.split()[0] for line in out["algorithms"].splitlines() if line.strip()}
    assert {"fedavgm", "tmp-avg", "fedavg"} <= names  # from the entry point, from --plugin, built in
    assert "blobs" in out["datasets"] and "options: n_samples, n_classes, dim, spread" in out["datasets"]
    assert "model.embedding_encoder" in out["encoders"] and "mlp, projection" in out["encoders"]


def test_plugin_run_and_file_pipeline_give_the_same_rows(cli_session: dict[str, Any]) -> None:
    rows = read_jsonl(cli_session["run"] / "metrics.jsonl")
    assert [r["round"] for r in rows] == [1, 2] and "overall" in rows[-1]["eval"]
    assert read_jsonl(cli_session["root"] / "metrics.jsonl") == rows  # same seed, same numbers
    config = tomllib.loads((cli_session["run"] / "config.toml").read_text())
    assert config["algorithm"] == {"name": "fedavgm", "server_lr": 1.0, "beta": 0.5}
    assert config["model"]["embedding_encoder"] == "mlp" and config["plugins"] == []  # entry points only


def test_named_plugin_travels_with_the_config(cli_session: dict[str, Any]) -> None:
    named = cli_session["named"]
    assert tomllib.loads((named / "config.toml").read_text())["plugins"] == ["tmp_plugin"]
    # A later step in a new process, not told about the plug-in: config.toml names it.
    done = _python(
        ["-m", "fedmosaic.cli", "train-clients", "--root", str(named)],
        cli_session["folder"],
        cli_session["folder"] / "modules",
    )
    assert "trained: client_" in done.stdout
