"""What every benchmark script shares: mean ± std formatting, the BENCHMARKS.md section writer and
the location of the real data sets (``../shared/datasets`` beside the project, or ``--shared``)."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SHARED = ROOT.parent / "shared"


def mean_std(values: list[float], digits: int = 3) -> str:
    """``mean ± std`` over seeds (population std; one seed gives ± 0)."""
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def write_section(path: Path, name: str, section: str) -> None:
    """Replace (or append) the text between ``<!-- name:begin -->`` and ``<!-- name:end -->``.

    ``section`` is the body; the markers are added here so that each script owns exactly its part.
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{section.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def publish(section: str, output: Path, name: str, smoke: bool) -> None:
    """Print a script's section; outside smoke mode also write it into its part of ``output``.

    Smoke runs only prove that a script still works: they never overwrite published numbers.
    """
    print(section, flush=True)
    if not smoke:
        write_section(output, name, section)


def unpack_hapt(shared: Path, dest: Path) -> Path:
    """Unpack the shipped HAPT archive into ``dest`` (once) and return its ``HAPT`` folder."""
    target = dest / "HAPT"
    if not (target / "RawData" / "labels.txt").is_file():
        archive = shared / "datasets" / "uci-hapt" / "HAPT-RawData.tar.xz"
        if not archive.is_file():
            raise SystemExit(f"{archive} not found: pass --shared PATH (the folder holding datasets/)")
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    return target
