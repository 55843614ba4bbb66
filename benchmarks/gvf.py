"""Benchmark: global-vector fusion (gvf) against local-only and fedavg, with its ablations.

Two tasks (the synthetic image+text task and fsdd-digits, image+audio), each with 2 clients holding
only modality A, 2 only modality B and 6 holding both. For every client group: accuracy and
macro-F1 of local, fedavg and gvf (mean ± std over seeds), then the ablations of gvf (random
pairing, alignment switched on, no gating, sample-count weights, no global vectors, no proxy anchor, a
personal (not aggregated) classifier, no update step) and one diagnostic that breaks the design
(encoders aggregated too). Writes
the section between ``<!-- gvf:begin -->`` and ``<!-- gvf:end -->`` of BENCHMARKS.md.

    python benchmarks/gvf.py                  # full: 10 rounds, seeds 0 1 2 for every row
    python benchmarks/gvf.py --smoke          # tiny synthetic run, one seed, one ablation (CI, < 60 s)
    python benchmarks/gvf.py --workdir W --run-only --tasks fsdd-digits --seeds 1   # one part of a split run
    python benchmarks/gvf.py --workdir W --collect                                  # table of what finished
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from _common import BENCHMARKS_MD, SHARED, publish
from _common import mean_std as _ms
from fedmosaic import runner
from fedmosaic.config import load_config

SECTION = "gvf"
BASELINES = ("local", "fedavg")
# Each ablation switches one part of gvf's defaults (alignment and the proxy-label extension are off
# by default since they measured worse; their rows switch them on); the last two rows are variants
# (algorithm.name, set after the main row's "gvf").
ABLATIONS = {
    "random pairing": ["algorithm.pairing=random"],
    "with alignment (InfoNCE)": ["algorithm.alignment=true"],
    "no gating (concatenation)": ["algorithm.gating=false"],
    "sample-count weights": ["algorithm.weighting=samples"],
    "no global vectors": ["algorithm.global_vectors=false"],
    "no proxy anchor": ["algorithm.anchor_weight=0"],
    "personal classifier": ["algorithm.shared_classifier=false"],
    "no update step (own fine-tuned shared part)": ["algorithm.update_clients=false"],
    "with proxy labels (extension)": ["algorithm.proxy_weight=1"],
    # The like-for-like local-only control (a variant, not a switch): gvf's own model, trained on each
    # client's data alone.
    "no federation (gvf's model, local only)": ["algorithm.name=gvf-local"],
    # Not an ablation: the diagnostic variant breaks the design (encoders leave the clients) to
    # measure what keeping them private costs.
    "diagnostic: encoders shared too": ["algorithm.name=gvf-shared-encoders"],
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


def finished(folder: Path, compare: tuple[str, ...]) -> dict | None:
    """The summaries of a unit that already ran to its end in ``folder`` (``--workdir``), else None."""
    paths = {"gvf": folder / "summary.json"}
    paths.update({name: folder / "baselines" / name / "summary.json" for name in compare})
    if not all(path.is_file() for path in paths.values()):
        return None
    return {name: json.loads(path.read_text()) for name, path in paths.items()}


def run_unit(base: list[str], seed: int, extra: list[str], rounds: int, smoke: bool, folder: Path) -> dict:
    """One run: gvf (with an ablation's ``extra`` overrides) and, when ``extra`` is empty, the baselines.

    A unit whose folder already holds every summary (a ``--workdir`` filled by an earlier invocation)
    is read back instead of rerun.
    """
    compare = () if extra else BASELINES
    done = finished(folder, compare)
    if done is not None:
        return done
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
    ablations: dict[str, list[str]] | None = None,
    collect: bool = False,
) -> dict[str, dict[str, list[dict]]]:
    """Summaries by task and row name: the baselines and gvf per seed, each ablation per ablation seed.

    Every (task, seed, variant) is one independent run in ``workdir/<task>-<variant>-s<seed>``,
    spread over ``jobs`` processes. ``collect``: run nothing, read the units that finished in
    ``workdir`` (a row then has fewer seeds; the table says how many).
    """
    if ablations is None:
        ablations = dict(list(ABLATIONS.items())[:1]) if smoke else ABLATIONS
    # the main units (three runs each) first, so the long ones do not start last
    units = [(name, None, seed, []) for name in tasks for seed in seeds]
    units += [
        (name, label, seed, extra)
        for name in tasks
        for label, extra in ablations.items()
        for seed in ablation_seeds
    ]
    if collect:
        units = [u for u in units if finished(workdir / _unit_dir(*u[:3]), () if u[3] else BASELINES)]
    out: dict[str, dict[str, list[dict]]] = {
        name: {row: [] for row in (*BASELINES, "gvf", *(f"gvf, {a}" for a in ablations))} for name in tasks
    }
    with ProcessPoolExecutor(max(1, jobs)) as pool:
        futures = [
            (
                name,
                label,
                pool.submit(
                    run_unit, tasks[name], seed, extra, rounds, smoke, workdir / _unit_dir(name, label, seed)
                ),
            )
            for name, label, seed, extra in units
        ]
        for name, label, future in futures:  # in submission order: rows stay in seed order
            summaries = future.result()
            if label is None:
                for row in (*BASELINES, "gvf"):
                    out[name][row].append(summaries[row])
            else:
                out[name][f"gvf, {label}"].append(summaries["gvf"])
    return {name: {row: runs for row, runs in rows.items() if runs} for name, rows in out.items()}


def _unit_dir(task: str, label: str | None, seed: int) -> str:
    """The folder name of one unit: ``synthetic-main-s0``, ``fsdd-digits-no-gating-concatenation-s0``."""
    variant = "main" if label is None else "-".join("".join(c if c.isalnum() else " " for c in label).split())
    return f"{task}-{variant}-s{seed}"


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
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="seeds of the main rows")
    parser.add_argument("--ablation-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=4, help="runs in parallel processes")
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic run, one seed, one ablation")
    parser.add_argument("--output", type=Path, default=BENCHMARKS_MD)
    parser.add_argument("--shared", type=Path, default=SHARED, help="the folder holding datasets/")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the run folders here; units that already finished in it are read, not rerun "
        "(so a run can be split over several invocations and collected by a last one)",
    )
    parser.add_argument(
        "--collect",
        action="store_true",
        help="with --workdir: run nothing; tabulate the units that finished there",
    )
    parser.add_argument(
        "--run-only",
        action="store_true",
        help="with --workdir: run the units, write no table (a part of a split run)",
    )
    parser.add_argument("--tasks", nargs="+", help="run only these tasks (default: all available)")
    parser.add_argument(
        "--ablations", nargs="*", help=f"run only these ablations (default: all of {list(ABLATIONS)})"
    )
    args = parser.parse_args()
    if args.run_only and args.workdir is None:
        parser.error("--run-only: needs --workdir (the runs would be lost)")
    if args.collect and args.workdir is None:
        parser.error("--collect: needs --workdir (the folder the runs finished in)")
    if not args.seeds and not args.run_only:
        parser.error("--seeds: at least one seed for the main rows (or --run-only)")
    unknown = sorted(set(args.ablations or ()) - set(ABLATIONS))
    if unknown:
        parser.error(f"--ablations: unknown {unknown[0]!r}; choose from {list(ABLATIONS)}")
    seeds = args.seeds[:1] if args.smoke else args.seeds
    ablation_seeds = args.ablation_seeds[:1] if args.smoke else args.ablation_seeds
    rounds = 1 if args.smoke else args.rounds
    start = time.perf_counter()
    lines: list[str] = []
    tasks = datasets(args.shared, args.smoke)
    if args.tasks:
        unknown = sorted(set(args.tasks) - set(tasks))
        if unknown:
            parser.error(f"--tasks: {unknown[0]!r} is not available; choose from {list(tasks)}")
        tasks = {name: tasks[name] for name in args.tasks}
    ablations = None if args.ablations is None else {a: ABLATIONS[a] for a in args.ablations}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        results = run_all(
            tasks, seeds, ablation_seeds, rounds, args.smoke, workdir, args.jobs, ablations, args.collect
        )
    if args.run_only:
        return
    for name in tasks:
        if "gvf" in results[name]:  # (a --collect finds no finished run of a task: no table)
            lines += [*table(name, results[name]), ""]
    command = "python benchmarks/gvf.py" + (" --smoke" if args.smoke else "")
    if not args.smoke and (seeds != [0, 1, 2] or rounds != 10 or ablation_seeds != [0, 1, 2]):
        command += f" --rounds {rounds} --seeds {' '.join(map(str, seeds))}"
        command += f" --ablation-seeds {' '.join(map(str, ablation_seeds))}"
    if args.ablations is not None:
        command += " --ablations " + " ".join(f"'{a}'" for a in args.ablations)
    took = f"{(time.perf_counter() - start) / 60:.0f} min on a shared 2-core machine"
    if args.collect:
        command += " --workdir DIR --collect"
        took = (
            "the runs were split over several `--run-only` invocations into one work folder and "
            "collected; a row's `seeds` column says how many of its runs finished"
        )
    intro = [
        "### Global-vector fusion (gvf)",
        "",
        f"2 single-modality-A, 2 single-modality-B and 6 complete clients; {rounds} rounds, "
        f"{'tiny' if args.smoke else 'default'} sizes; main rows over seeds {', '.join(map(str, seeds))}, "
        f"ablation rows over seed(s) {', '.join(map(str, ablation_seeds))}; mean ± std. "
        "Each client group's metric is the mean over its clients of the model that client deploys "
        "(local, gvf: its own; fedavg: the global model on the modalities it holds). "
        f"Command: `{command}` ({took}).",
        "",
    ]
    section = "\n".join(intro + lines)
    publish(section, args.output, SECTION, args.smoke)


if __name__ == "__main__":
    main()
