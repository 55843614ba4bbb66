"""Learning curves: gvf against local-only and fedavg, per client group, over more rounds.

The gvf benchmark (benchmarks/gvf.py) compares the methods after 10 rounds. This script asks whether
the picture changes with training time: the same tasks and mix (2 A-only, 2 B-only, 6 complete
clients), 20 rounds, every client group evaluated every 2 rounds, 3 seeds. It draws one panel per
task and group (mean over seeds, band = ± std) and writes the final and best rounds into the
``gvf-curves`` section of BENCHMARKS.md.

    python benchmarks/gvf_curves.py --jobs 2             # 20 rounds, seeds 0 1 2, both tasks (1554 CPU s)
    python benchmarks/gvf_curves.py --from-results       # section and figure from benchmarks/results/
    python benchmarks/gvf_curves.py --smoke              # tiny synthetic run (CI)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _harness import ROOT, Benchmark, Context, Results, Row, federation_run, mean_std
from gvf import datasets, smoke

METHODS = ("local", "fedavg", "gvf")
FIGURE = ROOT / "benchmarks" / "figures" / "gvf_curves.png"


Curves = dict[str, list[list[float]]]  # group -> [[round, accuracy], ...] (JSON keeps it as it is)


def rows(args: argparse.Namespace) -> list[Row]:
    """Every method on every task."""
    tasks = datasets(args.shared, args.smoke)
    return [
        Row(f"{task}: {m}", (f"algorithm.name={m}",), params={"task": task, "method": m})
        for task in tasks
        for m in METHODS
    ]


def measure(row: Row, seed: int, ctx: Context) -> dict:
    """Group -> [round, accuracy] at every evaluated round, and the run's summary numbers."""
    every = 1 if ctx.smoke else ctx.args.every
    task = datasets(ctx.args.shared, ctx.smoke)[row.params["task"]]
    sets = [
        *task,
        f"rounds={ctx.args.rounds}",
        f"engine.eval_every={every}",
        *(smoke(row.params["method"]) if ctx.smoke else []),
    ]
    summary = federation_run([*sets, f"seed={seed}", *row.overrides], ctx, keep_rows=True)
    curves: Curves = {}
    for result in summary.pop("rows"):
        for key, value in result.get("eval", {}).items():
            if key.startswith("group/"):
                curves.setdefault(key.removeprefix("group/"), []).append([result["round"], value["accuracy"]])
    return {"curves": curves, "cpu_s": summary["cpu_s"], "seconds_per_round": summary["seconds_per_round"]}


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--every", type=int, default=2, help="evaluate every this many rounds")
    parser.add_argument("--figure", type=Path, default=FIGURE)


def by_task(stored: Results) -> dict[str, dict[str, list[Curves]]]:
    """Task -> method -> each seed's curves."""
    out: dict[str, dict[str, list[Curves]]] = {}
    for run in stored["runs"]:
        task = out.setdefault(run["params"]["task"], {m: [] for m in METHODS})
        task[run["params"]["method"]].append(run["numbers"]["curves"])
    return out


def _stack(runs: list[Curves], group: str) -> tuple[np.ndarray, np.ndarray]:
    """Rounds and a (seeds, rounds) accuracy array of one group."""
    rounds = np.array([int(r) for r, _ in runs[0][group]])
    return rounds, np.array([[acc for _, acc in run[group]] for run in runs])


def _groups(runs: list[Curves]) -> list[str]:
    return sorted(runs[0], key=lambda g: (g.count("+"), g))  # single modalities first


def plot(stored: Results, args: argparse.Namespace) -> None:
    """One panel per task and group: each method's mean accuracy over seeds, ± std as a band."""
    import matplotlib.pyplot as plt

    results = by_task(stored)
    tasks = list(results)
    width = max(len(_groups(results[t]["gvf"])) for t in tasks)
    fig, axes = plt.subplots(len(tasks), width, figsize=(4 * width, 3.2 * len(tasks)), squeeze=False)
    for i, task in enumerate(tasks):
        for j, group in enumerate(_groups(results[task]["gvf"])):
            ax = axes[i][j]
            for method in METHODS:
                rounds, acc = _stack(results[task][method], group)
                mean, std = acc.mean(0), acc.std(0)
                ax.plot(rounds, mean, marker="o", markersize=3, label=method)
                ax.fill_between(rounds, mean - std, mean + std, alpha=0.2)
            ax.set_title(f"{task}: {group} clients")
            ax.set_xlabel("round")
            ax.set_ylabel("test accuracy")
            ax.grid(alpha=0.3)
        axes[i][0].legend()
    fig.tight_layout()
    # a smoke run never replaces the published figure
    path = args.results / FIGURE.name if args.smoke and args.figure == FIGURE else args.figure
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(task: str, runs: dict[str, list[Curves]]) -> list[str]:
    """Per group and method: accuracy at the last round and the best round's mean, over seeds."""
    lines = [
        f"#### {task}",
        "",
        "| group | method | final acc | best mean acc (round) | gvf − method, final (points) |",
        "|---|---|---:|---:|---:|",
    ]
    for group in _groups(runs["gvf"]):
        _, gvf_acc = _stack(runs["gvf"], group)
        for method in METHODS:
            rounds, acc = _stack(runs[method], group)
            mean = acc.mean(0)
            best = int(mean.argmax())
            gap = "" if method == "gvf" else f"{100 * (gvf_acc[:, -1].mean() - acc[:, -1].mean()):+.1f}"
            final, peak = mean_std(list(acc[:, -1])), f"{mean[best]:.3f} ({rounds[best]})"
            lines.append(f"| {group} | {method} | {final} | {peak} | {gap} |")
    return lines


def render(stored: Results) -> str:
    """The markdown section."""
    options = stored["options"]
    seeds, rounds = options["seeds"], options["rounds"]
    every = 1 if options["smoke"] else options["every"]
    lines = [
        "### gvf learning curves",
        "",
        f"gvf, local and fedavg on the gvf benchmark's tasks and mix, {rounds} rounds, every client group "
        f"evaluated every {every} rounds, seeds {', '.join(map(str, seeds))}; final accuracy mean ± std "
        f"over seeds. Command: `{stored['command']}`.",
        "",
        f"![gvf learning curves]({FIGURE.relative_to(ROOT).as_posix()})",
        "",
    ]
    for task, runs in by_task(stored).items():
        lines += [*table(task, runs), ""]
    return "\n".join(lines)


BENCH = Benchmark(
    "gvf-curves",
    __doc__,
    "benchmarks/gvf_curves.py",
    rows,
    render,
    measure,
    rounds=20,
    options=options,
    draw=plot,
)

if __name__ == "__main__":
    BENCH.main()
