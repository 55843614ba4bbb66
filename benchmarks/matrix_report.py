"""The benchmark matrix's rows: per-run JSON -> aggregated rows (CSV) -> markdown section and figures.

A row is one number of one (task, algorithm): ``key`` is an evaluation key (``test/acc``,
``group/acc+gyro``, ``overall``), ``cost`` (bytes, seconds, memory) or ``data`` (set sizes);
``metric`` names the number; ``mean`` and ``std`` are over ``seeds``. The majority-class predictor
is the pseudo-algorithm ``majority class``. The CSV is small and committed, so the section and the
figures can be regenerated without rerunning anything.
"""

from __future__ import annotations

import csv
import json
import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

MAJORITY = "majority class"
METRICS = ("accuracy", "macro_f1", "weighted_f1")
FIELDS = ("task", "algorithm", "key", "metric", "mean", "std", "seeds")
COLOURS = {"fedavg": "tab:blue", "fedprox": "tab:orange", "local": "tab:green", "fedcmi": "tab:red"}
Row = dict[str, Any]
Command = Callable[[str, str, list[int]], str]


def _row(task: str, algorithm: str, key: str, metric: str, values: list[float], seeds: list[int]) -> Row:
    return {
        "task": task,
        "algorithm": algorithm,
        "key": key,
        "metric": metric,
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        "seeds": " ".join(map(str, seeds)),
    }


def complete_runs(
    results: Path, catalogue: dict[str, tuple[str, ...]], seeds: list[int]
) -> list[tuple[str, str]]:
    """Every (task, algorithm) of ``catalogue`` whose run JSON exists for all ``seeds``."""
    return [
        (task, algorithm)
        for task, algorithms in catalogue.items()
        for algorithm in algorithms
        if all((results / task / f"{algorithm}-seed{seed}.json").is_file() for seed in seeds)
    ]


def aggregate(results: Path, ran: list[tuple[str, str]], seeds: list[int]) -> list[Row]:
    """Rows (mean, std over ``seeds``) of every (task, algorithm) in ``ran``, from the per-run JSON."""
    rows: list[Row] = []
    majority_done: set[str] = set()
    for task, algorithm in ran:
        records = []
        for seed in seeds:
            records.append(json.loads((results / task / f"{algorithm}-seed{seed}.json").read_text()))
        finals = [r["summary"]["final"] for r in records]
        for key in finals[0]:
            for metric in METRICS:
                rows.append(_row(task, algorithm, key, metric, [f[key][metric] for f in finals], seeds))
        sums = [r["summary"] for r in records]
        cost = {
            "mb_up_per_round": [s["bytes_up"] / s["rounds"] / 1e6 for s in sums],
            "mb_down_per_round": [s["bytes_down"] / s["rounds"] / 1e6 for s in sums],
            "total_mb": [(s["bytes_up"] + s["bytes_down"]) / 1e6 for s in sums],
            "s_per_round": [s["seconds_per_round"] for s in sums],
            "cpu_s_per_round": [r["cpu_s"] / r["summary"]["rounds"] for r in records],
            "peak_rss_mb": [s["peak_rss_mb"] for s in sums],
            "rounds": [s["rounds"] for s in sums],
            "clients": [s["clients"] for s in sums],
            "peak_rss_is_per_run": [float(r["peak_rss_is_per_run"]) for r in records],
        }
        rows += [_row(task, algorithm, "cost", m, v, seeds) for m, v in cost.items()]
        if task not in majority_done:
            majority_done.add(task)
            for metric in METRICS:
                rows.append(
                    _row(task, MAJORITY, "test", metric, [r["majority"][metric] for r in records], seeds)
                )
            for metric in ("test", "client_train"):
                rows.append(_row(task, MAJORITY, "data", metric, [s["data"][metric] for s in sums], seeds))
    return rows


def merge(old: list[Row], fresh: list[Row]) -> list[Row]:
    """``old`` with every (task, algorithm) in ``fresh`` (and the majority rows of its tasks) replaced."""
    replaced = {(r["task"], r["algorithm"]) for r in fresh}
    return [r for r in old if (r["task"], r["algorithm"]) not in replaced] + fresh


