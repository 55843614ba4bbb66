"""The coordinator's side of a pipeline root: ``server/`` (its data, its committed state) and
``progress.json`` (the round, the step due, what the round has gathered so far).

A server step loads the server half from its own files only, never a client's data, and commits
in two moves: the new state under a new name, then ``progress.json`` naming it. A step that dies
between the two reruns from the state it started with (as a run folder's commit marker does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedmosaic.config import RunConfig
from fedmosaic.core.algorithm import Algorithm, ServerData, ServerSide
from fedmosaic.core.checkpoint import atomic_write_json, load_message, save_message
from fedmosaic.core.errors import PipelineError
from fedmosaic.core.modality import ClientSpec
from fedmosaic.core.task import TaskInfo
from fedmosaic.engines.files_tree import read_specs
from fedmosaic.engines.node_data import load_streams, load_views
from fedmosaic.engines.protocol import build_server, eval_sample, settings_from_config


class ServerFolder:
    """``server/`` and ``progress.json`` under ``root``, for the run ``cfg`` of ``algorithm``."""

    def __init__(self, root: Path, cfg: RunConfig, algorithm: type[Algorithm], info: TaskInfo) -> None:
        self.root = root
        self.cfg = cfg
        self.algorithm = algorithm
        self.info = info
        self._specs: list[ClientSpec] | None = None

    @property
    def is_coordinator(self) -> bool:
        """Whether this is the coordinator's root (it has ``progress.json``) rather than a site's copy."""
        return (self.root / "progress.json").is_file()

    @property
    def progress(self) -> dict[str, Any]:
        """The coordinator's ``progress.json``: round, the step due, planned clients, bytes so far."""
        path = self.root / "progress.json"
        if not path.is_file():
            raise PipelineError(
                f"--root: {self.root} is a site's folder (no progress.json); the server's steps "
                "(aggregate-vectors, closing a round) run in the coordinator's root"
            )
        return json.loads(path.read_text())

    def set_progress(self, **values: Any) -> None:
        """Update ``progress.json`` with ``values``."""
        atomic_write_json(self.root / "progress.json", {**self.progress, **values})

    @property
    def specs(self) -> list[ClientSpec]:
        """Every client's spec, in task order (the server's: a site does not hold them)."""
        if self._specs is None:
            self._specs = read_specs(self.root)
        return self._specs

    def evaluated(self, r: int) -> list[ClientSpec]:
        """The clients evaluated in round ``r`` (``engine.eval_clients``, personalised algorithms only)."""
        k = self.cfg.engine.eval_clients if self.algorithm.personalised else None
        return eval_sample(self.specs, r, self.cfg.seed, k)

    def load(self) -> ServerSide:
        """The server half on the server's own data (``server/data.npz``) and its committed state."""
        path = self.root / "server" / "data.npz"
        if not path.is_file():
            raise PipelineError(f"--root: {path} is missing; the server's steps need the server's files")
        views = load_views(path, self.info)
        settings = settings_from_config(self.cfg, self.info, len(self.specs))
        streams = load_streams(self.root / "server" / "streams.npz")
        data = ServerData(views["proxy"], views["labelled"], views["test"], views.get("pooled"), streams)
        server = build_server(self.algorithm, settings, data)
        name = self.progress.get("state")
        if name:
            server.load_state(load_message(self.root / "server" / name))
        return server

    def save(self, server: ServerSide, r: int, step: str) -> str:
        """Write the server's state under a new name; it counts once :meth:`commit` records it."""
        name = f"state_r{r:05d}_{step}.safetensors"
        save_message(self.root / "server" / name, server.state())
        return name

    def commit(self, state: str, **values: Any) -> None:
        """Record progress naming the server state ``state``, then drop the older states."""
        self.set_progress(state=state, **values)
        for old in (self.root / "server").glob("state_r*.safetensors"):
            if old.name != state:
                old.unlink(missing_ok=True)
