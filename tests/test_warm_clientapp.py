"""Warm ClientApp starts (:mod:`fedmosaic.engines.warm_clientapp`): forked from a zygote, Flower untouched.

The real path (a SuperNode whose SuperExec forks every message's ClientApp) runs in every Flower
integration test (tests/test_flower.py); here its parts are tested without a network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from conftest import wait_until
from fedmosaic.engines import flower_local, warm_clientapp

HERE = Path(__file__).resolve().parent


def record_argv() -> None:
    """A stand-in for ``flwr-clientapp`` (named as the zygote's entry): writes what it was given."""
    out = Path(sys.argv[sys.argv.index("--out") + 1])
    out.write_text(json.dumps({"argv": sys.argv, "pid": os.getpid(), "ppid": os.getppid()}))
    sys.exit(3)


def test_the_zygote_forks_one_process_per_launch_with_the_given_arguments(tmp_path: Path) -> None:
    sys.path.insert(0, str(HERE))  # the zygote imports its entry point by name, after the fork
    try:
        zygote = warm_clientapp.Zygote(entry="test_warm_clientapp:record_argv")
    finally:
        sys.path.remove(str(HERE))
    try:
        outs = [tmp_path / f"launch-{k}.json" for k in range(2)]
        for out in outs:
            assert zygote.launch(["flwr-clientapp", "--token", "t", "--out", str(out)], quiet=True)
        written = lambda: all(out.is_file() and out.read_text() for out in outs)  # noqa: E731
        assert wait_until(written, timeout_s=30, step_s=0.05)
        seen = [json.loads(out.read_text()) for out in outs]
        assert [s["argv"] for s in seen] == [
            ["flwr-clientapp", "--token", "t", "--out", str(out)] for out in outs
        ]  # argv[0] as Flower's own command has it
        assert {s["ppid"] for s in seen} == {zygote.pid}  # forked by the zygote, not started cold
        assert len({s["pid"] for s in seen}) == 2  # a process per message, as Flower's isolation wants
    finally:
        zygote.close()
    # EOF on its pipe ends the zygote
    assert wait_until(lambda: not flower_local.alive(zygote.pid), timeout_s=30, step_s=0.05)
    assert not zygote.launch(["flwr-clientapp"], quiet=True)  # then launches fall back to Flower's own


def test_the_superexec_sends_only_clientapp_starts_to_the_zygote(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.supercore.superexec.executor import subprocess_executor

    launched: list[tuple[list[str], bool]] = []
    started: list[list[str]] = []

    class FakeZygote:
        up = True

        def launch(self, args: list[str], quiet: bool) -> bool:
            launched.append((args, quiet))
            return self.up

    monkeypatch.setattr(subprocess_executor, "subprocess", subprocess)  # undone after the test
    monkeypatch.setattr(subprocess, "Popen", lambda args, *a, **k: started.append(list(args)))
    zygote = FakeZygote()
    assert warm_clientapp.install_superexec(zygote)  # type: ignore[arg-type]
    popen = subprocess_executor.subprocess.Popen
    popen(["flwr-clientapp", "--token", "x"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    popen(["flwr-serverapp", "--token", "y"])
    zygote.up = False
    popen(["flwr-clientapp", "--token", "z"])
    assert launched == [
        (["flwr-clientapp", "--token", "x"], True),
        (["flwr-clientapp", "--token", "z"], False),
    ]
    # the ServerApp, and a ClientApp the zygote could not take, start as Flower starts them
    assert started == [["flwr-serverapp", "--token", "y"], ["flwr-clientapp", "--token", "z"]]


def test_the_supernode_starts_its_superexec_through_the_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.supernode import start_client_internal

    started: list[list[str]] = []
    monkeypatch.setattr(start_client_internal, "subprocess", subprocess)
    monkeypatch.setattr(subprocess, "Popen", lambda args, *a, **k: started.append(list(args)))
    assert warm_clientapp.install_supernode()
    start_client_internal.subprocess.Popen(["flower-superexec", "--insecure", "--parent-pid", "7"])
    start_client_internal.subprocess.Popen(["something-else"])
    assert started == [
        [sys.executable, "-m", "fedmosaic.engines.warm_clientapp", "--insecure", "--parent-pid", "7"],
        ["something-else"],
    ]


def test_an_unknown_flwr_version_is_left_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    from flwr.supernode import start_client_internal

    monkeypatch.setattr(start_client_internal, "subprocess", subprocess)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "9.9.9")
    with pytest.warns(UserWarning, match="written for flwr 1.41.0, found 9.9.9"):
        assert not warm_clientapp.install_supernode()
    assert start_client_internal.subprocess is subprocess


def test_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(warm_clientapp.ENV_SWITCH, raising=False)
    assert warm_clientapp.enabled()
    monkeypatch.setenv(warm_clientapp.ENV_SWITCH, "0")
    assert not warm_clientapp.enabled()