def write_rows(path: Path, rows: list[Row]) -> None:
    """The aggregated rows as CSV (rounded: the file is committed and diffed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for row in sorted(rows, key=lambda r: (r["task"], r["algorithm"], r["key"], r["metric"])):
            writer.writerow({**row, "mean": f"{row['mean']:.6g}", "std": f"{row['std']:.6g}"})
    os.replace(tmp, path)  # never a half-written CSV


def read_rows(path: Path) -> list[Row]:
    """Rows written by :func:`write_rows`."""
    with path.open(newline="") as handle:
        return [{**r, "mean": float(r["mean"]), "std": float(r["std"])} for r in csv.DictReader(handle)]


class Table:
    """Lookup of aggregated rows by (task, algorithm, key, metric); tasks in ``order`` first."""

    def __init__(self, rows: list[Row], order: list[str]) -> None:
        self.rows = {(r["task"], r["algorithm"], r["key"], r["metric"]): r for r in rows}
        found = dict.fromkeys(r["task"] for r in rows)
        self.tasks = [t for t in order if t in found] + [t for t in found if t not in order]

    def get(self, task: str, algorithm: str, key: str, metric: str) -> Row | None:
        return self.rows.get((task, algorithm, key, metric))

    def algorithms(self, task: str) -> list[str]:
        """The task's algorithms in a fixed order (majority class excluded)."""
        found = {a for (t, a, _, _) in self.rows if t == task and a != MAJORITY}
        return sorted(found, key=lambda a: (list(COLOURS).index(a) if a in COLOURS else 99, a))

    def keys(self, task: str, algorithm: str, prefix: str) -> list[str]:
        found = {k for (t, a, k, _) in self.rows if t == task and a == algorithm and k.startswith(prefix)}
        return sorted(found, key=lambda k: (k.count("+"), k))

    def cell(self, task: str, algorithm: str, key: str, metric: str, digits: int = 3) -> str:
        row = self.get(task, algorithm, key, metric)
        return "–" if row is None else f"{row['mean']:.{digits}f} ± {row['std']:.{digits}f}"


FIGURES = {"communication": "matrix_f1_vs_bytes.png", "f1": "matrix_overall_f1.png"}


def plots(rows: list[Row], labels: dict[str, str], folder: Path) -> dict[str, Path]:
    """The two figures: macro-F1 vs total bytes per task, and overall macro-F1 per task (bars)."""
    table = Table(rows, list(labels))
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "communication": _plot_communication(table, labels, folder / FIGURES["communication"]),
        "f1": _plot_bars(table, labels, folder / FIGURES["f1"]),
    }


def _plot_communication(table: Table, labels: dict[str, str], path: Path) -> Path:
    tasks = table.tasks
    cols = min(4, len(tasks))
    nrows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(3.0 * cols, 2.7 * nrows + 0.5), squeeze=False, sharey=True)
    widest = max((r["mean"] for r in table.rows.values() if r["metric"] == "total_mb"), default=1.0)
    for ax, task in zip(axes.flat, tasks, strict=False):
        for algorithm in table.algorithms(task):
            f1 = table.get(task, algorithm, "overall", "macro_f1")
            mb = table.get(task, algorithm, "cost", "total_mb")
            if f1 is None or mb is None:
                continue
            ax.errorbar(
                mb["mean"],
                f1["mean"],
                yerr=f1["std"],
                fmt="o",
                ms=6,
                capsize=3,
                color=COLOURS.get(algorithm),
                label=algorithm,
            )
        majority = table.get(task, MAJORITY, "test", "macro_f1")
        if majority is not None:
            ax.axhline(majority["mean"], ls="--", lw=1, color="grey", label=MAJORITY)
        ax.set_xscale("symlog", linthresh=1.0)  # local exchanges 0 bytes: a log axis cannot show it
        ax.set_xlim(-0.5, widest * 3)
        ax.set_title(textwrap.fill(labels.get(task, task), 38), fontsize=7)
        ax.set_xlabel("MB exchanged in the run (up + down)", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("final overall macro-F1", fontsize=7)
    legend: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(name, handle)
    fig.legend(legend.values(), legend.keys(), loc="upper center", fontsize=7, ncol=len(legend))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (2.7 * nrows + 0.5)))
    return _save(fig, path)


