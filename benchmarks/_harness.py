"""The benchmark harness: rows x seeds of measurements, stored results, and the section they publish.

A benchmark script declares a :class:`Benchmark`: its BENCHMARKS.md section, its rows (a name and
run-config overrides each), how one (row, seed) is measured (by default a fedmosaic run through the
public API, ``Federation.from_config``) and how the stored results render as markdown. The harness
owns everything else, so that it is written once:

* the options every script takes: ``--seeds``, ``--rounds``, ``--smoke``, ``--output``,
  ``--results DIR``, ``--from-results``, ``--resume``, ``--jobs``, ``--note``, ``--shared``;
* the loop: seeds outer, rows inner (a stopped benchmark has every row at its first seeds), one
  task built per seed and shared by the rows that only change the algorithm (the same split for
  every algorithm, as ``fedmosaic run``'s ``compare`` does), or ``--jobs`` processes;
* the results file ``<results>/<section>.json``: the numbers of every run (a run's ``summary.json``
  without its folder), the command that reproduces them, the options, and when, where and at which
  load they were measured. It is rewritten after every run, so ``--resume`` continues a stopped
  benchmark and a long one can be split over invocations;
* publishing: the section is *always* rendered from the results file read back from disk, so
  ``--from-results`` (render only, nothing run) gives the published section byte for byte, and a
  render that reads anything but the stored results (the clock, the machine) shows up at once.
  The harness ends every section with when, at which commit and at which machine load its numbers
  were measured and what they cost (:func:`provenance`), so no script writes that by hand. Figures
  are drawn from the stored results too (``draw``). Smoke mode (tiny sizes, one seed) stores into a
  temporary folder and only prints.

Why one harness: the scripts had grown thirteen copies of the option parsing, seed loop, smoke switch
and command-line reconstruction, and each stored its runs its own way (``--keep``, ``--cache``,
``--workdir``) or not at all, so most sections could not be regenerated without rerunning them.

A script whose loop is not rows x seeds of runs (the Flower processes, the throughput comparison)
uses :func:`parser` and :func:`standalone` around its own measurement: same options, results file and
publishing.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import resource
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SHARED = ROOT.parent / "shared"  # the real data sets: ../shared/datasets beside the project, or --shared
RESULTS = ROOT / "benchmarks" / "results"
# The tiny synthetic image+text task of smoke runs: every code path in seconds, numbers meaningless.
TINY = [
    "task.options.n_samples=300",
    "task.proxy_size=20",
    "task.labelled_size=20",
    "model.embed_dim=16",
    "model.text_hidden=16",
]
Results = dict[str, Any]
# options that say how it runs, never what is measured: left out of the command and the stored options
# (as is every path: where the data is read and the outputs go)
_NOT_IN_COMMAND = {"from_results", "resume", "jobs", "note", "timeout"}


@dataclass(frozen=True)
class Row:
    """One line of a table: its name and the run-config overrides (``--set`` values) that make it."""

    name: str
    overrides: tuple[str, ...] = ()
    seeds: tuple[int, ...] | None = None  # None: the run's --seeds (ablations may use fewer)
    params: dict[str, Any] = field(default_factory=dict)  # what else the measurement varies (JSON-able)


@dataclass
class Context:
    """What a measurement may use besides its row and seed: the options and a scratch folder."""

    args: argparse.Namespace
    workdir: Path
    data: dict[str, Any] = field(default_factory=dict)  # what prepare() made (data folders, ...)
    _tasks: dict[tuple[str, ...], Any] = field(default_factory=dict)

    @property
    def smoke(self) -> bool:
        """Tiny sizes: the script proves it runs, its numbers mean nothing."""
        return bool(self.args.smoke)

    def task(self, cfg: Any) -> Any:
        """The task ``cfg`` describes, built once for every config that differs only in ``algorithm``."""
        from fedmosaic import build_task

        tree = cfg.to_toml_dict()
        for block in ("algorithm", "compare", "output"):  # what runs on the data, not the data
            tree.pop(block, None)
        for key in ("workers", "progress", "eval_every"):
            tree.get("engine", {}).pop(key, None)
        key = (json.dumps(tree, sort_keys=True, default=str),)
        if key not in self._tasks:
            self._tasks.clear()  # one task alive at a time: seeds are the outer loop
            self._tasks[key] = build_task(cfg)
        return self._tasks[key]

    def folder(self, *parts: object) -> Path:
        """A fresh run folder under the scratch folder."""
        name = "-".join("".join(c if c.isalnum() else "_" for c in str(p)) for p in parts)
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workdir))


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (client pools, worker processes)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def federation_run(
    overrides: Iterable[str],
    ctx: Context,
    *,
    client_wrappers: Iterable[Callable[[Any], Any]] = (),
    keep_rows: bool = False,
) -> dict[str, Any]:
    """One fedmosaic run of ``overrides`` (seed included) through the public API: its summary plus
    ``cpu_s`` (and with ``keep_rows`` its metrics rows, ``rows``, for the measurement to digest: they
    are too big to store); the task is shared with the other rows of the seed (:meth:`Context.task`)."""
    from fedmosaic import Federation, load_config

    cfg = load_config(None, ["engine.progress=false", "output.plots=false", "compare=[]", *overrides])
    task = ctx.task(cfg)
    start = cpu_seconds()
    fed = Federation.from_config(
        cfg, task, folder=ctx.folder(cfg.algorithm.name, cfg.seed), client_wrappers=list(client_wrappers)
    )
    summary = fed.run()
    summary["cpu_s"] = cpu_seconds() - start
    summary.get("data", {}).pop("skipped_examples", None)  # file names of the machine it ran on
    if keep_rows:
        summary["rows"] = fed.rows()
    return summary


def majority_class(task: Any) -> dict[str, float]:
    """Metrics on the test set of always predicting the clients' most frequent training class: the
    trivial baseline every method must clearly beat for the evaluation to mean anything."""
    from fedmosaic.core.metrics import classification_metrics

    train = np.concatenate([c.train.labels for c in task.clients])
    guess = int(np.bincount(train, minlength=task.info.num_classes).argmax())
    y = task.test.labels
    return classification_metrics(y, np.full_like(y, guess), task.info.num_classes)


def default_measure(row: Row, seed: int, ctx: Context) -> dict[str, Any]:
    """A row's fedmosaic run at ``seed`` with the script's common overrides (``ctx.data['common']``)."""
    rounds = [f"rounds={ctx.args.rounds}"] if getattr(ctx.args, "rounds", None) else []
    return federation_run([*ctx.data.get("common", []), *rounds, f"seed={seed}", *row.overrides], ctx)


def smoke_prepare(overrides: Iterable[str]) -> Callable[[Context], None]:
    """A ``prepare`` that gives every run ``overrides`` in smoke mode only (the tiny sizes)."""
    tiny = list(overrides)

    def prepare(ctx: Context) -> None:
        ctx.data["common"] = tiny if ctx.smoke else []

    return prepare


@dataclass
class Benchmark:
    """A benchmark script: a section, its rows, one measurement per (row, seed) and the renderer.

    ``rows(args)`` lists the rows for these options (smoke mode: fewer, smaller); ``measure(row, seed,
    ctx)`` returns the numbers of one run (JSON-able); ``render(results)`` turns the stored results into
    the section's markdown and must read nothing else. ``prepare(ctx)`` runs once before the loop
    (unpack a data set, set ``ctx.data['common']``); ``once(ctx)`` measures numbers that belong to
    the whole section rather than a run (a majority-class line), stored under ``results['once']``.
    """

    section: str
    doc: str
    script: str
    rows: Callable[[argparse.Namespace], list[Row]]
    render: Callable[[Results], str]
    measure: Callable[[Row, int, Context], dict[str, Any]] = default_measure
    rounds: int | None = None
    smoke_rounds: int = 2
    seeds: tuple[int, ...] = (0, 1, 2)
    prepare: Callable[[Context], None] | None = None
    once: Callable[[Context], dict[str, Any]] | None = None
    options: Callable[[argparse.ArgumentParser], None] | None = None
    draw: Callable[[Results, argparse.Namespace], None] | None = None  # figures, from the stored results

    def parser(self) -> argparse.ArgumentParser:
        """The common options plus the script's own."""
        p = parser(self.doc, seeds=self.seeds, rounds=self.rounds)
        if self.options is not None:
            self.options(p)
        return p

    def main(self, argv: list[str] | None = None) -> Results:
        """Parse the options, run (or, with ``--from-results``, only read) and publish the section."""
        commit = git_commit()  # now, while the code that runs is the code on disk
        p = self.parser()
        return self.execute(p, p.parse_args(argv), commit)

    def execute(self, p: argparse.ArgumentParser, args: argparse.Namespace, commit: str) -> Results:
        """Run the rows x seeds (unless ``--from-results``), then publish from the stored results.

        ``p`` parsed ``args``: a script with two sections parses once and executes each."""
        smoke_defaults(args, self.smoke_rounds if self.rounds is not None else None)
        path = results_path(args, self.section)
        if not args.from_results:
            session = start_session(commit)  # the data preparation is part of the cost
            with tempfile.TemporaryDirectory() as tmp:
                ctx = Context(args, Path(tmp))
                if self.prepare is not None:
                    self.prepare(ctx)
                self._loop(p, args, ctx, path, session)
        stored = load(path)
        if self.draw is not None:
            self.draw(stored, args)
        publish_stored(stored, self.render, args)
        return stored

    def _loop(
        self,
        p: argparse.ArgumentParser,
        args: argparse.Namespace,
        ctx: Context,
        path: Path,
        session: dict[str, Any],
    ) -> None:
        rows = self.rows(args)
        old = load(path) if args.resume and path.is_file() else None
        stored = new_results(self.section, self.script, p, args, old)
        units = [
            (row, seed)
            for seed in sorted({s for row in rows for s in (row.seeds or args.seeds)})
            for row in rows
            if seed in (row.seeds or args.seeds)
        ]
        done = {(r["row"], r["seed"], tuple(r["overrides"])) for r in stored["runs"]}
        todo = [(row, seed) for row, seed in units if (row.name, seed, row.overrides) not in done]
        if self.once is not None and ("once" not in stored or not args.resume):
            stored["once"] = self.once(ctx)
        if args.jobs > 1 and len(todo) > 1:
            with ProcessPoolExecutor(args.jobs) as pool:
                futures = [
                    (row, seed, pool.submit(_timed, self.measure, row, seed, ctx)) for row, seed in todo
                ]
                for row, seed, future in futures:
                    record(stored, row, seed, *future.result(), path)
        else:
            for row, seed in todo:
                record(stored, row, seed, *_timed(self.measure, row, seed, ctx), path)
        order = {(row.name, seed): k for k, (row, seed) in enumerate(units)}
        stored["runs"] = sorted(
            (r for r in stored["runs"] if (r["row"], r["seed"]) in order),
            key=lambda r: order[r["row"], r["seed"]],
        )
        store(stored, path, session)


