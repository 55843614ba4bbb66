"""Errors as lines: what the user sees when a command fails, and where the full story goes.

A known failure (:class:`~fedmosaic.core.errors.FedmosaicError`) is its own one line, exit code 2;
anything else is one line with the exception's type and message plus the file holding the full
traceback (``error.log`` in the run folder or pipeline root, else a temporary file), exit code 1.
Tracebacks are written in Python's standard format, which holds no local variables: label arrays,
weights or a client's samples never reach a terminal or a log through an error.
"""

from __future__ import annotations

import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import click
import typer
from rich.markup import escape

from fedmosaic.cli.app import err

ERROR_LOG = "error.log"
MESSAGE_CHARS = 300  # an unexpected error's message on the terminal: its first line, at most this long


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` as error lines on stderr and exit with ``code``."""
    # escaped: a message may hold brackets (pip install "fedmosaic[tracking]") rich would read as markup.
    # A message of several lines is several problems found at once (one per line), each an error line.
    for line in message.splitlines() or [""]:
        err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def warning(line: str) -> None:
    """A line the user must see that does not stop the run (a checkpoint fallback, lost clients)."""
    err.print(f"[bold yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)


def _known_errors() -> type[Exception]:
    """Failures whose message is the whole story (one line naming a key or path): no traceback."""
    from fedmosaic.core.errors import FedmosaicError

    return FedmosaicError


def _one_line(exc: BaseException) -> str:
    """``Type: message`` of ``exc``, its message cut to its first line and :data:`MESSAGE_CHARS`."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    message = lines[0] if lines else ""
    if len(message) > MESSAGE_CHARS or len(lines) > 1:
        message = message[:MESSAGE_CHARS].rstrip() + " ..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _holds_results(folder: Path) -> bool:
    """A run folder (config.toml) or a pipeline root (progress.json): where an error.log belongs."""
    return (folder / "config.toml").is_file() or (folder / "progress.json").is_file()


def write_traceback(exc: BaseException, folder: Path | None) -> Path:
    """Append ``exc``'s full traceback to ``folder/error.log`` (a run folder or pipeline root), else to a
    new temporary file; the file's path.

    Python's standard format: file, line and code of each frame, never their local variables. The
    folder's lock is taken for the write; when another process holds it, the temporary file is used.
    """
    from fedmosaic.engines.folder_lock import FolderLock

    text = f"--- {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: fedmosaic {' '.join(sys.argv[1:2])}\n" + "".join(
        traceback.format_exception(exc)
    )
    if folder is not None and _holds_results(folder):
        try:
            with FolderLock(folder, "error log"), (folder / ERROR_LOG).open("a", encoding="utf-8") as log:
                log.write(text)
            return folder / ERROR_LOG
        except (OSError, ValueError):  # in use, or unwritable: fall back to a file of our own
            pass
    with tempfile.NamedTemporaryFile(
        "w", prefix="fedmosaic-error-", suffix=".log", delete=False, encoding="utf-8"
    ) as handle:
        handle.write(text)
    return Path(handle.name)


def _unexpected(exc: Exception, folder: Path | None) -> NoReturn:
    where = write_traceback(exc, folder)
    fail(f"unexpected {_one_line(exc)} (full traceback: {where})", code=1)


@contextmanager
def errors_as_lines(folder: Callable[[], Path | None]) -> Iterator[None]:
    """Known failures as their one line (exit 2), anything else as one line + a traceback file (exit 1).

    ``folder`` gives the run folder or pipeline root at the time of the failure (it may not exist yet).
    """
    try:
        yield
    except (typer.Exit, typer.Abort, click.ClickException, KeyboardInterrupt):
        raise
    except _known_errors() as exc:
        fail(str(exc))
    except Exception as exc:
        _unexpected(exc, folder())
