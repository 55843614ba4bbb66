"""A resumed run continues under the config it started with: an edited config.toml is refused naming
the keys, extending rounds is explicit and recorded, and paths are stored resolved."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from conftest import TINY_OVERRIDES
from fedmosaic import Federation, runner
from fedmosaic.config import ConfigError, load_config
from fedmosaic.engines.run_folder import config_sha256, read_jsonl
from mhealth_files import mhealth_overrides, write_mhealth


class Stop(Exception):
    pass


def stop_after(n: int):
    def factory(name: str, rounds: int):
        def update(round: int, row: dict[str, Any]) -> None:
            if round == n:
                raise Stop

        return update

    return factory


def edit_config(folder: Path, **changes: Any) -> None:
    tree = tomllib.loads((folder / "config.toml").read_text())
    for dotted, value in changes.items():
        node = tree
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    (folder / "config.toml").write_text(tomli_w.dumps(tree))


@pytest.fixture
def cut_run(tmp_path: Path) -> Path:
    """A 3-round run (fedavg + the local baseline) interrupted after its first round."""
    cfg = load_config(None, [*TINY_OVERRIDES, "rounds=3", "output.plots=false", 'compare=["local"]'])
    with pytest.raises(Stop):
        runner.start(cfg, tmp_path / "run", stop_after(1))
    return tmp_path / "run"


def test_an_edited_learning_rate_is_refused_naming_the_key(cut_run: Path) -> None:
    before = (cut_run / "metrics.jsonl").read_text()
    edit_config(cut_run, training__lr=0.01)
    with pytest.raises(ConfigError) as err:
        runner.resume(cut_run)
    message = str(err.value)
    assert message.startswith(f"--resume: {cut_run} was run with another config; changed since it started: ")
    assert "training.lr 0.003 -> 0.01" in message and "\n" not in message
    assert (cut_run / "metrics.jsonl").read_text() == before


def test_lowering_rounds_is_refused_and_extending_is_explicit_and_recorded(
    cut_run: Path, tmp_path: Path
) -> None:
    edit_config(cut_run, rounds=2)
    with pytest.raises(ConfigError, match=r"rounds 3 -> 2.*--rounds N"):
        runner.resume(cut_run)
    edit_config(cut_run, rounds=3)  # undone: the folder is as it was
    with pytest.raises(ConfigError, match=r"^--rounds: 2 must exceed the run's 3 rounds"):
        runner.resume(cut_run, rounds=2)

    result = runner.resume(cut_run, rounds=4)
    for folder in (cut_run, cut_run / "baselines" / "local"):  # the baseline starts after the extension
        assert [r["round"] for r in read_jsonl(folder / "metrics.jsonl")] == [1, 2, 3, 4]
        assert tomllib.loads((folder / "config.toml").read_text())["rounds"] == 4
    record = json.loads((cut_run / "checkpoints" / "config.json").read_text())
    assert record["extended"] == [{"from": 3, "to": 4, "after_round": 1}]
    assert result.summaries["fedavg"]["rounds"] == 4

    # The first three rounds are those of an uninterrupted 3-round run, round 4 comes after them.
    cfg = load_config(None, [*TINY_OVERRIDES, "rounds=3", "output.plots=false", 'compare=["local"]'])
    runner.start(cfg, tmp_path / "full")
    full = read_jsonl(tmp_path / "full" / "metrics.jsonl")
    resumed = read_jsonl(cut_run / "metrics.jsonl")
    assert [r["train"] for r in resumed[:3]] == [r["train"] for r in full]


def test_operational_keys_may_change(cut_run: Path) -> None:
    edit_config(cut_run, engine__progress=True, output__plots=True)
    assert runner.resume(cut_run).summaries["fedavg"]["rounds"] == 3


def test_federation_over_a_folder_checks_the_config_too(cut_run: Path) -> None:
    cfg = load_config(cut_run / "config.toml", ["training.lr=0.5"])
    with pytest.raises(ConfigError, match=r"^folder: .*training\.lr 0\.003 -> 0\.5"):
        Federation.from_config(cfg, folder=cut_run)


def test_relative_paths_are_stored_resolved_and_resume_works_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_mhealth(tmp_path / "data" / "mhealth")
    monkeypatch.chdir(tmp_path / "data")
    cfg = load_config(None, [*mhealth_overrides(Path("mhealth"), rounds=2), "output.dir=out"])
    assert cfg.task.data_dir == tmp_path / "data" / "mhealth" and cfg.output.dir == tmp_path / "data" / "out"
    with pytest.raises(Stop):
        runner.start(cfg, tmp_path / "run", stop_after(1))
    stored = tomllib.loads((tmp_path / "run" / "config.toml").read_text())
    assert stored["task"]["data_dir"] == str(tmp_path / "data" / "mhealth")

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert runner.resume(tmp_path / "run").summaries["fedavg"]["rounds"] == 2


def _drop_from_fingerprint(folder: Path, *dotted: str) -> None:
    """Make the folder look recorded by a version that did not have these keys yet."""
    path = folder / "checkpoints" / "config.json"
    record = json.loads(path.read_text())
    for key in dotted:
        *parents, leaf = key.split(".")
        node = record["config"]
        for p in parents:
            node = node[p]
        del node[leaf]
    record["sha256"] = config_sha256(record["config"])  # as that version would have written it
    path.write_text(json.dumps(record))


def test_a_folder_recorded_before_a_key_existed_resumes_under_its_old_behaviour(cut_run: Path) -> None:
    _drop_from_fingerprint(cut_run, "task.label_noise_rate", "model.fusion", "engine.device")
    assert runner.resume(cut_run).summaries["fedavg"]["rounds"] == 3


def test_a_key_added_later_is_still_a_change_when_set_to_new_behaviour(cut_run: Path) -> None:
    _drop_from_fingerprint(cut_run, "model.fusion")
    edit_config(cut_run, model__fusion="attention")
    with pytest.raises(ConfigError, match=r"model\.fusion '\(unset\)' -> 'attention'"):
        runner.resume(cut_run)