def _plot_bars(table: Table, labels: dict[str, str], path: Path) -> Path:
    tasks = table.tasks
    algorithms = list(dict.fromkeys(a for t in tasks for a in table.algorithms(t)))
    width = 0.8 / max(len(algorithms), 1)
    fig, ax = plt.subplots(figsize=(1.4 * len(tasks) + 2, 3.2))
    for i, algorithm in enumerate(algorithms):
        xs, ys, es = [], [], []
        for j, task in enumerate(tasks):
            row = table.get(task, algorithm, "overall", "macro_f1")
            if row is not None:
                xs.append(j + (i - (len(algorithms) - 1) / 2) * width)
                ys.append(row["mean"])
                es.append(row["std"])
        ax.bar(xs, ys, width, yerr=es, capsize=2, color=COLOURS.get(algorithm), label=algorithm)
    for j, task in enumerate(tasks):
        row = table.get(task, MAJORITY, "test", "macro_f1")
        if row is not None:
            ax.hlines(row["mean"], j - 0.45, j + 0.45, colors="black", linestyles="--", lw=1)
    ax.set_xticks(range(len(tasks)), [textwrap.fill(labels.get(t, t), 24) for t in tasks], fontsize=6)
    ax.set_ylabel("final overall macro-F1", fontsize=8)
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=len(algorithms), loc="upper left")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def section(
    rows: list[Row],
    labels: dict[str, str],
    figures: dict[str, Path],
    md_dir: Path,
    planned: dict[str, tuple[str, ...]],
    command: Command,
) -> str:
    """The markdown section: figures, then per task a cost table and the metrics by subset and group.

    ``planned`` (task -> algorithms the matrix runs on it) names what is left out or unfinished;
    ``command(task, algorithm, seeds)`` is the command that reruns a row.
    """
    table = Table(rows, list(labels))
    rel = {k: os.path.relpath(p, md_dir) for k, p in figures.items()}
    lines = [
        "## Benchmark matrix (issue 8)",
        "",
        "Every algorithm on every task and modality mix, mean ± std over the seeds named per row. "
        "Global-model algorithms (fedavg, fedprox, fedcmi): the global model on the test set seen through "
        "each modality subset; a client group's number is the global model on that group's modalities; "
        "local: each client's own model, averaged over the clients that hold the subset (test) or over "
        "the group's clients (group). **overall** = mean over all clients of the model each client "
        "deploys on the modalities it holds. Bytes are the engine's count of every message's arrays. "
        "Seconds per round are wall time on a 2-core machine shared with other jobs; CPU seconds per "
        "round are the contention-free figure. Peak RSS: the process's high-water mark, reset before "
        "each run, so it is that run's own (task data and torch included).",
        "",
        "Common setting (sized so the whole matrix fits one hour of one CPU core): the default training "
        "block with 1 local epoch (Adam, lr 0.003, batch 32), default model (embed_dim 64), no server-side "
        "proxy or labelled data, IID split of the training samples, evaluation once after the last "
        "round; uci-hapt uses UCI-HAR's official test users (the same test windows at every seed), the 6 "
        "basic activities and 10 of its 30 clients per round; the 10-client tasks train every client "
        "every round. These are short runs (10 rounds): absolute numbers sit below longer runs (e.g. the "
        "20-round default task); the comparison between algorithms on the same split is the point.",
        "",
        "Elsewhere, not rerun here (those scripts print markdown only, no machine-readable results, so "
        "their algorithms are not in the figures below): the UCI-HAR-equivalent task beside FedMultimodal's "
        "published UCI-HAR numbers ([UCI-HAR equivalent](#uci-har-equivalent-hapt-raw-data-6-activities-"
        "official-test-users)); FedMEKT-C/-S and mmFedAvg/mmFedProx beside FedMEKT's reference tables "
        "([FedMEKT on UCI HAPT](#fedmekt-on-uci-hapt-acc--gyro-linear-evaluation), docs/fedmekt.md); "
        "FedCMI's ablations at 15 rounds ([FedCMI vs FedAvg vs local](#fedcmi-vs-fedavg-vs-local-issue-6)); "
        "global-vector fusion ([gvf](#global-vector-fusion-gvf)); the default task at 20 rounds with the "
        "centralized upper bound (first section). Published numbers are compared there, each with a note "
        "on what differs in the setting; the rows below are this project's own settings only.",
        "",
        f"![final macro-F1 against bytes exchanged]({rel['communication']})",
        "",
        f"![final overall macro-F1 per task; dashed: majority class]({rel['f1']})",
        "",
        "First figure: per task, each algorithm's final overall macro-F1 (± std over seeds) against the "
        "MB its run exchanged in all (up + down; symmetric-log axis, local sits at 0); dashed: majority "
        "class. Second: the same macro-F1 per task side by side.",
    ]
    everything = list(dict.fromkeys(a for algorithms in planned.values() for a in algorithms))
    for task in table.tasks:
        lines += ["", *_task_tables(table, task, labels.get(task, task), command)]
        present = set(table.algorithms(task))
        skipped = [a for a in everything if a not in planned.get(task, ())]
        unfinished = [a for a in planned.get(task, ()) if a not in present]
        if skipped:
            lines += ["", f"Not run on this task (CPU budget): {', '.join(skipped)}."]
        if unfinished:
            lines += ["", f"**Not finished** (no complete set of seeds): {', '.join(unfinished)}."]
    missing = [labels.get(t, t) for t in planned if t not in table.tasks]
    if missing:
        lines += ["", f"**Tasks not finished** (no complete set of seeds): {'; '.join(missing)}."]
    lines += [
        "",
        "Aggregated rows: `benchmarks/matrix_rows.csv`; `python benchmarks/matrix.py --from-results` "
        "rewrites this section and its figures from it without running anything.",
    ]
    return "\n".join(lines)


