"""Benchmark: the embedded default task over several seeds (fedavg vs local vs centralized).

Writes the section between the markers in BENCHMARKS.md: mean +- std over seeds of accuracy and
macro-F1 per client group and overall, bytes per round, seconds per round, peak memory.

    python benchmarks/default_task.py                 # full: 3 seeds of the default config (~5 min)
    python benchmarks/default_task.py --smoke         # tiny sizes, 1 seed, a few seconds (CI)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from _common import BENCHMARKS_MD, publish
from _common import mean_std as _ms
from fedmosaic import runner
from fedmosaic.config import load_config

ALGORITHMS = ("fedavg", "local", "centralized")
KEYS = ("group/image", "group/text", "group/image+text", "overall")
SMOKE = [
    "task.options.n_samples=300",
    "task.proxy_size=20",
    "task.labelled_size=20",
    "rounds=2",
    "model.embed_dim=16",
    "model.text_hidden=16",
]
SECTION = "default-task"


def run(seeds: list[int], smoke: bool, workdir: Path) -> dict[str, list[dict]]:
    """Every algorithm's summary, per seed."""
    out: dict[str, list[dict]] = {a: [] for a in ALGORITHMS}
    for seed in seeds:
        overrides = [
            f"seed={seed}",
            f"compare={list(ALGORITHMS[1:])!r}".replace("'", '"'),
            "engine.progress=false",
            *(SMOKE if smoke else []),
        ]
        result = runner.start(load_config(None, overrides), workdir / f"seed{seed}")
        for name in ALGORITHMS:
            out[name].append(result.summaries[name])
    return out


def table(results: dict[str, list[dict]], seeds: list[int], command: str) -> str:
    """The markdown section."""
    lines = [
        f"Default task (synthetic image+text, 2 image-only / 2 text-only / 6 image+text clients), "
        f"seeds {', '.join(map(str, seeds))}; mean ± std over seeds. Command: `{command}`",
        "",
        "| algorithm | " + " | ".join(f"{k} acc" for k in KEYS) + " | overall macro-F1 | MB up+down / round "
        "| s / round | peak MiB |",
        "|---|" + "---:|" * (len(KEYS) + 4),
    ]
    for name, summaries in results.items():
        acc = [_ms([s["final"][k]["accuracy"] for s in summaries]) for k in KEYS]
        f1 = _ms([s["final"]["overall"]["macro_f1"] for s in summaries])
        mb = np.mean([(s["bytes_up"] + s["bytes_down"]) / s["rounds"] / 1e6 for s in summaries])
        sec = _ms([s["seconds_per_round"] for s in summaries])
        mem = np.mean([s["peak_rss_mb"] for s in summaries])
        lines.append(f"| {name} | " + " | ".join(acc) + f" | {f1} | {mb:.2f} | {sec} | {mem:.0f} |")
    lines += ["", "Majority-class accuracy on this task is about 1/12 = 0.083 (balanced classes)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, one seed; does not touch BENCHMARKS.md"
    )
    parser.add_argument("--output", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    seeds = args.seeds[:1] if args.smoke else args.seeds
    with tempfile.TemporaryDirectory() as tmp:
        results = run(seeds, args.smoke, Path(tmp))
    command = "python benchmarks/default_task.py" + (
        "" if seeds == [0, 1, 2] else f" --seeds {' '.join(map(str, seeds))}"
    )
    section = table(results, seeds, command)
    publish(section, args.output, SECTION, args.smoke)


if __name__ == "__main__":
    main()
