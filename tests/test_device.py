"""``engine.device``: spelling and availability errors, CPU results unchanged, models on the device.

No GPU exists on the development machines: the GPU itself is never exercised here. What is checked
on the CPU: a device that is absent is one line naming the key before anything is written (CUDA's
and MPS's availability monkeypatched, so the tests mean the same on a GPU machine); ``cpu`` and
``auto`` (resolving to the CPU) give identical rows; the torch mean used for aggregation on a GPU
gives numpy's bytes; every model builder puts its model on ``settings.device`` (the ``meta``
device stands in for a GPU); the forked client pool refuses a GPU.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fedmosaic import runner
from fedmosaic.algorithms.autoencoder_base import build_autoencoder
from fedmosaic.algorithms.base import device_weighted_mean, initial_model, sample_count, weighted_average
from fedmosaic.algorithms.fedcmi import initial_cmi_model
from fedmosaic.algorithms.gvf import build_model as build_gvf_model
from fedmosaic.cli import app
from fedmosaic.config import RunConfig, load_config
from fedmosaic.core.device import model_device, resolve_device, to_device
from fedmosaic.core.errors import ConfigError
from fedmosaic.core.message import Message
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.federation import Federation
from fedmosaic.engines.protocol import settings_from_config
from fedmosaic.testing import tiny_config
from mhealth_files import mhealth_overrides, write_mhealth

CLI_TINY = ["task.options.n_samples=400", "task.proxy_size=40", "task.labelled_size=40", "rounds=2"]


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine as torch would see it without any GPU (also on a machine that has one)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch reporting one CUDA device (nothing is ever run on it in these tests)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "CUDA 0", "tpu"])
def test_a_misspelt_device_is_one_line_naming_the_key(name: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"engine.device={name}"])
    assert str(err.value).startswith("engine.device: expected auto, cpu, cuda, cuda:N or mps")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["cuda", "cuda:1", "mps"])
def test_a_device_this_machine_lacks_is_one_line(no_gpu: None, name: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_device(name)
    message = str(err.value)
    assert message.startswith(f"engine.device: {name} is not available on this machine")
    assert "\n" not in message


def test_a_cuda_index_past_the_last_device_is_refused(one_gpu: None) -> None:
    assert resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(ConfigError, match=r"^engine.device: cuda:1 is not available .* 1 CUDA device"):
        resolve_device("cuda:1")


def test_auto_takes_cuda_when_torch_sees_it_else_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"


def test_forked_workers_refuse_a_gpu(one_gpu: None) -> None:
    assert resolve_device("cpu", workers=2) == "cpu"
    with pytest.raises(ConfigError, match=r"^engine.workers: 2 forked workers need the cpu device"):
        resolve_device("cuda", workers=2)


def test_cli_run_on_an_absent_gpu_writes_nothing(no_gpu: None, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [a for item in [*CLI_TINY, "engine.device=cuda"] for a in ("--set", item)]
    result = CliRunner().invoke(app, ["run", "-q", *args, "--out", str(out)])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: engine.device: cuda is not available"), (
        result.stderr
    )
    assert "Traceback" not in result.output
    assert not out.exists()


def test_resume_on_a_machine_without_the_device_is_refused_before_loading(
    no_gpu: None, tiny_cfg: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A folder whose config asks for cuda, as if made on a GPU machine: resuming here is one line.
    folder = tmp_path / "run"
    folder.mkdir()
    cfg = load_config(None, ["engine.device=cuda"])
    from fedmosaic.engines.run_folder import RunFolder

    RunFolder(folder).write_config(cfg.to_toml_dict())
    monkeypatch.setattr(runner, "build_task", lambda *a, **k: pytest.fail("the task was built"))
    with pytest.raises(ConfigError, match=r"^engine.device: cuda is not available"):
        runner.resume(folder)


def test_explicit_cpu_and_auto_give_the_same_rows(no_gpu: None, tiny_cfg: RunConfig) -> None:
    tree = tiny_cfg.to_toml_dict()
    tree.update(rounds=1)
    tree["clients"]["per_round"] = 3
    task = build_task(RunConfig.model_validate(tree))
    rows = {}
    for device in ("cpu", "auto"):
        tree["engine"]["device"] = device
        with Federation.from_config(RunConfig.model_validate(tree), task) as fed:
            assert fed.settings.device == "cpu"
            rows[device] = [r.row for r in fed.rounds()]
    assert rows["cpu"] == rows["auto"] and rows["cpu"][0]["eval"]


def test_the_device_mean_gives_the_numpy_mean_bytes() -> None:
    rng = np.random.default_rng(0)
    replies = {}
    for k in range(5):
        arrays = {"a": rng.normal(size=(7, 3)).astype(np.float32), "b": rng.normal(size=4)}
        if k % 2:
            arrays["c"] = rng.normal(size=2).astype(np.float32)
        replies[f"c{k}"] = Message(arrays, {"n_train": int(rng.integers(1, 50))})
    # a lone -0.0: numpy's 0.0 + (-0.0) is +0.0, and the device mean must give that byte too
    replies["z"] = Message({"d": np.array([-0.0, 1.5], np.float32)}, {"n_train": 3})
    numpy_mean = weighted_average(replies)
    torch_mean = device_weighted_mean(replies, sample_count, "cpu")
    assert numpy_mean.keys() == torch_mean.keys()
    for name, value in numpy_mean.items():
        assert isinstance(torch_mean[name], np.ndarray) and torch_mean[name].dtype == value.dtype
        assert torch_mean[name].tobytes() == value.tobytes(), name


def test_every_model_builder_puts_its_model_on_the_settings_device(tmp_path: Path) -> None:
    # meta stands in for a GPU: a builder that forgot the device leaves its model on the CPU
    sensor = load_config(None, [*mhealth_overrides(write_mhealth(tmp_path)), "algorithm.name=fedmekt"])
    cases = {
        "fedavg": (initial_model, tiny_config("fedavg")),
        "fedcmi": (initial_cmi_model, tiny_config("fedcmi")),
        "gvf": (build_gvf_model, tiny_config("gvf")),
        "fedmekt": (build_autoencoder, sensor),
    }
    for name, (build, cfg) in cases.items():
        settings = dataclasses.replace(settings_from_config(cfg, build_task(cfg).info, 4), device="meta")
        model = build(settings)
        kinds = {t.device.type for t in [*model.parameters(), *model.buffers()]}
        assert kinds == {"meta"}, (name, kinds)


def test_batches_follow_the_model_and_stay_put_on_the_cpu() -> None:
    batch = {"image": torch.ones(2, 3), "text": torch.zeros(2, 4, dtype=torch.long)}
    assert to_device(batch, "cpu") is batch  # no copy on the CPU: the same bytes as before
    moved = to_device(batch, "meta")
    assert {t.device.type for t in moved.values()} == {"meta"}
    assert model_device(torch.nn.Linear(2, 2).to("meta")).type == "meta"
    assert model_device(torch.nn.Identity()).type == "cpu"


def test_a_flower_node_takes_its_device_from_its_node_config(
    no_gpu: None, tiny_cfg: RunConfig, tmp_path: Path
) -> None:
    import tomli_w
    from flwr.app import RecordDict

    from fedmosaic.engines.flower_client import RUN
    from fedmosaic.engines.flower_node import run_settings
    from fedmosaic.engines.flower_records import put_json
    from fedmosaic.engines.node_data import export_node

    task = build_task(tiny_cfg)
    folder = export_node(task, [task.specs[0].id], tmp_path / "node")
    content = RecordDict()
    # the coordinator's config asks for auto: a node's own hardware is its node config's business
    tree = tiny_cfg.to_toml_dict()
    tree["engine"]["device"] = "auto"
    put_json(content, RUN, round=1, config=tomli_w.dumps(tree))

    def settings_on(node_config: dict[str, str]):
        return run_settings(content, {"data-dir": str(folder), **node_config})[1]

    assert settings_on({}).device == "cpu"
    assert settings_on({"device": "auto"}).device == "cpu"
    with pytest.raises(ConfigError, match=r"^node-config device: cuda is not available"):
        settings_on({"device": "cuda"})


@pytest.mark.parametrize("fusion", ["mean", "concat", "attention"])
def test_fusion_makes_no_cpu_tensor_beside_a_device_model(fusion: str) -> None:
    # a mask made on the CPU beside device embeddings would fail on a GPU; meta fails the same way
    from fedmosaic.models.multimodal import MultimodalClassifier

    encoders = {"image": torch.nn.Identity(), "text": torch.nn.Identity()}
    model = MultimodalClassifier(encoders, 8, 3, fusion=fusion).to("meta")
    both = {m: torch.ones(4, 8, device="meta") for m in ("image", "text")}
    for embeddings in (both, {"image": both["image"]}):
        assert model.classify(embeddings).device.type == "meta"
