"""cli.app.leave: the entry point exits without the interpreter's teardown, losing nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=ENV,
    )


def test_exit_handlers_run_and_buffered_output_arrives(tmp_path: Path) -> None:
    done = _python(
        """
        import atexit, sys
        atexit.register(lambda: print("handlers ran"))
        class Teardown:
            def __del__(self):
                print("torn down")  # only the interpreter's teardown would collect it
        kept = Teardown()
        sys.stdout.write("line\\n" * 50000)  # far more than a pipe's buffer
        sys.argv = ["fedmosaic", "--version"]
        from fedmosaic.cli import main
        main()
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:50000] == ["line"] * 50000
    assert lines[50000].startswith("fedmosaic ")
    assert lines[-1] == "handlers ran"  # and no "torn down": the teardown was skipped


def test_exit_status_of_a_usage_error_and_of_a_message(tmp_path: Path) -> None:
    usage = _python(
        """
        import sys
        sys.argv = ["fedmosaic", "run", "--no-such-option"]
        from fedmosaic.cli import main
        main()
        """,
        tmp_path,
    )
    assert usage.returncode == 2
    assert "no-such-option" in usage.stderr
    message = _python("from fedmosaic.cli.app import leave\nleave('gone wrong')", tmp_path)
    assert (message.returncode, message.stderr.strip()) == (1, "gone wrong")
    assert _python("from fedmosaic.cli.app import leave\nleave(3)", tmp_path).returncode == 3


def test_a_running_non_daemon_thread_is_waited_for(tmp_path: Path) -> None:
    done = _python(
        """
        import threading, time
        from pathlib import Path
        def late():
            time.sleep(0.5)
            Path("written").write_text("yes")
        threading.Thread(target=late).start()
        from fedmosaic.cli.app import leave
        leave(0)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "written").read_text() == "yes"


def test_under_a_profiler_the_ordinary_exit_lets_it_write(tmp_path: Path) -> None:
    script = tmp_path / "version.py"
    script.write_text(
        "import sys\nsys.argv = ['fedmosaic', '--version']\nfrom fedmosaic.cli import main\nmain()\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(tmp_path / "out.prof"), str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("fedmosaic ")
    assert (tmp_path / "out.prof").stat().st_size > 0