def _task_tables(table: Table, task: str, label: str, command: Command) -> list[str]:
    algorithms = table.algorithms(task)
    first = algorithms[0]
    rounds = table.get(task, first, "cost", "rounds")
    clients = table.get(task, first, "cost", "clients")
    test = table.get(task, MAJORITY, "data", "test")
    train = table.get(task, MAJORITY, "data", "client_train")
    seeds = table.get(task, first, "overall", "macro_f1")
    lines = [
        f"### {label}",
        "",
        f"{clients['mean']:.0f} clients, {rounds['mean']:.0f} rounds, "
        f"seeds {seeds['seeds'].replace(' ', ', ')}; "
        f"{test['mean']:.0f} test samples, {train['mean']:.0f} client training samples.",
        "",
        "| algorithm | overall accuracy | overall macro-F1 | overall weighted-F1 | MB up / round "
        "| MB down / round | s / round | CPU s / round | peak RSS MiB | command |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for algorithm in algorithms:
        cells = [table.cell(task, algorithm, "overall", m) for m in METRICS]
        cost = [
            table.cell(task, algorithm, "cost", "mb_up_per_round", 2),
            table.cell(task, algorithm, "cost", "mb_down_per_round", 2),
            table.cell(task, algorithm, "cost", "s_per_round", 2),
            table.cell(task, algorithm, "cost", "cpu_s_per_round", 2),
            table.cell(task, algorithm, "cost", "peak_rss_mb", 0),
        ]
        seeds = [int(x) for x in table.get(task, algorithm, "overall", "macro_f1")["seeds"].split()]
        lines.append(
            f"| {algorithm} | " + " | ".join(cells + cost) + f" | `{command(task, algorithm, seeds)}` |"
        )
    majority = [table.cell(task, MAJORITY, "test", m) for m in METRICS]
    lines.append(f"| {MAJORITY} (test set) | " + " | ".join(majority) + " | 0 | 0 | – | – | – | |")
    lines += [
        "",
        "| algorithm | evaluated on | accuracy | macro-F1 | weighted-F1 |",
        "|---|---|---:|---:|---:|",
    ]
    for prefix in ("test/", "group/"):
        for algorithm in algorithms:
            for key in table.keys(task, algorithm, prefix):
                what = ("test subset " if prefix == "test/" else "client group ") + key.removeprefix(prefix)
                cells = [table.cell(task, algorithm, key, m) for m in METRICS]
                lines.append(f"| {algorithm} | {what} | " + " | ".join(cells) + " |")
    return lines
