"""The ``fedmosaic`` command: run, resume, report, list what is available, the file pipeline's steps.

Errors are lines, never tracebacks on the terminal (:mod:`.lines`). The package's modules: ``app``
(the typer app, its consoles, ``main``), ``lines`` (errors as lines), ``progress`` (round
progress), ``tables`` (results tables), ``commands`` (run, report, listings), ``pipeline`` (the
file pipeline's steps), ``worker`` (node-worker). Importing the package registers every command;
nothing here imports torch until a command needs it, so ``--version`` and ``--help`` answer at once.
"""

# Importing a module registers its commands, and --help lists them in that order (this line's, which
# the import sorter keeps alphabetical).
from fedmosaic.cli import commands, pipeline, worker
from fedmosaic.cli.app import app, main
from fedmosaic.cli.lines import ERROR_LOG, MESSAGE_CHARS, write_traceback

__all__ = ["ERROR_LOG", "MESSAGE_CHARS", "app", "commands", "main", "pipeline", "worker", "write_traceback"]