def _timed(measure: Callable[..., dict[str, Any]], row: Row, seed: int, ctx: Context) -> tuple[dict, float]:
    start = time.perf_counter()
    numbers = measure(row, seed, ctx)
    return numbers, time.perf_counter() - start


def record(stored: Results, row: Row, seed: int, numbers: dict[str, Any], wall: float, path: Path) -> None:
    """Add one run's numbers (replacing an older run of the same row and seed) and save the file."""
    stored["runs"] = [r for r in stored["runs"] if (r["row"], r["seed"]) != (row.name, seed)]
    stored["runs"].append(
        {
            "row": row.name,
            "seed": seed,
            "overrides": list(row.overrides),
            "params": row.params,
            "wall_s": wall,
            "numbers": numbers,
        }
    )
    print(f"{row.name} seed {seed}: {wall:.0f} s", flush=True)
    save(stored, path)


def parser(
    doc: str, *, seeds: Iterable[int] | None = (0, 1, 2), rounds: int | None = None, loop: bool = True
) -> argparse.ArgumentParser:
    """The options every benchmark script takes (``doc``: the script's docstring). ``seeds=None``: the
    script has no seeds; ``loop=False``: it runs its own loop (no ``--resume``, ``--jobs``)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    if seeds is not None:
        p.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
    if rounds is not None:
        p.add_argument("--rounds", type=int, default=rounds)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one seed; prints, publishes nothing")
    p.add_argument(
        "--output", type=Path, default=BENCHMARKS_MD, help="the markdown file the section goes into"
    )
    p.add_argument("--results", type=Path, help=f"folder of the results files (default {RESULTS})")
    p.add_argument(
        "--from-results", action="store_true", help="run nothing: write the section from the stored results"
    )
    if loop:
        p.add_argument(
            "--resume", action="store_true", help="keep the stored runs; run only the missing ones"
        )
        p.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    p.add_argument("--note", default="", help="a sentence stored with the results and shown in the section")
    p.add_argument("--shared", type=Path, default=SHARED, help="the folder holding datasets/")
    return p


def standalone(
    section: str,
    script: str,
    p: argparse.ArgumentParser,
    args: argparse.Namespace,
    measure: Callable[[], dict[str, Any]],
    render: Callable[[Results], str],
    smoke_rounds: int | None = None,
) -> Results:
    """For a script with a loop of its own: ``measure()`` gives all its numbers, stored as one run
    (unless ``--from-results``), then the section is published from the stored results."""
    commit = git_commit()
    smoke_defaults(args, smoke_rounds)
    path = results_path(args, section)
    if not args.from_results:
        session = start_session(commit)
        stored = new_results(section, script, p, args)
        start = time.perf_counter()
        numbers = measure()
        record(stored, Row(section), 0, numbers, time.perf_counter() - start, path)
        store(stored, path, session)
    stored = load(path)
    publish_stored(stored, render, args)
    return stored


def smoke_defaults(args: argparse.Namespace, smoke_rounds: int | None = None) -> None:
    """Smoke mode: one seed, few rounds, results in a temporary folder unless ``--results`` names one."""
    if args.smoke:
        if getattr(args, "seeds", None) is not None:
            args.seeds = args.seeds[:1]
        if smoke_rounds is not None and getattr(args, "rounds", None) is not None:
            args.rounds = smoke_rounds
        if args.results is None:
            args.results = Path(tempfile.mkdtemp(prefix="bench-smoke-"))
            atexit.register(shutil.rmtree, args.results, True)


def results_path(args: argparse.Namespace, section: str) -> Path:
    """``<results>/<section>.json``."""
    return (args.results or RESULTS) / f"{section}.json"


def command(script: str, p: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The command that reproduces these results: the script and every option not at its default
    (where the output goes and how many processes run it are left out: they change no number)."""
    parts = [f"python {script}"]
    for action in p._actions:  # argparse has no public list of its options
        dest = action.dest
        if dest in _NOT_IN_COMMAND or not action.option_strings or dest == "help":
            continue
        value = getattr(args, dest, None)
        if value == action.default or isinstance(value, Path) or (dest in ("seeds", "rounds") and args.smoke):
            continue  # smoke picks its own seeds and rounds
        flag = action.option_strings[-1]
        if isinstance(value, bool):
            parts.append(flag)
        elif isinstance(value, list):
            parts.append(f"{flag} " + " ".join(_quote(v) for v in value))
        else:
            parts.append(f"{flag} {_quote(value)}")
    return " ".join(parts)


