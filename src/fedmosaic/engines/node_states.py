"""A SuperNode's client states on its own disk (node config ``state-dir``): they outlive restarts.

Without ``state-dir`` a node keeps its clients' states in Flower's ``Context.state``: in memory,
for one Flower run id. A resumed run (ServerApp run config ``resume = true``) is a new ``flwr run``
with a new run id, and a restarted SuperNode starts with an empty context; both would lose them.
With ``state-dir`` the ClientApp process (:func:`fedmosaic.engines.flower_client.handle`, which has
the SuperNode's own node config) reads the planned clients' states from
``<state-dir>/<run key>/<client>/rNNNNN.safetensors`` before each message, and writes the states a
``train`` message produced before its reply leaves the node, each atomically (temp file, fsync,
rename): every round the coordinator commits, the node already has on disk.

The run key is the coordinator's name for the run, kept in its results folder, so it stays the same
when the run is resumed (Flower's run id does not). States are versioned by round:

- ``train`` of round r first deletes every version from round r on: what an interrupted attempt at
  round r (or later) wrote before the coordinator went back to its last committed round, r - 1.
  Then each client gets its newest state from round r - 1 or before, and its new one is round r's.
- ``evaluate`` of round r reads each client's newest state from round r or before.

Versions back to the newest one before round r - 1 are kept (the pruning of
:class:`~fedmosaic.engines.state_store.ClientStateStore`): a coordinator whose last checkpoint is
damaged falls back one round, and that round's states are still here.

This module runs in the per-message ClientApp process: numpy, safetensors and Flower, no torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import RecordDict

from fedmosaic.core.errors import ConfigError
from fedmosaic.engines.flower_client import QUERY, RUN, STATE, TRAIN
from fedmosaic.engines.flower_records import clients_in, get_json, get_state, put_state
from fedmosaic.engines.state_store import ClientStateStore

STATE_DIR = "state-dir"  # node config key: where this node keeps its clients' states
RUN_KEY = "run-key"  # run record entry: the coordinator's name for the run (same across resumes)
RESUMED_AFTER = "resumed-after"  # run record entry: the committed round a resumed run continues after
_RUN_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # a folder name, never a path


def state_root(node_config: Mapping[str, Any]) -> Path | None:
    """The node config's ``state-dir`` (resolved), or ``None`` when the node keeps states in memory."""
    raw = str(node_config.get(STATE_DIR, "")).strip()
    return Path(raw).expanduser().resolve() if raw else None


def run_states_folder(root: Path, run_key: str) -> Path:
    """``<state-dir>/<run key>``, created private (mode 0700: client states are trained on private data)."""
    if not _RUN_KEY.match(run_key):
        raise ConfigError(f"run-key: {run_key!r} is not a run key (letters, digits, '_', '.', '-')")
    if root.exists() and not root.is_dir():
        raise ConfigError(f"node-config state-dir: {root} exists and is not a directory")
    folder = root / run_key
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"node-config state-dir: cannot create {folder} ({exc.strerror})") from None
    return folder


class NodeStates:
    """The states of the clients one message plans, on disk (see the module's docstring)."""

    def __init__(self, folder: Path, kind: str, round: int, clients: list[str]) -> None:
        self.store = ClientStateStore(folder, cache_size=0)  # one message per process: no cache
        self.folder, self.kind, self.round, self.clients = folder, kind, round, clients

    def load(self) -> RecordDict:
        """The planned clients' states, as of the round this message continues."""
        if self.kind == TRAIN:
            # An interrupted attempt's versions of this round or later must never be read again.
            self.store.rollback(self.round - 1)
            for stale in self.folder.glob("*/.*.tmp"):  # temp files of a writer killed mid-write
                stale.unlink(missing_ok=True)
        at_most = self.round - 1 if self.kind == TRAIN else self.round
        states = RecordDict()
        for cid in self.clients:
            put_state(states, STATE, cid, self.store.get(cid, at_most=at_most))
        return states

    def save(self, states: RecordDict) -> None:
        """Write the states a ``train`` message produced as this round's (nothing for other kinds)."""
        if self.kind != TRAIN:
            return
        for cid in self.clients:
            self.store.put(cid, self.round, get_state(states, STATE, cid))


def open_states(kind: str, content: RecordDict, node_config: Mapping[str, Any]) -> NodeStates | None:
    """The on-disk states a message uses, or ``None`` when the node keeps them in ``Context.state``.

    A resumed run (its messages say after which round) needs them on disk: a node without
    ``state-dir``, or whose ``state-dir`` holds nothing of the run, is refused with one line.
    """
    run = get_json(content, RUN) if RUN in content else {}
    root, run_key, resumed = state_root(node_config), run.get(RUN_KEY), int(run.get(RESUMED_AFTER, 0))
    if root is None:
        if resumed > 0:
            raise ConfigError(
                f"node-config state-dir: missing, but run {run_key} resumes after round {resumed}; this "
                "node keeps client states only in memory, which the resumed run cannot see (start the "
                "SuperNode with the state-dir it ran with)"
            )
        return None
    if not run_key:
        raise ConfigError(
            "node-config state-dir: the coordinator sent no run key; it needs the same fedmosaic version"
        )
    if resumed > 0 and not (root / str(run_key)).is_dir():
        raise ConfigError(
            f"node-config state-dir: {root} holds no states of run {run_key}, which resumes after round "
            f"{resumed} (was the node started with another state-dir, or was it emptied?)"
        )
    folder = run_states_folder(root, str(run_key))
    if kind == QUERY:
        return None  # the folder now exists: a resume can tell this node took part
    return NodeStates(folder, kind, int(run["round"]), clients_in(content, kind))
