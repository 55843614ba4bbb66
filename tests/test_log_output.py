"""What a person reads in a log: piped (non-TTY) tables and progress, and ``fedmosaic --version``.

Every test runs the CLI in a subprocess with pipes, so stdout and stderr are real non-terminals,
as under CI, nohup or SLURM.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import fedmosaic

ROOT = Path(__file__).resolve().parents[1]
# Source first, so the subprocess runs this checkout even when another one is installed.
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "MPLBACKEND": "Agg",
    "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
}


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedmosaic.cli", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def test_version_prints_the_package_version_and_exits_0() -> None:
    result = cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"fedmosaic {fedmosaic.__version__}\n"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert fedmosaic.__version__ == project["version"]  # one version, wherever it is read


def test_version_does_not_import_torch() -> None:
    # torch takes seconds to import; --version (and --help) must not wait for it
    script = (
        "import sys\n"
        "from fedmosaic.cli import main\n"
        "sys.argv = ['fedmosaic', '--version']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        "print('torch' in sys.modules, code or 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV)
    assert result.stdout.splitlines()[-1] == "False 0", result.stdout + result.stderr


def test_torchvision_and_transformers_still_import_after_fedmosaic() -> None:
    # the CPU-torch fix for torchvision now runs lazily, just before torchvision is first looked up
    script = (
        "import fedmosaic\n"
        "from transformers import BertModel\n"
        "from torchvision.models import mobilenet_v3_small\n"
        "print(type(mobilenet_v3_small()).__name__, BertModel.__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["MobileNetV3", "BertModel"]