def _quote(value: object) -> str:
    text = str(value)
    return text if re.fullmatch(r"[\w.,:=+/-]+", text) else "'" + text.replace("'", "'\\''") + "'"


def new_results(
    section: str,
    script: str,
    p: argparse.ArgumentParser,
    args: argparse.Namespace,
    old: Results | None = None,
) -> Results:
    """An empty results record (or, with ``--resume``, the stored one) for these options."""
    options = {k: v for k, v in vars(args).items() if k not in _NOT_IN_COMMAND and not isinstance(v, Path)}
    fresh = {
        "section": section,
        "script": script,
        "command": command(script, p, args),
        "options": options,
        "runs": [],
        "sessions": [],
        "notes": [args.note] if getattr(args, "note", "") else [],
    }
    if old is None:
        return fresh
    if old.get("options") != options:
        raise SystemExit(f"--resume: the stored results were made with other options: {old.get('options')}")
    if args.note:
        old["notes"] = [*old.get("notes", []), args.note]
    return old


def start_session(commit: str) -> dict[str, Any]:
    """When, where and at which load a measurement starts (closed by :func:`store`)."""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "cores": os.cpu_count(),
        "load_before": round(os.getloadavg()[0], 2),
        "_wall0": time.perf_counter(),
        "_cpu0": cpu_seconds(),
    }


