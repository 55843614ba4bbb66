"""From files and ``--set key.sub=value`` overrides to a validated :class:`RunConfig`.

TOML is parsed here and overrides applied to the raw tree before validation, so an override is
checked exactly like the same key written in the file.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fedmosaic.config.error_lines import format_error
from fedmosaic.config.run_config import RunConfig
from fedmosaic.core.errors import ConfigError


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal if it parses (``3``, ``0.1``, ``true``, ``[..]``), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.sub=value`` override to a raw config dict."""
    key, sep, value = assignment.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set: expected KEY=VALUE such as rounds=5, got {assignment!r}")
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is a value, not a table")
        node = child
    node[parts[-1]] = parse_value(value.strip())


def default_config_path() -> Path:
    """The embedded default config (``fedmosaic/configs/default.toml``)."""
    return Path(str(resources.files("fedmosaic") / "configs" / "default.toml"))


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; any problem becomes one :class:`ConfigError` line."""
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"--config: no such file {str(path)!r}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None


def validate(tree: dict[str, Any]) -> RunConfig:
    """Validate a raw config dict into a :class:`RunConfig` (one-line :class:`ConfigError` on failure)."""
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_error(exc)) from None


def with_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """``cfg`` with ``key=value`` overrides applied, validated like ``--set`` on the command line."""
    tree = cfg.to_toml_dict()
    for assignment in overrides:
        apply_override(tree, assignment)
    return validate(tree)


def load_config(
    path: Path | None = None, overrides: list[str] | None = None, plugins: list[str] | None = None
) -> RunConfig:
    """Load ``path`` (default: the embedded default) and apply ``key=value`` overrides.

    ``plugins`` (``--plugin``) are added to the config's own ``plugins`` list, so they are saved
    with the run and every later step of it loads them too.
    """
    tree = read_toml(path or default_config_path())
    for assignment in overrides or []:
        apply_override(tree, assignment)
    if plugins:
        listed = tree.get("plugins", [])
        if isinstance(listed, list):  # anything else fails validation with its own message
            tree["plugins"] = list(dict.fromkeys([*listed, *plugins]))
    return validate(tree)
