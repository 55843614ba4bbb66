"""One pydantic tree for a run, loaded from TOML with ``--set key.sub=value`` overrides.

Every problem is one line naming the key and what was expected (:class:`ConfigError`); a config
with several problems reports all that can be checked together, one line each.

The package's modules, each with one job: :mod:`.sections` (the task, clients, engine and output
blocks), :mod:`.run_config` (:class:`RunConfig` and its cross-block checks), :mod:`.error_lines`
(pydantic errors as one-line messages), :mod:`.loading` (TOML files and overrides to a validated
config). Everything is importable from ``fedmosaic.config`` as before the split.
"""

from fedmosaic.config.error_lines import format_error
from fedmosaic.config.loading import (
    apply_override,
    default_config_path,
    load_config,
    parse_value,
    read_toml,
    validate,
    with_overrides,
)
from fedmosaic.config.run_config import RunConfig, load_plugins
from fedmosaic.config.sections import ClientsConfig, EngineConfig, OutputConfig, TaskConfig, parse_mix
from fedmosaic.core.errors import ConfigError
from fedmosaic.core.settings import ModelConfig, RobustnessConfig, TrainingConfig

__all__ = [
    "ClientsConfig",
    "ConfigError",
    "EngineConfig",
    "ModelConfig",
    "OutputConfig",
    "RobustnessConfig",
    "RunConfig",
    "TaskConfig",
    "TrainingConfig",
    "apply_override",
    "default_config_path",
    "format_error",
    "load_config",
    "load_plugins",
    "parse_mix",
    "parse_value",
    "read_toml",
    "validate",
    "with_overrides",
]