def git_commit() -> str:
    """The checked-out commit, marked when the code (``src``, the scripts) differs from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "benchmarks/*.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def store(stored: Results, path: Path, session: dict[str, Any]) -> None:
    """Close ``session`` (wall and CPU seconds, load after) into ``stored`` and save it to ``path``."""
    session = dict(session)
    session["wall_s"] = round(time.perf_counter() - session.pop("_wall0"), 1)
    session["cpu_s"] = round(cpu_seconds() - session.pop("_cpu0"), 1)
    session["load_after"] = round(os.getloadavg()[0], 2)
    stored["sessions"] = [*stored.get("sessions", []), session]
    save(stored, path)


def save(stored: Results, path: Path) -> None:
    """Write the results file (numpy numbers as plain floats; a partial file replaced atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(stored, indent=1, default=_plain) + "\n")
    tmp.replace(path)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON: {type(value).__name__}")


def load(path: Path) -> Results:
    """A stored results file (one section's)."""
    if not path.is_file():
        raise SystemExit(f"{path}: no stored results; run the benchmark first")
    return json.loads(path.read_text())


def rendered(stored: Results, render: Callable[[Results], str]) -> str:
    """The section of the stored results: the script's text, then where and when they were measured."""
    return "\n\n".join(part for part in (render(stored).strip(), provenance(stored)) if part)


