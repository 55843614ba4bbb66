"""Learning curves: gvf against local-only and fedavg, per client group, over more rounds.

The gvf benchmark (benchmarks/gvf.py) compares the methods after 10 rounds. This script asks whether
the picture changes with training time: the same tasks and mix (2 A-only, 2 B-only, 6 complete
clients), 20 rounds, every client group evaluated every 2 rounds, 3 seeds. It draws one panel per
task and group (mean over seeds, band = ± std) and writes the final and best rounds into the
``gvf-curves`` section of BENCHMARKS.md.

    python benchmarks/gvf_curves.py                      # 20 rounds, seeds 0 1 2, both tasks
    python benchmarks/gvf_curves.py --smoke              # tiny synthetic run (CI)
    python benchmarks/gvf_curves.py --workdir W          # keep the runs; finished ones are read back
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from _common import BENCHMARKS_MD, ROOT, SHARED, publish
from _common import mean_std as _ms
from fedmosaic import runner
from fedmosaic.config import load_config
from fedmosaic.engines.run_folder import read_jsonl
from gvf import SMOKE, datasets

SECTION = "gvf-curves"
METHODS = ("local", "fedavg", "gvf")
FIGURE = ROOT / "benchmarks" / "figures" / "gvf_curves.png"


def _metrics(folder: Path, method: str) -> Path:
    return folder / "metrics.jsonl" if method == "gvf" else folder / "baselines" / method / "metrics.jsonl"


def run_unit(base: list[str], seed: int, rounds: int, every: int, smoke: bool, folder: Path) -> Path:
    """gvf with local and fedavg beside it, evaluated every ``every`` rounds (read back if finished)."""
    if not all((folder / name).is_file() for name in ("summary.json", "baselines/fedavg/summary.json")):
        overrides = [
            *base,
            f"seed={seed}",
            f"rounds={rounds}",
            f"engine.eval_every={every}",
            "engine.progress=false",
            "output.plots=false",
            "algorithm.name=gvf",
            'compare=["local","fedavg"]',
            *(SMOKE if smoke else []),
        ]
        runner.start(load_config(None, overrides), folder)
    return folder


def curves(folder: Path, method: str) -> dict[str, dict[int, float]]:
    """Group -> round -> accuracy, from a run's ``metrics.jsonl`` (evaluated rounds only)."""
    out: dict[str, dict[int, float]] = {}
    for row in read_jsonl(_metrics(folder, method)):
        for key, value in row.get("eval", {}).items():
            if key.startswith("group/"):
                out.setdefault(key.removeprefix("group/"), {})[row["round"]] = value["accuracy"]
    return out


def _stack(runs: list[dict[str, dict[int, float]]], group: str) -> tuple[np.ndarray, np.ndarray]:
    """Rounds and a (seeds, rounds) accuracy array of one group."""
    rounds = np.array(sorted(runs[0][group]))
    return rounds, np.array([[run[group][r] for r in rounds] for run in runs])


def _groups(runs: list[dict[str, dict[int, float]]]) -> list[str]:
    return sorted(runs[0], key=lambda g: (g.count("+"), g))  # single modalities first


def plot(results: dict[str, dict[str, list[dict[str, dict[int, float]]]]], path: Path) -> None:
    """One panel per task and group: each method's mean accuracy over seeds, ± std as a band."""
    import matplotlib.pyplot as plt

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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(task: str, runs: dict[str, list[dict[str, dict[int, float]]]]) -> list[str]:
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
            final, peak = _ms(list(acc[:, -1])), f"{mean[best]:.3f} ({rounds[best]})"
            lines.append(f"| {group} | {method} | {final} | {peak} | {gap} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--every", type=int, default=2, help="evaluate every this many rounds")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel processes")
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic run, one seed, 2 rounds")
    parser.add_argument("--output", type=Path, default=BENCHMARKS_MD)
    parser.add_argument("--figure", type=Path, default=FIGURE)
    parser.add_argument("--shared", type=Path, default=SHARED, help="the folder holding datasets/")
    parser.add_argument("--workdir", type=Path, help="keep the runs here; finished ones are read back")
    args = parser.parse_args()
    if args.every < 1 or args.rounds < 1:
        parser.error("--rounds and --every: must be >= 1")
    seeds = args.seeds[:1] if args.smoke else args.seeds
    rounds, every = (2, 1) if args.smoke else (args.rounds, args.every)
    tasks = datasets(args.shared, args.smoke)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        with ProcessPoolExecutor(max(1, args.jobs)) as pool:
            futures = {
                (task, seed): pool.submit(
                    run_unit, tasks[task], seed, rounds, every, args.smoke, work / f"{task}-s{seed}"
                )
                for task in tasks
                for seed in seeds
            }
            folders = {key: future.result() for key, future in futures.items()}
        results = {task: {m: [curves(folders[task, s], m) for s in seeds] for m in METHODS} for task in tasks}
        figure = work / "gvf_curves.png" if args.smoke else args.figure  # smoke: never the published one
        plot(results, figure)
    minutes = (time.perf_counter() - start) / 60
    command = "python benchmarks/gvf_curves.py" + (" --smoke" if args.smoke else "")
    if not args.smoke and (seeds != [0, 1, 2] or rounds != 20 or every != 2):
        command += f" --seeds {' '.join(map(str, seeds))} --rounds {rounds} --every {every}"
    lines = [
        "### gvf learning curves",
        "",
        f"gvf, local and fedavg on the gvf benchmark's tasks and mix, {rounds} rounds, every client group "
        f"evaluated every {every} rounds, seeds {', '.join(map(str, seeds))}; final accuracy mean ± std "
        f"over seeds. Command: `{command}` ({minutes:.0f} min on a 2-core machine).",
        "",
        f"![gvf learning curves]({figure.relative_to(ROOT) if figure.is_relative_to(ROOT) else figure})",
        "",
    ]
    for task in tasks:
        lines += [*table(task, results[task]), ""]
    publish("\n".join(lines), args.output, SECTION, args.smoke)


if __name__ == "__main__":
    main()
