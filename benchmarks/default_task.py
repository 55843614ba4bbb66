"""Benchmark: the embedded default task over several seeds (fedavg vs local vs centralized).

Writes the ``default-task`` section of BENCHMARKS.md: mean ± std over seeds of accuracy and macro-F1
per client group and overall, bytes per round, seconds per round, peak memory.

    python benchmarks/default_task.py                 # full: 3 seeds of the default config (~8 min)
    python benchmarks/default_task.py --from-results  # the section from benchmarks/results/, no runs
    python benchmarks/default_task.py --smoke         # tiny sizes, 1 seed, a few seconds (CI)
"""

from __future__ import annotations

import argparse

import numpy as np

from _harness import TINY, Benchmark, Results, Row, by_row, mean_std, seeds_of, smoke_prepare

ALGORITHMS = ("fedavg", "local", "centralized")
KEYS = ("group/image", "group/text", "group/image+text", "overall")


def rows(args: argparse.Namespace) -> list[Row]:
    """One row per algorithm, all on the default config."""
    return [Row(name, (f"algorithm.name={name}",)) for name in ALGORITHMS]


def render(stored: Results) -> str:
    """The markdown section."""
    results = by_row(stored)
    lines = [
        f"Default task (synthetic image+text, 2 image-only / 2 text-only / 6 image+text clients), "
        f"seeds {', '.join(map(str, seeds_of(stored)))}; mean ± std over seeds. "
        f"Command: `{stored['command']}`",
        "",
        "| algorithm | " + " | ".join(f"{k} acc" for k in KEYS) + " | overall macro-F1 | MB up+down / round "
        "| s / round | peak MiB |",
        "|---|" + "---:|" * (len(KEYS) + 4),
    ]
    for name, summaries in results.items():
        acc = [mean_std([s["final"][k]["accuracy"] for s in summaries]) for k in KEYS]
        f1 = mean_std([s["final"]["overall"]["macro_f1"] for s in summaries])
        mb = np.mean([(s["bytes_up"] + s["bytes_down"]) / s["rounds"] / 1e6 for s in summaries])
        sec = mean_std([s["seconds_per_round"] for s in summaries])
        mem = np.mean([s["peak_rss_mb"] for s in summaries])
        lines.append(f"| {name} | " + " | ".join(acc) + f" | {f1} | {mb:.2f} | {sec} | {mem:.0f} |")
    lines += ["", "Majority-class accuracy on this task is about 1/12 = 0.083 (balanced classes).", ""]
    return "\n".join(lines)


BENCH = Benchmark(
    "default-task",
    __doc__,
    "benchmarks/default_task.py",
    rows,
    render,
    rounds=20,
    prepare=smoke_prepare(TINY),
)

if __name__ == "__main__":
    BENCH.main()
