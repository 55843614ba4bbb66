"""The step-by-step file pipeline: same numbers as the local engine, order enforced, idempotent steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedmosaic.cli import app
from fedmosaic.config import RunConfig
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.federation import Federation
from fedmosaic.engines.files import AlreadyDone, FilePipeline, PipelineError
from fedmosaic.engines.run_folder import read_jsonl


def _gvf(tiny_cfg: RunConfig) -> RunConfig:
    tree = tiny_cfg.to_toml_dict()
    tree["algorithm"] = {"name": "gvf", "dim": 16}
    return RunConfig.model_validate(tree)


def test_pipeline_matches_the_local_engine_and_enforces_order(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    cfg = _gvf(tiny_cfg)
    root = tmp_path / "root"
    pipeline = FilePipeline.init(root, cfg)
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("client_"))[:1] == ["client_0"]
    assert (root / "client_0" / "node.json").is_file() and (root / "client_0" / "data.npz").is_file()
    assert (root / "server" / "task.json").is_file() and (root / "server" / "data.npz").is_file()

    with pytest.raises(PipelineError, match="next step is train-clients"):
        pipeline.aggregate_vectors()
    with pytest.raises(PipelineError, match="next step is train-clients"):
        pipeline.update_clients()

    first = pipeline.progress["planned"][0]
    assert pipeline.train_clients(first) == [first]  # one site at a time
    with pytest.raises(AlreadyDone, match="already done"):  # idempotent: nothing left for it
        pipeline.train_clients(first)
    with pytest.raises(PipelineError, match="next step is train-clients"):
        pipeline.aggregate_vectors()
    pipeline.train_clients()  # the others
    with pytest.raises(PipelineError, match="next step is aggregate-vectors"):
        pipeline.train_clients()
    pipeline.aggregate_vectors()
    assert pipeline.update_clients(first) is None  # the round stays open until every client updated
    pipeline.update_clients()
    for _ in range(cfg.rounds - 1):
        pipeline.train_clients()
        pipeline.aggregate_vectors()
        pipeline.update_clients()
    with pytest.raises(PipelineError, match="finished"):
        pipeline.train_clients()

    Federation.from_config(cfg, build_task(cfg), folder=tmp_path / "engine").run()
    assert read_jsonl(root / "metrics.jsonl") == read_jsonl(
        tmp_path / "engine" / "metrics.jsonl"
    )  # same seed, same numbers


def test_cli_steps_and_out_of_order_message(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    root = tmp_path / "root"
    runner = CliRunner()
    settings = ["--set", "algorithm.name=local", "--set", "rounds=1", "--set", "task.options.n_samples=200"]
    result = runner.invoke(app, ["init-root", "--root", str(root), *settings])
    assert result.exit_code == 0, result.output
    assert "next step train-clients" in result.output
    result = runner.invoke(app, ["update-clients", "--root", str(root)])
    assert result.exit_code == 2 and "next step is train-clients" in result.output
    for step in ("train-clients", "aggregate-vectors", "update-clients"):
        result = runner.invoke(app, [step, "--root", str(root)])
        assert result.exit_code == 0, result.output
    assert "all rounds done" in result.output
    assert json.loads((root / "summary.json").read_text())["rounds"] == 1


class _Crash(RuntimeError):
    """Stands in for a site's process dying mid-step."""


def test_a_step_killed_half_way_reruns_to_the_same_numbers(
    tiny_cfg: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedmosaic.engines.files_mail as mail

    cfg = _gvf(tiny_cfg)
    reference = FilePipeline.init(tmp_path / "reference", cfg)
    for _ in range(cfg.rounds):
        reference.train_clients()
        reference.aggregate_vectors()
        reference.update_clients()

    pipeline = FilePipeline.init(tmp_path / "crashed", cfg)
    save = mail.save_message

    def dies_writing_the_reply(path: Path, message) -> None:
        if path.name == "outbox.safetensors":
            raise _Crash  # the new state is on disk, the reply is not
        save(path, message)

    monkeypatch.setattr(mail, "save_message", dies_writing_the_reply)
    with pytest.raises(_Crash):
        pipeline.train_clients()
    monkeypatch.setattr(mail, "save_message", save)
    pipeline.train_clients()
    pipeline.aggregate_vectors()

    plan = FilePipeline._plan
    monkeypatch.setattr(FilePipeline, "_plan", lambda self, r: (_ for _ in ()).throw(_Crash()))
    with pytest.raises(_Crash):
        pipeline.update_clients()  # round 1's row is written, round 2 is not planned
    monkeypatch.setattr(FilePipeline, "_plan", plan)
    pipeline.update_clients()
    for _ in range(cfg.rounds - 1):
        pipeline.train_clients()
        pipeline.aggregate_vectors()
        pipeline.update_clients()
    assert (tmp_path / "crashed" / "metrics.jsonl").read_text() == (
        tmp_path / "reference" / "metrics.jsonl"
    ).read_text()


def test_fedmekt_through_the_pipeline_matches_the_local_engine(tmp_path: Path) -> None:
    # fedmekt checks every reply against the round's proxy batch, which the server must keep across
    # the pipeline's reloads (it once did not: aggregate-vectors failed on every reply)
    from fedmosaic.config import load_config
    from mhealth_files import mhealth_overrides, write_mhealth

    overrides = [*mhealth_overrides(write_mhealth(tmp_path / "mh")), "algorithm.name=fedmekt"]
    # 2 server epochs, not the default 40: the same code path, a twentieth of the server's steps
    fast = ["algorithm.proxy_batch=12", "algorithm.probe_max_iter=500", "algorithm.server_epochs=2"]
    cfg = load_config(None, [*overrides, *fast])
    pipeline = FilePipeline.init(tmp_path / "root", cfg)
    for _ in range(cfg.rounds):
        pipeline.train_clients()
        pipeline.aggregate_vectors()
        pipeline.update_clients()
    Federation.from_config(cfg, build_task(cfg), folder=tmp_path / "engine").run()
    assert read_jsonl(tmp_path / "root" / "metrics.jsonl") == read_jsonl(
        tmp_path / "engine" / "metrics.jsonl"
    )
