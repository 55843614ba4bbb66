"""Errors that leak nothing: no local variables anywhere, one line on the terminal, the traceback in a file.

An unexpected exception in ``fedmosaic run`` (or a pipeline step) prints one line: its type and
message plus where the full traceback went (``error.log`` in the run folder, or a temporary file when
there is no folder yet), written in Python's standard format, which has no local variables. An
exception that escapes a command anyway is printed by typer without locals. Known failure kinds (an
unwritable ``--out``, a missing client folder in the pipeline) are one line naming the path, found
before the data is loaded.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import TINY_OVERRIDES
from fedmosaic import runner
from fedmosaic.cli import app
from fedmosaic.core.errors import RoundFailed
from fedmosaic.data import tasks

# Built at run time, so it can only reach an output as the value of a variable, never as source code.
SECRET = "".join(["PRIVATE", "-SAMPLE-", str(4242 * 2)])


def run_cli(*args: str) -> Any:
    sets = [part for item in TINY_OVERRIDES for part in ("--set", item)]
    return CliRunner().invoke(app, ["run", "-q", *sets, *args])


def explode(*args: Any, **kwargs: Any) -> Any:
    private_samples = [SECRET] * 3  # what a client's data looks like to a traceback with locals
    weights = {"w": SECRET}
    raise RuntimeError(f"boom after {len(private_samples) + len(weights)} steps\nsecond line of the message")


def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(cfg: Any) -> Any:
        raise AssertionError("the data set was loaded before the failure was detected")

    monkeypatch.setattr(tasks, "load_data", refuse)


def test_typer_never_prints_local_variables() -> None:
    assert app.pretty_exceptions_show_locals is False


def test_an_unexpected_error_in_a_run_is_one_line_and_its_traceback_is_in_the_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "_execute", explode)  # after config.toml is written: the folder holds a run
    out = tmp_path / "run"
    result = run_cli("--out", str(out))
    assert result.exit_code == 1, result.output
    log = out / "error.log"
    assert result.stderr.splitlines() == [
        f"error: unexpected RuntimeError: boom after 4 steps ... (full traceback: {log})"
    ]
    assert result.stdout == ""
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: boom after 4 steps" in text
    assert "in explode" in text  # where it happened: file, line, function
    assert SECRET not in text and SECRET not in result.output


def test_any_fedmosaic_error_in_a_run_is_its_one_line_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI catches the one base class: a RoundFailed from deep in an engine is a line like a
    ConfigError, not an unexpected error with a traceback file."""

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise RoundFailed("robustness.min_clients: round 1: 1 usable of 4 replies")

    monkeypatch.setattr(runner, "_execute", fail)
    out = tmp_path / "run"
    result = run_cli("--out", str(out))
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == ["error: robustness.min_clients: round 1: 1 usable of 4 replies"]
    assert not (out / "error.log").exists()


def test_without_a_run_folder_the_traceback_goes_to_a_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "build_task", explode)  # before anything is written
    out = tmp_path / "run"
    result = run_cli("--out", str(out))
    assert result.exit_code == 1, result.output
    match = re.fullmatch(
        r"error: unexpected RuntimeError: .* \(full traceback: (.+)\)", result.stderr.strip()
    )
    assert match, result.stderr
    log = Path(match.group(1))
    try:
        assert log.name.startswith("fedmosaic-error-") and log.parent != out
        assert "RuntimeError" in log.read_text() and SECRET not in log.read_text()
    finally:
        log.unlink()
    assert not out.exists()  # the failed run left no folder


def test_an_escaping_exception_is_printed_without_locals(tmp_path: Path) -> None:
    """The typer/rich path (an exception no command catches) in a real process: no locals."""
    script = textwrap.dedent(
        """
        import sys
        import fedmosaic.algorithms.registry as registry
        from fedmosaic.cli import main

        def algorithm_names():
            private_samples = "".join(["PRIVATE", "-SAMPLE-", str(4242 * 2)])
            raise RuntimeError("no algorithms today")

        registry.algorithm_names = algorithm_names
        sys.argv = ["fedmosaic", "algorithms"]
        main()
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode != 0
    assert "no algorithms today" in proc.stderr
    assert SECRET not in proc.stderr + proc.stdout


def test_an_unwritable_out_is_one_line_naming_it_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_loading(monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_cli("--out", str(blocker / "run"))
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: --out: cannot create {blocker / 'run'}: Not a directory"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_one_line_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_loading(monkeypatch)
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        result = run_cli("--out", str(parent / "run"))
    finally:
        parent.chmod(0o700)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: --out: cannot create {parent / 'run'}: Permission denied"]


def test_a_missing_client_folder_in_the_pipeline_is_one_line_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    root = tmp_path / "root"
    sets = [
        part
        for item in [*TINY_OVERRIDES, "algorithm.name=gvf", "algorithm.dim=16"]
        for part in ("--set", item)
    ]
    result = CliRunner().invoke(app, ["init-root", "--root", str(root), *sets])
    assert result.exit_code == 0, result.output
    shutil.rmtree(root / "client_3")
    no_loading(monkeypatch)
    # Without --client the coordinator trains the planned clients whose folders it holds (a site runs
    # its own); asked for a client whose folder is gone, it says so in one line.
    result = CliRunner().invoke(app, ["train-clients", "--root", str(root), "--client", "client_3"])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"error: --client: {root / 'client_3'} holds no data of client_3 (no node.json); "
        "run its steps at its site"
    ]


def test_an_unexpected_error_in_a_pipeline_step_goes_to_the_root_error_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedmosaic.engines.files import FilePipeline

    root = tmp_path / "root"
    sets = [
        part
        for item in [*TINY_OVERRIDES, "algorithm.name=gvf", "algorithm.dim=16"]
        for part in ("--set", item)
    ]
    assert CliRunner().invoke(app, ["init-root", "--root", str(root), *sets]).exit_code == 0
    monkeypatch.setattr(FilePipeline, "_client", explode)
    result = CliRunner().invoke(app, ["train-clients", "--root", str(root)])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().endswith(f"(full traceback: {root / 'error.log'})")
    assert SECRET not in (root / "error.log").read_text()
