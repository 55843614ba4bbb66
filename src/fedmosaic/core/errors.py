"""The exceptions every layer may raise: a leaf module, so raising one imports nothing else."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem, as one line: ``key: what was expected``."""


class CheckpointError(ValueError):
    """A run's checkpoint cannot be read and no earlier one can stand in; one line naming the file."""


class FedmosaicWarning(UserWarning):
    """Something the user must know that does not stop the run (a checkpoint fallback, lost clients)."""


class MissingExtraError(ConfigError, ImportError):
    """An optional feature whose package is not installed, as one line naming the extra to install.

    A :class:`ConfigError` so the CLI reports it like any other bad setting (one line, nothing
    written), and an :class:`ImportError` so Python callers can catch it as the missing import it is.
    """


class PluginError(ConfigError):
    """A plug-in that cannot be loaded or that clashes with another, as one line naming it."""
