"""Starting or resuming a Flower run's results folder (ServerApp run config ``resume``).

A Flower run commits a checkpoint every round into its results folder ``out``, as the local engine
does (:class:`fedmosaic.Federation`). When its ServerApp or SuperLink stops mid-run, a new
``flwr run`` with ``resume = true`` and the same ``out`` continues it: the ServerApp reads the run's
own ``config.toml`` (so ``config`` and ``set`` stay empty), verifies the last checkpoint (a damaged
one falls back to the round before), and goes on at the next round. The clients' states are on the
nodes' disks (node config ``state-dir``, :mod:`fedmosaic.engines.node_states`), under the run key
written here when the run started: the coordinator's name for the run, the same across resumes
(Flower's run id is new with every ``flwr run``). Every message carries the key and the committed
round the run resumed after, so a node that cannot have the states refuses the run at once.

A resumed run can also be given more rounds (run config ``rounds``), finished or not, as
``fedmosaic run --resume DIR --rounds N`` gives a local one: the folder's config and fingerprint
record the extension, and the nodes learn the new count from the config every message carries.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

from fedmosaic.config import RunConfig, load_config
from fedmosaic.core.checkpoint import atomic_write_json
from fedmosaic.core.errors import ConfigError
from fedmosaic.engines.flower_node import parse_overrides
from fedmosaic.engines.node_states import RESUMED_AFTER, RUN_KEY
from fedmosaic.engines.run_folder import RunFolder, default_folder

log = logging.getLogger("fedmosaic.flower")
RUN_KEY_FILE = "flower_run.json"  # in checkpoints/: {"run-key": ...}


def resume_flag(value: object) -> bool:
    """The run config's ``resume``: a TOML boolean (``--run-config "resume=true"``)."""
    if isinstance(value, bool):
        return value
    raise ConfigError(f"resume: expected true or false, got {value!r}")


def load_run(rc: dict[str, Any]) -> tuple[RunConfig, RunFolder, bool]:
    """The fedmosaic config and results folder a ServerApp's run config names, and whether it resumes.

    A new run takes ``config`` and ``set``; a resumed one its folder's own ``config.toml`` (checked
    against the config the run started with), so it cannot continue under other settings.
    """
    if not resume_flag(rc.get("resume", False)):
        path = Path(str(rc["config"])) if rc["config"] else None
        cfg = load_config(path, parse_overrides(str(rc["set"])))
        return cfg, RunFolder(Path(str(rc["out"])) if rc["out"] else default_folder(cfg)), False
    if not rc["out"]:
        raise ConfigError("resume: needs out, the results folder of the run to continue")
    if rc["config"] or rc["set"]:
        raise ConfigError(
            "resume: the run continues under its own config.toml; leave config and set empty "
            "(more rounds: rounds = N)"
        )
    folder = RunFolder(Path(str(rc["out"])))
    if not folder.exists():
        raise ConfigError(f"out: {folder.path} holds no run to resume (no config.toml)")
    return load_config(folder.config), folder, True


def check_start(folder: RunFolder, resume: bool) -> None:
    """Refuse a new run into a folder holding one, and a resume of a run not started on Flower."""
    if not resume and folder.exists():
        raise ConfigError(
            f"out: {folder.path} already holds a run; continue it with resume=true or pick a new folder"
        )
    if resume and not (folder.checkpoints / RUN_KEY_FILE).is_file():
        raise ConfigError(
            f"resume: {folder.path} was not started by the Flower engine (no checkpoints/{RUN_KEY_FILE}); "
            "continue a local run with fedmosaic run --resume"
        )


def start_folder(folder: RunFolder, cfg: RunConfig, resume: bool) -> dict[str, Any]:
    """Write a new run's config and run key, or recover a resumed one's last checkpoint; what every
    message to the nodes says about the run (its key and the committed round it resumed after)."""
    path = folder.checkpoints / RUN_KEY_FILE
    if not resume:
        key = uuid.uuid4().hex
        atomic_write_json(path, {RUN_KEY: key})  # before config.toml: a run folder always has its key
        folder.write_config(cfg.to_toml_dict())
        return {RUN_KEY: key, RESUMED_AFTER: 0}
    folder.check_config(cfg.to_toml_dict(), key="resume")
    if note := folder.recover():
        log.warning(note)
    try:
        key = str(json.loads(path.read_text())[RUN_KEY])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"resume: {path} is damaged ({type(exc).__name__}); the run cannot continue"
        ) from None
    committed = int(json.loads(folder.marker.read_text())["round"]) if folder.marker.exists() else 0
    log.info("resuming run %s after round %d", key, committed)
    return {RUN_KEY: key, RESUMED_AFTER: committed}


def extend_rounds(folder: RunFolder, cfg: RunConfig, rounds: object, resume: bool) -> RunConfig:
    """The run config's ``rounds``: with ``resume = true``, the run's rounds raised to it (0: as they
    are); the config the run continues under. Checked before anything is written."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ConfigError(f"rounds: expected a whole number of rounds (0: the run's own), got {rounds!r}")
    if rounds == 0:
        return cfg
    if not resume:
        raise ConfigError('rounds: extends a resumed run (resume = true); a new run takes set = "rounds=N"')
    folder.check_config(cfg.to_toml_dict(), key="resume")
    folder.extend_rounds(rounds, key="rounds")
    log.info("run extended to %d rounds", rounds)
    return load_config(folder.config)
