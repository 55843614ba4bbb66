"""The exceptions fedmosaic raises to its users: a leaf module, so raising one imports nothing else.

Every failure whose message is the whole story (one line naming the config key, file, client or run
folder at fault) is a :class:`FedmosaicError`; the CLI catches that one class and prints the line,
without a traceback. Anything else is a bug or an environment problem and gets its traceback written
to a file. Each class also derives from the built-in exception it has always been (``ValueError``,
``RuntimeError``), so callers that caught those keep working.

The modules that raise them re-export them under their old names (``fedmosaic.config.ConfigError``,
``fedmosaic.data.registry.DataError``, ``fedmosaic.engines.files.AlreadyDone``, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


class FedmosaicError(Exception):
    """A failure explained by its one-line message (the key, file or client at fault); the base of
    every exception fedmosaic raises to its users."""


class FedmosaicWarning(UserWarning):
    """Something the user must know that does not stop the run (a checkpoint fallback, lost clients)."""


# ------------------------------------------------------------------------------------- configuration


class ConfigError(FedmosaicError, ValueError):
    """A configuration problem, as one line: ``key: what was expected``."""


class MissingExtraError(ConfigError, ImportError):
    """An optional feature whose package is not installed, as one line naming the extra to install.

    A :class:`ConfigError` so the CLI reports it like any other bad setting (one line, nothing
    written), and an :class:`ImportError` so Python callers can catch it as the missing import it is.
    """


class PluginError(ConfigError):
    """A plug-in that cannot be loaded or that clashes with another, as one line naming it."""


# ---------------------------------------------------------------------------------------------- data


class DataError(FedmosaicError, ValueError):
    """Bad input data, as one line naming the file (and line): ``path:12: reason``."""


class FileDataError(DataError):
    """One file's problem, ``path: reason``; ``path`` and ``reason`` kept apart so that a loader can
    hand them to ``LoadContext.bad`` under the row or sample that named the file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class PathEscapeError(FileDataError):
    """A path that resolves outside its root (or cannot be resolved)."""


class ImageReadError(FileDataError):
    """An image file that is missing or does not decode."""


class AudioReadError(FileDataError):
    """An audio file that is missing, truncated, empty or unreadable."""


class TaskSplitError(FedmosaicError, ValueError):
    """The data set cannot be split as configured (message names the config key)."""


class NodeDataError(FedmosaicError, ValueError):
    """A node folder is missing, malformed, or cannot provide the requested modalities."""


# ------------------------------------------------------------------------------------- runs, engines


class CheckpointError(FedmosaicError, ValueError):
    """A run's checkpoint cannot be read and no earlier one can stand in; one line naming the file."""


class RoundFailed(FedmosaicError, RuntimeError):
    """Too few usable replies in a round under ``robustness.below_min = "fail"``."""


class FolderInUse(ConfigError):
    """Another live process holds the folder's lock; one line naming it."""


class PipelineError(ConfigError):
    """A file-pipeline step that cannot run (missing files, an unknown client); one line naming what to do."""


class NotDue(PipelineError):
    """The step must wait: for another step, or for replies (the clients still pending are named)."""


class AlreadyDone(PipelineError):
    """Nothing is left for this step: it already happened. Not a failure (the CLI exits 0)."""


class FlowerRunError(FedmosaicError, RuntimeError):
    """The federation did not behave: too few nodes, a node failed or did not answer in time."""


class ReportError(FedmosaicError, ValueError):
    """A folder given to the report is not a finished run."""


class WorkerError(FedmosaicError, RuntimeError):
    """A node worker could not answer: a malformed message, a client exception, a refused channel."""
