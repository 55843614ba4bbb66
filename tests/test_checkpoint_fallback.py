"""A damaged last checkpoint falls back to the previous round with a warning, and the resumed run ends
with exactly an uninterrupted run's metrics; a checkpoint nothing can stand in for is one line naming
the file, found before the data is loaded.

Damage: a truncated or garbled ``server_rNNNNN.safetensors`` (found by the SHA-256 the marker
records), a marker naming a file outside ``checkpoints/``, a garbled ``checkpoint.json`` (through the
CLI, in a baseline's folder). ``fedavg``
keeps its model in the server state, ``local`` every client's model in the client-state store, which
keeps the states the fallback round needs even when the run was killed inside the next round.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import TINY_OVERRIDES
from fedmosaic import Federation
from fedmosaic.cli import app
from fedmosaic.config import RunConfig, load_config
from fedmosaic.core.errors import CheckpointError, FedmosaicWarning
from fedmosaic.data import tasks
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.run_folder import RunFolder

ROUNDS = 3
OVERRIDES = [*TINY_OVERRIDES, f"rounds={ROUNDS}", "output.plots=false"]


def config(algorithm: str) -> RunConfig:
    return load_config(None, [*OVERRIDES, f"algorithm.name={algorithm}"])


def run(cfg: RunConfig, folder: Path) -> None:
    Federation.from_config(cfg, build_task(cfg), folder=folder).run()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """metrics.jsonl of an uninterrupted run, per algorithm."""
    out = {}
    for algorithm in ("fedavg", "local"):
        folder = tmp_path_factory.mktemp(algorithm) / "run"
        run(config(algorithm), folder)
        out[algorithm] = (folder / "metrics.jsonl").read_bytes()
    return out


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble(path: Path) -> None:
    """Flip the last bytes (tensor data when there is any): the header still parses, only the checksum
    recorded at commit can tell."""
    data = bytearray(path.read_bytes())
    data[-8:] = bytes(255 - b for b in data[-8:])
    path.write_bytes(bytes(data))


def damage(folder: Path, how: str) -> None:
    checkpoints = folder / "checkpoints"
    state = checkpoints / json.loads((checkpoints / "checkpoint.json").read_text())["server_state"]
    if how == "truncated state":
        truncate(state)
    elif how == "garbled state":
        garble(state)
    elif how == "garbled marker":
        (checkpoints / "checkpoint.json").write_text('{"round": 4, "server_st')
    elif how == "marker pointing outside":
        marker = json.loads((checkpoints / "checkpoint.json").read_text())
        (checkpoints / "checkpoint.json").write_text(json.dumps({**marker, "server_state": "../config.toml"}))


@pytest.mark.parametrize(
    "algorithm, how",
    [
        ("fedavg", "truncated state"),
        ("fedavg", "garbled state"),
        ("fedavg", "marker pointing outside"),
        ("local", "garbled state"),
    ],
)
def test_a_damaged_last_checkpoint_falls_back_one_round_with_the_same_metrics(
    tmp_path: Path, reference: dict[str, bytes], algorithm: str, how: str
) -> None:
    cfg = config(algorithm)
    folder = tmp_path / "run"
    run(cfg, folder)
    assert len(list((folder / "checkpoints").glob("server_r*.safetensors"))) == 2  # this round's and the last
    damage(folder, how)
    with pytest.warns(
        FedmosaicWarning,
        match=rf"is damaged .*; continuing from round {ROUNDS - 1}, the checkpoint before it",
    ):
        federation = Federation.from_config(cfg, build_task(cfg), folder=folder)
    assert federation.round == ROUNDS - 1
    federation.run()
    assert (folder / "metrics.jsonl").read_bytes() == reference[algorithm]
    assert list((folder / "checkpoints").glob("*.damaged"))  # the evidence is kept


def test_a_run_killed_inside_the_next_round_still_falls_back(
    tmp_path: Path, reference: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last round's client states are written, its commit never happens, the checkpoint before it
    is damaged: the clients' states of the round before that must still be there."""
    cfg = config("local")
    folder = tmp_path / "run"
    federation = Federation.from_config(cfg, build_task(cfg), folder=folder)
    for _ in federation.rounds(ROUNDS - 1):
        pass

    def killed(self: RunFolder, *args: Any) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(RunFolder, "commit", killed)
        with pytest.raises(KeyboardInterrupt):
            federation.step()
    federation.close()
    damage(folder, "garbled state")
    with pytest.warns(FedmosaicWarning, match=f"continuing from round {ROUNDS - 2}"):
        federation = Federation.from_config(cfg, build_task(cfg), folder=folder)
    federation.run()
    assert (folder / "metrics.jsonl").read_bytes() == reference["local"]


def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(cfg: Any) -> Any:
        raise AssertionError("the data set was loaded before the checkpoint was checked")

    monkeypatch.setattr(tasks, "load_data", refuse)


def test_the_cli_warns_and_resumes_from_the_previous_round(
    tmp_path: Path, reference: dict[str, bytes]
) -> None:
    out = tmp_path / "run"
    sets = [part for item in [*OVERRIDES, 'compare=["local"]'] for part in ("--set", item)]
    assert CliRunner().invoke(app, ["run", "-q", "--out", str(out), *sets]).exit_code == 0
    damage(out, "truncated state")
    damage(out / "baselines" / "local", "garbled marker")
    result = CliRunner().invoke(app, ["run", "-q", "--resume", str(out)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, result.stderr
    assert warnings[0].startswith(
        f"warning: {out / 'checkpoints' / f'server_r{ROUNDS:05d}.safetensors'} is damaged"
    )
    assert warnings[1].startswith(
        f"warning: {out / 'baselines' / 'local' / 'checkpoints' / 'checkpoint.json'}"
    )
    assert (out / "metrics.jsonl").read_bytes() == reference["fedavg"]
    assert (out / "baselines" / "local" / "metrics.jsonl").read_bytes() == reference["local"]


def test_no_checkpoint_to_fall_back_to_is_one_line_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config("fedavg")
    folder = tmp_path / "run"
    run(cfg, folder)
    damage(folder, "garbled state")
    garble(folder / "checkpoints" / f"server_r{ROUNDS - 1:05d}.safetensors")
    no_loading(monkeypatch)
    result = CliRunner().invoke(app, ["run", "-q", "--resume", str(folder)])
    assert result.exit_code == 2, result.output
    state = folder / "checkpoints" / f"server_r{ROUNDS:05d}.safetensors"
    assert result.stderr.splitlines() == [
        f"error: checkpoints: {state} is damaged (its bytes differ from those committed (SHA-256 mismatch)) "
        "and no earlier checkpoint can stand in; the run cannot be continued: start it again"
    ]
    with pytest.raises(CheckpointError, match="no earlier checkpoint"):
        RunFolder(folder).recover()


def test_a_damaged_fingerprint_is_one_line_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config("fedavg")
    folder = tmp_path / "run"
    run(cfg, folder)
    truncate(folder / "checkpoints" / "config.json")
    no_loading(monkeypatch)
    result = CliRunner().invoke(app, ["run", "-q", "--resume", str(folder)])
    assert result.exit_code == 2, result.output
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(
        f"error: checkpoints: {folder / 'checkpoints' / 'config.json'} is damaged ("
    )
