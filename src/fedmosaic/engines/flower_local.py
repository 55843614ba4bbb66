"""A whole Flower federation on this machine (127.0.0.1 only): for tests, the benchmark and trying it out.

Starts a SuperLink and SuperNodes as subprocesses of Flower's own commands (``flower-superlink``,
``flower-supernode``) and submits runs with ``flwr run`` — the same commands a consortium uses on
separate machines (docs/deploy.md). Every process is started here, remembered by PID and stopped by
PID; every wait is bounded. Nothing here speaks a network protocol itself.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port nobody listens on right now (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def tool(name: str) -> str:
    """The Flower command ``name`` from this interpreter's environment (not whatever is on PATH)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install fedmosaic with the flower extra")
    return found


# SuperExec (beside the SuperLink and each SuperNode) looks for a new task to start every second by
# default. The SuperLink's, which starts the ServerApp, polls this often; a node's, started by the
# launcher, is woken by its SuperNode per message instead and polls at most every 1 s (flower_wake).
SUPEREXEC_POLL_S = "0.1"


def flower_env(home: Path, worker_dir: Path | None = None) -> dict[str, str]:
    """Environment for Flower commands: no telemetry, no update check, offline hub, a private FLWR_HOME,
    SuperExec polling every 0.1 s (unless already set) and, given, the node workers' socket folder."""
    env = dict(os.environ)
    env.update(
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        HF_HUB_OFFLINE="1",
        MPLBACKEND="Agg",
        FLWR_HOME=str(home),
        PYTHONUNBUFFERED="1",
    )
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", SUPEREXEC_POLL_S)
    if worker_dir is not None:
        env["FEDMOSAIC_WORKER_DIR"] = str(worker_dir)
    return env


@dataclass
class Tls:
    """Development TLS material (see scripts/make_dev_certs.py)."""

    ca: Path
    cert: Path
    key: Path


