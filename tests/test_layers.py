"""Dependencies point down: the import-linter contracts in pyproject.toml hold, and every exception
fedmosaic raises to users lives in the leaf module ``fedmosaic.core.errors`` under one base class."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import fedmosaic
from fedmosaic.core import errors

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(fedmosaic.__file__).resolve().parents[1]  # the fedmosaic these tests import


def test_the_import_contracts_hold() -> None:
    """``lint-imports`` on pyproject.toml's contracts, over the fedmosaic this session imports."""
    code = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run(
        [sys.executable, "-c", code, "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert "No module named 'importlinter'" not in proc.stderr, "pip install -e '.[dev]' (import-linter)"
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def _exception_classes(path: Path) -> list[str]:
    """Public classes in ``path`` with a base named like an exception or defined in core.errors."""
    ours = {name for name, _ in inspect.getmembers(errors, inspect.isclass)}
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            bases = [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases]
            if any(b.endswith(("Error", "Exception", "Warning")) or b in ours for b in bases):
                found.append(node.name)
    return found


def test_exceptions_are_defined_only_in_core_errors() -> None:
    elsewhere = {
        str(path.relative_to(SRC)): names
        for path in sorted((SRC / "fedmosaic").rglob("*.py"))
        if path.name != "errors.py" and (names := _exception_classes(path))
    }
    assert not elsewhere, f"define these in fedmosaic/core/errors.py (and re-export): {elsewhere}"


def test_every_error_is_a_fedmosaic_error() -> None:
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert len(classes) > 10
    for cls in classes:
        if cls is not errors.FedmosaicWarning:
            assert issubclass(cls, errors.FedmosaicError), cls.__name__


def test_moved_exceptions_keep_their_old_import_paths() -> None:
    from fedmosaic import config
    from fedmosaic.data import registry, tasks
    from fedmosaic.engines import files, folder_lock, node_data, screening
    from fedmosaic.reporting import report

    assert config.ConfigError is errors.ConfigError
    assert registry.DataError is errors.DataError and tasks.TaskSplitError is errors.TaskSplitError
    assert report.ReportError is errors.ReportError and screening.RoundFailed is errors.RoundFailed
    assert (files.PipelineError, files.NotDue, files.AlreadyDone) == (
        errors.PipelineError,
        errors.NotDue,
        errors.AlreadyDone,
    )
    assert folder_lock.FolderInUse is errors.FolderInUse and node_data.NodeDataError is errors.NodeDataError
    # The built-in bases callers caught before the move still catch them.
    assert issubclass(errors.DataError, ValueError) and issubclass(errors.RoundFailed, RuntimeError)