def publish_stored(stored: Results, render: Callable[[Results], str], args: argparse.Namespace) -> str:
    """Render the stored results; print the section, and outside smoke mode write it into ``--output``."""
    section = rendered(stored, render)
    publish(section, args.output, stored["section"], args.smoke)
    return section


def by_row(stored: Results) -> dict[str, list[dict[str, Any]]]:
    """Each row's numbers, in row order, one per seed (in seed order)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for run in stored["runs"]:
        out.setdefault(run["row"], []).append(run["numbers"])
    return out


def seeds_of(stored: Results) -> list[int]:
    """The seeds the runs used, in order."""
    return sorted({r["seed"] for r in stored["runs"]})


def provenance(stored: Results) -> str:
    """One line: when, at which commit and how loaded the machine was when the numbers were measured,
    and what they cost (wall and CPU seconds over every session that ran)."""
    sessions = stored.get("sessions", [])
    if not sessions:
        return ""
    wall = sum(s["wall_s"] for s in sessions)
    cpu = sum(s["cpu_s"] for s in sessions)
    loads = [s[k] for s in sessions for k in ("load_before", "load_after")]
    dates = sorted({s["date"][:10] for s in sessions})
    commits = list(dict.fromkeys(s["commit"] for s in sessions))
    text = (
        f"Measured {' to '.join(dates[:: max(1, len(dates) - 1)])} at commit {', '.join(commits)}"
        f"{f' in {len(sessions)} sessions' if len(sessions) > 1 else ''}: {wall:.0f} s wall, {cpu:.0f} CPU s "
        f"in all; 1-minute load average {min(loads):g} to {max(loads):g} at the start and end of "
        f"{'each session' if len(sessions) > 1 else 'the run'} on {sessions[0]['cores']} cores "
        "(other jobs share the machine: wall seconds are inflated by their load, CPU seconds much less)."
    )
    notes = stored.get("notes", [])
    return text + ("\n\n" + "\n\n".join(notes) if notes else "")


def section_text(path: Path, name: str) -> str | None:
    """The text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` of ``path`` (None if absent)."""
    text = path.read_text()
    found = re.search(
        re.escape(f"<!-- {name}:begin -->\n") + "(.*?)" + re.escape(f"\n<!-- {name}:end -->"), text, re.S
    )
    return None if found is None else found.group(1)


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
