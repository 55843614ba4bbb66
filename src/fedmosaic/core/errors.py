"""The exceptions every layer may raise: a leaf module, so raising one imports nothing else."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem, as one line: ``key: what was expected``."""


class PluginError(ConfigError):
    """A plug-in that cannot be loaded or that clashes with another, as one line naming it."""
