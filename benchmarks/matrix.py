"""Benchmark matrix: algorithm x task x modality mix x seed, with the accuracy-vs-communication plot.

Every run goes through the public API (``build_task`` once per task and seed, then one
``Federation`` per algorithm on that task, so all algorithms of a seed see the same split), is
stored as ``benchmarks/results/matrix/<task>/<algorithm>-seed<k>.json`` (gitignored), and the
aggregated rows (mean and std over seeds) go to the committed ``benchmarks/matrix_rows.csv``, from
which the ``matrix`` section of BENCHMARKS.md and its figures under ``benchmarks/figures/`` are
written. Each task runs in its own process, and the process's peak-RSS mark is reset before each
algorithm, so every row's peak memory is that run's own.

    python benchmarks/matrix.py                       # full matrix (~25 CPU min, one thread)
    python benchmarks/matrix.py --tasks hapt-mix --algorithms fedavg   # rerun one row, merge it in
    python benchmarks/matrix.py --from-results        # section + figures from matrix_rows.csv only
    python benchmarks/matrix.py --smoke               # tiny synthetic tasks, 1 seed (< 1 min, CI)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import matrix_report as report
from _harness import BENCHMARKS_MD, ROOT, SHARED, majority_class, unpack_hapt, write_section

SECTION = "matrix"
RESULTS = ROOT / "benchmarks" / "results" / "matrix"
ROWS_CSV = ROOT / "benchmarks" / "matrix_rows.csv"
FIGURES = ROOT / "benchmarks" / "figures"
ALL_ALGORITHMS = ("fedavg", "fedprox", "local", "fedcmi")
# Every run: final evaluation only (the plot needs the final numbers; local evaluates every client).
COMMON = ["compare=[]", "engine.progress=false", "engine.threads=1", "output.plots=false"]
HAPT = [
    "task.dataset=uci-hapt",
    'task.options.test_users="official"',  # UCI-HAR's 9 test users: the same test set at every seed
    'task.options.classes="basic"',
    "task.partition=iid",
    "task.proxy_size=0",
    "task.labelled_size=0",
    "clients.per_round=10",
    "training.local_epochs=1",
]
SMOKE = [
    "task.dataset=synthetic",
    "task.options.n_samples=240",
    "task.proxy_size=0",
    "task.labelled_size=0",
    "training.local_epochs=1",
    "model.embed_dim=16",
    "model.text_hidden=16",
]


@dataclass(frozen=True)
class MatrixTask:
    """One matrix task: a data set, a modality mix or drop rate, its rounds and its algorithms."""

    name: str
    label: str
    overrides: tuple[str, ...]
    algorithms: tuple[str, ...]
    rounds: int
    needs: str = ""  # "hapt" or "fsdd": the shared data set it reads

    def config_overrides(self, shared: Path, hapt_dir: Path | None, seed: int) -> list[str]:
        """The run-config overrides of this task for ``seed`` (data folders filled in)."""
        out = [*COMMON, f"seed={seed}", f"rounds={self.rounds}", f"engine.eval_every={self.rounds}"]
        if self.needs == "hapt":
            out.append(f"task.data_dir={hapt_dir}")
        elif self.needs == "fsdd":
            out.append(f"task.data_dir={shared / 'datasets' / 'fsdd'}")
        return out + list(self.overrides)


def _drop(rate: float) -> MatrixTask:
    return MatrixTask(
        f"hapt-drop-{rate}",
        f"uci-hapt, 30 clients, modality drop rate {rate}",
        (*HAPT, 'clients.mix=""', "clients.count=30", f"clients.drop_rate={rate}"),
        ("fedavg", "local", "fedcmi"),
        10,
        "hapt",
    )


TASKS: dict[str, MatrixTask] = {
    t.name: t
    for t in (
        MatrixTask(
            "hapt-mix",
            "uci-hapt, 10 acc / 10 gyro / 10 acc+gyro clients",
            (*HAPT, 'clients.mix="acc:10,gyro:10,acc+gyro:10"'),
            ALL_ALGORITHMS,
            10,
            "hapt",
        ),
        MatrixTask(
            "hapt-complete",
            "uci-hapt, 30 complete (acc+gyro) clients",
            (*HAPT, 'clients.mix="acc+gyro:30"'),
            ("fedavg", "fedprox", "local"),
            10,
            "hapt",
        ),
        _drop(0.1),
        _drop(0.3),
        _drop(0.5),
        MatrixTask(
            "fsdd-mix",
            "fsdd-digits, 2 image / 2 audio / 6 image+audio clients",
            (
                "task.dataset=fsdd-digits",
                "task.proxy_size=0",
                "task.labelled_size=0",
                'clients.mix="each:2,all:6"',
                "training.local_epochs=1",
            ),
            ALL_ALGORITHMS,
            10,
            "fsdd",
        ),
        MatrixTask(
            "synthetic-mix",
            "synthetic image+text, 2 image / 2 text / 6 image+text clients",
            (
                "task.dataset=synthetic",
                "task.proxy_size=0",
                "task.labelled_size=0",
                'clients.mix="each:2,all:6"',
                "training.local_epochs=1",
            ),
            ALL_ALGORITHMS,
            10,
        ),
    )
}
# The full matrix runs the cheapest and most-asked-for tasks first: if it is stopped, those are done.
RUN_ORDER = [
    "synthetic-mix",
    "hapt-mix",
    "fsdd-mix",
    "hapt-drop-0.5",
    "hapt-complete",
    "hapt-drop-0.3",
    "hapt-drop-0.1",
]
SMOKE_TASKS: dict[str, MatrixTask] = {
    "smoke-mix": MatrixTask(
        "smoke-mix", "synthetic (tiny), 2 / 2 / 6", (*SMOKE, 'clients.mix="each:2,all:6"'), ALL_ALGORITHMS, 2
    ),
    "smoke-drop-0.3": MatrixTask(
        "smoke-drop-0.3",
        "synthetic (tiny), 10 clients, drop rate 0.3",
        (*SMOKE, 'clients.mix=""', "clients.count=10", "clients.drop_rate=0.3"),
        ("fedavg", "local"),
        2,
    ),
}


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark to its current RSS (Linux ``clear_refs``); False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _result_path(out: Path, task: str, algorithm: str, seed: int) -> Path:
    return out / task / f"{algorithm}-seed{seed}.json"


def run_task(
    spec: MatrixTask,
    algorithms: list[str],
    seeds: list[int],
    shared: Path,
    out: Path,
    work: Path,
    resume: bool = False,
) -> None:
    """Run ``algorithms`` on ``spec`` for each seed; one JSON per run under ``out/<task>/``.

    ``resume`` skips the runs whose JSON is already there (a stopped matrix continues).
    """
    from fedmosaic.config import load_config, validate
    from fedmosaic.data.tasks import build_task
    from fedmosaic.engines.federation import Federation

    hapt_dir = unpack_hapt(shared, work) if spec.needs == "hapt" else None
    for seed in seeds:
        pending = [a for a in algorithms if not (resume and _result_path(out, spec.name, a, seed).is_file())]
        if not pending:
            continue
        base = load_config(None, spec.config_overrides(shared, hapt_dir, seed))
        task = build_task(base)
        majority = majority_class(task)
        for name in pending:
            tree = base.to_toml_dict()
            tree["algorithm"] = {"name": name}
            cfg = validate(tree)
            exact_peak = reset_peak_rss()
            cpu0 = time.process_time()
            folder = work / f"{spec.name}-{name}-{seed}"
            summary = Federation.from_config(cfg, task, folder=folder).run()
            record = {
                "task": spec.name,
                "algorithm": name,
                "seed": seed,
                "cpu_s": time.process_time() - cpu0,
                "peak_rss_is_per_run": exact_peak,
                "majority": majority,
                "summary": summary,
            }
            path = _result_path(out, spec.name, name, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=1, sort_keys=True))
            overall = summary["final"]["overall"]["macro_f1"]
            print(
                f"{spec.name} {name} seed {seed}: overall macro-F1 {overall:.3f}, "
                f"{record['cpu_s']:.0f} CPU s",
                flush=True,
            )


def run_in_subprocess(
    spec: MatrixTask, algorithms: list[str], seeds: list[int], args: argparse.Namespace
) -> None:
    """Run one task in a fresh interpreter (its memory and peak RSS are its own)."""
    cmd = [sys.executable, __file__, "--worker", spec.name, "--algorithms", *algorithms]
    cmd += ["--seeds", *map(str, seeds), "--shared", str(args.shared), "--results", str(args.results)]
    cmd += ["--smoke"] if args.smoke else []
    cmd += ["--resume"] if args.resume else []
    subprocess.run(cmd, check=True)


def row_command(task: str, algorithm: str, seeds: list[int]) -> str:
    """The command that reruns one row and merges it into the section."""
    extra = "" if seeds == [0, 1, 2] else f" --seeds {' '.join(map(str, seeds))}"
    return f"python benchmarks/matrix.py --tasks {task} --algorithms {algorithm}{extra}"


def smoke_command(task: str, algorithm: str, seeds: list[int]) -> str:
    """The smoke rows' command."""
    return f"python benchmarks/matrix.py --smoke --tasks {task} --algorithms {algorithm}"


