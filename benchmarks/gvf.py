"""Benchmark: global-vector fusion (gvf) against local-only and fedavg, with its ablations.

Two tasks (the synthetic image+text task and fsdd-digits, image+audio), each with 2 clients holding
only modality A, 2 only modality B and 6 holding both. For every client group: accuracy and
macro-F1 of local, fedavg and gvf (mean ± std over seeds), then the ablations of gvf (random
pairing, no alignment, no gating, sample-count weights, no global vectors; proxy labels switched on). Writes
the section between ``<!-- gvf:begin -->`` and ``<!-- gvf:end -->`` of BENCHMARKS.md.

    python benchmarks/gvf.py                  # full: 10 rounds, seeds 0 1 2, ablations on seed 0
    python benchmarks/gvf.py --smoke          # tiny synthetic run, one seed, one ablation (CI, < 60 s)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from _common import BENCHMARKS_MD, SHARED, write_section
from _common import mean_std as _ms
from fedmosaic import runner
from fedmosaic.config import load_config

SECTION = "gvf"
BASELINES = ("local", "fedavg")
ABLATIONS = {
    "random pairing": ["algorithm.pairing=random"],
    "no alignment": ["algorithm.alignment=false"],
    "no gating (concatenation)": ["algorithm.gating=false"],
    "sample-count weights": ["algorithm.weighting=samples"],
    "no global vectors": ["algorithm.global_vectors=false"],
    "with proxy labels": ["algorithm.proxy_weight=1"],
}
SMOKE = [
    "task.options.n_samples=300",
    "task.proxy_size=20",
    "task.labelled_size=20",
    "model.embed_dim=16",
    "model.text_hidden=16",
    "algorithm.dim=16",
]


def datasets(shared: Path, smoke: bool) -> dict[str, list[str]]:
    """The tasks and their overrides (fsdd-digits only when its folder exists, and not in smoke mode)."""
    out = {"synthetic": ["task.dataset=synthetic"]}
    fsdd = shared / "datasets" / "fsdd"
    if not smoke and fsdd.is_dir():
        out["fsdd-digits"] = ["task.dataset=fsdd-digits", f"task.data_dir={fsdd}"]
    return out


def _overrides(base: list[str], seed: int, rounds: int, smoke: bool, compare: tuple[str, ...]) -> list[str]:
    return [
        *base,
        f"seed={seed}",
        f"rounds={rounds}",
        f"engine.eval_every={rounds}",  # only the final evaluation is reported: skip the others
        "engine.progress=false",
        "output.plots=false",
        "algorithm.name=gvf",
        "compare=[" + ",".join(f'"{c}"' for c in compare) + "]",
        *(SMOKE if smoke else []),
    ]


def run_unit(base: list[str], seed: int, extra: list[str], rounds: int, smoke: bool, folder: Path) -> dict:
    """One run: gvf (with an ablation's ``extra`` overrides) and, when ``extra`` is empty, the baselines."""
    compare = () if extra else BASELINES
    cfg = load_config(None, [*_overrides(base, seed, rounds, smoke, compare), *extra])
    return runner.start(cfg, folder).summaries


def run_all(
    tasks: dict[str, list[str]],
    seeds: list[int],
    ablation_seeds: list[int],
    rounds: int,
    smoke: bool,
    workdir: Path,
    jobs: int,
) -> dict[str, dict[str, list[dict]]]:
    """Summaries by task and row name: the baselines and gvf per seed, each ablation per ablation seed.

    Every (task, seed, variant) is one independent run, spread over ``jobs`` processes.
    """
    ablations = dict(list(ABLATIONS.items())[:1]) if smoke else ABLATIONS
    # the main units (three runs each) first, so the long ones do not start last
    units = [(name, None, seed, []) for name in tasks for seed in seeds]
    units += [
        (name, label, seed, extra)
        for name in tasks
        for label, extra in ablations.items()
        for seed in ablation_seeds
    ]
    out: dict[str, dict[str, list[dict]]] = {
        name: {row: [] for row in (*BASELINES, "gvf", *(f"gvf, {a}" for a in ablations))} for name in tasks
    }
    with ProcessPoolExecutor(max(1, jobs)) as pool:
        futures = [
            (
                name,
                label,
                pool.submit(run_unit, tasks[name], seed, extra, rounds, smoke, workdir / f"{name}-{i}"),
            )
            for i, (name, label, seed, extra) in enumerate(units)
        ]
        for name, label, future in futures:  # in submission order: rows stay in seed order
            summaries = future.result()
            if label is None:
                for row in (*BASELINES, "gvf"):
                    out[name][row].append(summaries[row])
            else:
                out[name][f"gvf, {label}"].append(summaries["gvf"])
    return out


def _groups(summary: dict) -> list[str]:
    """Client groups, single modalities first, then the complete group."""
    groups = [k.removeprefix("group/") for k in summary["final"] if k.startswith("group/")]
    return sorted(groups, key=lambda g: (g.count("+"), g))


def table(name: str, results: dict[str, list[dict]]) -> list[str]:
    """One markdown table (rows: algorithms and ablations) plus the target check for a task."""
    groups = _groups(results["gvf"][0])
    head = " | ".join(f"{g} acc | {g} F1" for g in groups)
    lines = [
        f"#### {name}",
        "",
        f"| algorithm | seeds | {head} | overall acc | s / round | MB / round |",
        "|---|---:|" + "---:|" * (2 * len(groups) + 3),
    ]
    for row, summaries in results.items():
        cells = []
        for g in groups:
            cells.append(_ms([s["final"][f"group/{g}"]["accuracy"] for s in summaries]))
            cells.append(_ms([s["final"][f"group/{g}"]["macro_f1"] for s in summaries]))
        overall = _ms([s["final"]["overall"]["accuracy"] for s in summaries])
        sec = np.mean([s["seconds_per_round"] for s in summaries])
        mb = np.mean([(s["bytes_up"] + s["bytes_down"]) / s["rounds"] / 1e6 for s in summaries])
        lines.append(
            f"| {row} | {len(summaries)} | " + " | ".join(cells) + f" | {overall} | {sec:.1f} | {mb:.2f} |"
        )

    def acc(row: str, g: str) -> float:
        return 100 * float(np.mean([s["final"][f"group/{g}"]["accuracy"] for s in results[row]]))

    checks = []
    for g in groups:
        vs_local, vs_fedavg = acc("gvf", g) - acc("local", g), acc("gvf", g) - acc("fedavg", g)
        kind = "complete" if "+" in g else "single-modality"
        checks.append(f"{g} ({kind}): {vs_local:+.1f} points vs local, {vs_fedavg:+.1f} vs fedavg")
    lines += ["", "gvf accuracy difference: " + "; ".join(checks) + "."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ablation-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=4, help="runs in parallel processes")
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic run, one seed, one ablation")
    parser.add_argument("--output", type=Path, default=BENCHMARKS_MD)
    parser.add_argument("--shared", type=Path, default=SHARED, help="the folder holding datasets/")
    args = parser.parse_args()
    seeds = args.seeds[:1] if args.smoke else args.seeds
    ablation_seeds = args.ablation_seeds
    rounds = 1 if args.smoke else args.rounds
    start = time.perf_counter()
    lines: list[str] = []
    tasks = datasets(args.shared, args.smoke)
    with tempfile.TemporaryDirectory() as tmp:
        results = run_all(tasks, seeds, ablation_seeds, rounds, args.smoke, Path(tmp), args.jobs)
    for name in tasks:
        lines += [*table(name, results[name]), ""]
    command = "python benchmarks/gvf.py" + (" --smoke" if args.smoke else "")
    if not args.smoke and (seeds != [0, 1, 2] or rounds != 10 or ablation_seeds != [0]):
        command += f" --rounds {rounds} --seeds {' '.join(map(str, seeds))}"
        command += f" --ablation-seeds {' '.join(map(str, ablation_seeds))}"
    intro = [
        "### Global-vector fusion (gvf)",
        "",
        f"2 single-modality-A, 2 single-modality-B and 6 complete clients; {rounds} rounds, "
        f"{'tiny' if args.smoke else 'default'} sizes; main rows over seeds {', '.join(map(str, seeds))}, "
        f"ablation rows over seed(s) {', '.join(map(str, ablation_seeds))}; mean ± std. "
        "Each client group's metric is the mean over its clients of the model that client deploys "
        "(local, gvf: its own; fedavg: the global model on the modalities it holds). "
        f"Command: `{command}` ({(time.perf_counter() - start) / 60:.0f} min on a shared 2-core machine).",
        "",
    ]
    section = "\n".join(intro + lines)
    print(section)
    if args.smoke:
        return
    write_section(args.output, SECTION, section)


if __name__ == "__main__":
    main()
