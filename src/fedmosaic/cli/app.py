"""The typer app and its two consoles: results on stdout, progress, warnings and errors on stderr.

Every command module registers on :data:`app`; ``fedmosaic/cli/__init__.py`` imports them all, so
the app is complete whenever ``fedmosaic.cli`` is imported.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

# pretty_exceptions_show_locals=False: an exception that escapes a command anyway is printed by typer
# without the local variables of each frame (which would hold data and weights).
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Multimodal federated learning.",
    pretty_exceptions_show_locals=False,
)
out = Console()
err = Console(stderr=True)


def _print_version(value: bool) -> None:
    """``--version``: eager, so it answers before any command's options are even parsed."""
    if value:
        from fedmosaic import __version__  # the package is already imported: no torch, no wait

        out.print(f"fedmosaic {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit"),
    ] = False,
) -> None:
    """Multimodal federated learning."""


def main() -> None:
    """Console-script entry point."""
    app(sys.argv[1:])