def stored_section(rows_csv: Path = ROWS_CSV, figures: Path = FIGURES, output: Path = BENCHMARKS_MD) -> str:
    """The published section from the committed rows alone (the figures already drawn in ``figures``)."""
    labels = {n: t.label for n, t in TASKS.items()}
    paths = {k: figures / name for k, name in report.FIGURES.items()}
    planned = {n: t.algorithms for n, t in TASKS.items()}
    return report.section(report.read_rows(rows_csv), labels, paths, output.parent, planned, row_command)


def _smoke_paths(args: argparse.Namespace) -> None:
    """Smoke runs never write the published files: outputs left at their defaults go to a temp folder."""
    scratch = Path(tempfile.mkdtemp(prefix="matrix-smoke-"))
    defaults = {"results": RESULTS, "rows": ROWS_CSV, "figures": FIGURES, "output": BENCHMARKS_MD}
    for name, default in defaults.items():
        if getattr(args, name) == default:
            setattr(args, name, scratch / default.name)
    print(f"smoke outputs under {scratch}" if args.worker is None else "", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", help="task names (default: all)")
    parser.add_argument("--algorithms", nargs="+", help="algorithms (default: each task's own list)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic tasks, 1 seed, 2 rounds")
    parser.add_argument(
        "--from-results",
        action="store_true",
        help="no runs: section and figures from the CSV (and any finished runs' JSON)",
    )
    parser.add_argument("--shared", type=Path, default=SHARED, help="the folder holding datasets/")
    parser.add_argument("--results", type=Path, default=RESULTS, help="per-run JSON folder")
    parser.add_argument("--rows", type=Path, default=ROWS_CSV, help="aggregated rows (CSV)")
    parser.add_argument("--figures", type=Path, default=FIGURES)
    parser.add_argument("--output", type=Path, default=BENCHMARKS_MD)
    parser.add_argument("--resume", action="store_true", help="skip runs whose JSON is already stored")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # run one task in this process
    args = parser.parse_args()
    catalogue = SMOKE_TASKS if args.smoke else TASKS
    seeds = args.seeds[:1] if args.smoke else args.seeds
    if args.smoke:
        _smoke_paths(args)
    if args.worker:
        spec = catalogue[args.worker]
        with tempfile.TemporaryDirectory() as tmp:
            run_task(spec, args.algorithms, seeds, args.shared, args.results, Path(tmp), args.resume)
        return
    names = args.tasks or sorted(catalogue, key=lambda n: RUN_ORDER.index(n) if n in RUN_ORDER else 0)
    unknown = [n for n in names if n not in catalogue]
    if unknown:
        parser.error(f"--tasks: unknown task {unknown[0]!r}; choose from {', '.join(catalogue)}")
    if args.algorithms:
        bad = [a for a in args.algorithms if a not in ALL_ALGORITHMS]
        if bad:
            parser.error(f"--algorithms: {bad[0]!r} is not one of {', '.join(ALL_ALGORITHMS)}")
    failed: list[str] = []
    if not args.from_results:
        t0 = time.perf_counter()
        for name in names:
            spec = catalogue[name]
            algorithms = [a for a in spec.algorithms if not args.algorithms or a in args.algorithms]
            if algorithms:
                try:
                    run_in_subprocess(spec, algorithms, seeds, args)
                except subprocess.CalledProcessError:
                    failed.append(name)  # the other tasks still run; what finished is kept
        print(f"matrix runs: {time.perf_counter() - t0:.0f} s wall", flush=True)
    rows = report.read_rows(args.rows) if args.rows.exists() else []
    command = smoke_command if args.smoke else row_command
    done = report.complete_runs(args.results, {n: t.algorithms for n, t in catalogue.items()}, seeds)
    rows = report.merge(rows, report.aggregate(args.results, done, seeds))
    if not rows:
        raise SystemExit(
            f"no finished runs in {args.results} and no rows in {args.rows}: run the matrix first"
        )
    report.write_rows(args.rows, rows)
    rows = report.read_rows(args.rows)  # the section always shows what the CSV holds
    labels = {n: t.label for n, t in catalogue.items()}
    planned = {n: t.algorithms for n, t in catalogue.items()}
    figures = report.plots(rows, labels, args.figures)
    section = report.section(rows, labels, figures, args.output.parent, planned, command)
    print(section)
    write_section(args.output, SECTION, section)
    if failed:
        raise SystemExit(f"tasks that failed (their rows are not updated): {', '.join(failed)}")


if __name__ == "__main__":
    main()