@dataclass
class LocalFederation:
    """A SuperLink and its SuperNodes, each a subprocess stopped by PID in :meth:`stop`."""

    root: Path
    tls: Tls | None = None
    node_auth: bool = False
    port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    stopped: list[int] = field(default_factory=list)  # every PID stop() signalled (descendants included)
    submitted: int = 0  # runs submitted (names each run's --run-config file)
    # The node workers' sockets: a short private folder of this federation's own (a Unix socket path
    # is limited to ~107 bytes, and two federations on one machine must not share workers).
    worker_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fmw-")))
    workers: dict[str, Path] = field(default_factory=dict)  # worker process name -> its ready file
    fast_poll: bool = True  # SuperNodes through fedmosaic.engines.supernode (idle poll 0.2 s, not 3 s)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def home(self) -> Path:
        return self.root / "flwr-home"

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = (self.root / f"{name}.log").open("wb")
        env = flower_env(self.home, self.worker_dir)
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.processes[name] = proc
        return proc

    def _security(self) -> list[str]:
        return ["--insecure"] if self.tls is None else []

    def start_superlink(self, timeout_s: float = 60.0) -> None:
        """Start the SuperLink and wait (bounded) until it accepts connections."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        argv = [tool("flower-superlink"), *self._security(), "--host", HOST, "--port", str(self.port)]
        # In-memory state (no --database): a file database hit "database is locked" under load here.
        argv += ["--disable-runtime-dependency-installation"]
        if self.tls is not None:
            argv += ["--ssl-ca-certfile", str(self.tls.ca), "--ssl-certfile", str(self.tls.cert)]
            argv += ["--ssl-keyfile", str(self.tls.key)]
        if self.node_auth:
            argv += ["--enable-supernode-auth"]
        proc = self._start("superlink", argv)
        self._wait_listening(proc, "superlink", timeout_s)
        self._write_connection()

    def _wait_listening(self, proc: subprocess.Popen, name: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log(name)[-2000:]}")
            with socket.socket() as sock:
                sock.settimeout(0.5)
                if sock.connect_ex((HOST, self.port)) == 0:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{name} did not listen on {self.address} within {timeout_s:.0f} s")

    def _write_connection(self) -> None:
        """``$FLWR_HOME/config.toml``: the connection ``flwr run`` / ``flwr supernode`` use."""
        conn: dict[str, object] = {"address": self.address}
        if self.tls is None:
            conn["insecure"] = True
        else:
            conn["root-certificates"] = str(self.tls.ca.resolve())
        text = tomli_w.dumps({"superlink": {"default": "fedmosaic", "fedmosaic": conn}})
        (self.home / "config.toml").write_text(text)

    def start_supernode(
        self,
        name: str,
        data_dir: Path,
        modalities: str | None = None,
        private_key: Path | None = None,
        worker: bool = True,
        state_dir: Path | None = None,
    ) -> subprocess.Popen:
        """Start a SuperNode whose clients come from ``data_dir`` (its node config), optionally narrowed,
        and (``worker``) a node worker beside it with the same node config, named ``<name>-worker``.
        ``state_dir``: the node keeps its clients' states there (node config ``state-dir``)."""
        node_config = f'data-dir="{Path(data_dir).resolve()}"'
        if modalities:
            node_config += f' modalities="{modalities}"'
        if state_dir is not None:
            node_config += f' state-dir="{Path(state_dir).resolve()}"'
        if worker:
            self.start_worker(f"{name}-worker", node_config)
        # fedmosaic.engines.supernode: Flower's own flower-supernode, its 3 s idle poll capped
        launcher = [sys.executable, "-m", "fedmosaic.engines.supernode"] if self.fast_poll else []
        argv = [*(launcher or [tool("flower-supernode")]), *self._security(), "--superlink", self.address]
        argv += ["--host", HOST, "--port", str(free_port()), "--node-config", node_config]
        argv += ["--max-wait-time", "60"]
        if self.tls is not None:
            argv += ["--root-certificates", str(self.tls.ca)]
        if private_key is not None:
            argv += ["--auth-supernode-private-key", str(private_key)]
        return self._start(name, argv)

    def start_worker(self, name: str, node_config: str) -> subprocess.Popen:
        """``fedmosaic node-worker --node-config NODE_CONFIG`` (see :mod:`fedmosaic.engines.node_worker`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        ready = self.root / f"{name}.ready"
        ready.unlink(missing_ok=True)
        self.workers[name] = ready
        argv = [sys.executable, "-m", "fedmosaic.cli", "node-worker", "--node-config", node_config]
        return self._start(name, [*argv, "--ready", str(ready)])

    def wait_workers(self, timeout_s: float = 300.0) -> None:
        """Wait (bounded) until every node worker accepts messages (torch imported, data read)."""
        deadline = time.monotonic() + timeout_s
        for name, ready in self.workers.items():
            while not ready.exists():
                if self.processes[name].poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {self.processes[name].returncode}: {self.log(name)[-2000:]}"
                    )
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{name} was not ready within {timeout_s:.0f} s")
                time.sleep(0.1)

    def flwr(self, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
        """Run one ``flwr`` CLI command against this SuperLink (bounded)."""
        return subprocess.run(
            [tool("flwr"), *args],
            env=flower_env(self.home),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def register(self, public_key: Path) -> str:
        """``flwr supernode register``: allow the node holding the matching private key to connect."""
        done = self.flwr("supernode", "register", str(public_key), "fedmosaic")
        if done.returncode != 0:
            raise RuntimeError(f"flwr supernode register failed: {done.stdout}{done.stderr}")
        return done.stdout

    def submit(self, app: Path, run_config: dict[str, object]) -> int:
        """``flwr run APP fedmosaic --run-config FILE``; returns the run id.

        The overrides go through a TOML file: ``--run-config 'k=v k=v'`` splits on spaces, and
        fedmosaic overrides may contain some (``task.options.modalities=["acc", "gyro"]``).
        """
        self.submitted += 1
        path = self.root / f"run-config-{self.submitted}.toml"
        path.write_text(tomli_w.dumps(run_config))
        done = self.flwr("run", str(app), "fedmosaic", "--run-config", str(path), "--format", "json")
        start = done.stdout.find("{")
        answer = json.loads(done.stdout[start:]) if start >= 0 else {}
        if done.returncode != 0 or "run-id" not in answer:
            raise RuntimeError(f"flwr run failed: {done.stdout}{done.stderr}")
        return int(answer["run-id"])

    def run_status(self, run_id: int) -> str:
        """The run's status as ``flwr list`` reports it (e.g. ``finished:completed``)."""
        done = self.flwr("list", "fedmosaic", "--run-id", str(run_id), "--format", "json")
        start = done.stdout.find("{")
        if done.returncode != 0 or start < 0:
            return "unknown"
        runs = json.loads(done.stdout[start:]).get("runs", [])
        return str(runs[0].get("status", "unknown")) if runs else "unknown"

    def wait_run(self, run_id: int, timeout_s: float, poll_s: float = 0.5) -> str:
        """Wait (bounded) until the run leaves pending/starting/running; return its final status.

        ``flwr list`` is a fresh Python process (about 1 CPU second): asked every ``poll_s`` it kept
        one of two cores busy and slowed the run it watched. So it is asked only while no ServerApp
        process runs under this SuperLink (the run has not started yet, or has just ended); while
        one runs, a look at ``/proc`` is enough.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.serverapp_running():
                status = self.run_status(run_id)
                if status.startswith("finished"):
                    return status
            if self.processes["superlink"].poll() is not None:
                raise RuntimeError(f"the SuperLink exited: {self.log('superlink')[-2000:]}")
            time.sleep(poll_s)
        raise TimeoutError(f"run {run_id} did not finish within {timeout_s:.0f} s")

    def serverapp_running(self) -> bool:
        """Whether a ``flwr-serverapp`` process runs below this SuperLink (Linux ``/proc``)."""
        link = self.processes.get("superlink")
        if link is None or link.poll() is not None:
            return False
        return any(b"flwr-serverapp" in command_line(pid) for pid in descendants(link.pid) if alive(pid))

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop every process started here and their descendants, by PID (SIGTERM, then SIGKILL).

        SuperLink and SuperNodes start SuperExec and app processes in sessions of their own; those
        would exit by themselves once their parent is gone, but a test must not leave them behind.
        """
        pids: list[int] = []
        for proc in reversed(list(self.processes.values())):
            if proc.poll() is None:
                pids += [*descendants(proc.pid), proc.pid]
        self.stopped += pids
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while (remaining := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in remaining:
            _signal(pid, signal.SIGKILL)
        shutil.rmtree(self.worker_dir, ignore_errors=True)


def _children() -> dict[int, list[int]]:
    """Parent PID -> child PIDs, from /proc (Linux)."""
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(stat.parent.name))
    return tree


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first seen, grandchildren after)."""
    tree, out, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def command_line(pid: int) -> bytes:
    """The process's command line as ``/proc`` has it (NUL-separated), or b"" once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is gone, only not yet reaped


def _signal(pid: int, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


@contextmanager
def local_federation(
    root: Path, tls: Tls | None = None, node_auth: bool = False, fast_poll: bool = True
) -> Iterator[LocalFederation]:
    """A started SuperLink (nodes are added by the caller), always stopped on exit."""
    fed = LocalFederation(Path(root), tls=tls, node_auth=node_auth, fast_poll=fast_poll)
    try:
        fed.start_superlink()
        yield fed
    finally:
        fed.stop()
