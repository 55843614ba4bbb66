"""report.md for one run, and side-by-side comparisons of several (``fedmosaic report``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fedmosaic.core.errors import ReportError
from fedmosaic.core.metrics import METRIC_NAMES
from fedmosaic.engines.folder_lock import FolderLock
from fedmosaic.engines.run_folder import RunFolder, read_jsonl
from fedmosaic.privacy.accounting import privacy_markdown
from fedmosaic.reporting.plots import eval_keys, plot_bytes, plot_comparison, plot_run_metrics

COMPARISON = "comparison.md"  # the side-by-side table's file name in an experiment's folder


def load_run(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(summary, metric rows)`` of a finished run folder."""
    folder = RunFolder(path)
    if not folder.summary.exists():
        raise ReportError(f"{path}: no summary.json (not a run folder, or the run has not finished)")
    return json.loads(folder.summary.read_text()), read_jsonl(folder.metrics)


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def data_notes(data: dict[str, Any]) -> list[str]:
    """What the data lost before training, one line each: skipped bad samples, lost clients.

    ``data`` is a summary's ``data`` block (``Task.data_summary()``). The same lines go to the
    terminal when a run starts and into report.md: a client that vanished is news, not a number only
    summary.json knows.
    """
    lines = []
    skipped = int(data.get("skipped", 0))
    if skipped:
        examples = list(data.get("skipped_examples", []))
        first = f"; the first: {examples[0]}" if examples else ""
        counted = f"summary.json counts them and lists the first {len(examples)}"
        lines.append(
            f"{skipped} bad sample{'s were' if skipped != 1 else ' was'} skipped "
            f'(task.on_bad_sample = "skip"){first}; {counted}'
        )
    for client in data.get("lost_clients", []):
        group = f" (group {client['group']})" if client.get("group") else ""
        lines.append(f"client {client['id']}{group} was lost, the run goes on without it: {client['reason']}")
    return lines


def metrics_table(final: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per evaluation key, one column per metric."""
    lines = ["| evaluated on | " + " | ".join(METRIC_NAMES) + " |", "|---|" + "---:|" * len(METRIC_NAMES)]
    for key in eval_keys([{"eval": final}]):
        lines.append(f"| {key} | " + " | ".join(f"{final[key][m]:.3f}" for m in METRIC_NAMES) + " |")
    return "\n".join(lines)


def write_run_report(path: Path, plots: bool = True, comparison: Path | None = None) -> Path:
    """Write ``report.md`` (and ``plots/*.png``) for the run in ``path``; link ``comparison`` if given."""
    with FolderLock(path, "report"):
        return _write_run_report(path, plots, comparison)


def _write_run_report(path: Path, plots: bool, comparison: Path | None) -> Path:
    summary, rows = load_run(path)
    title = f"{summary['algorithm']} on {summary['dataset']} (seed {summary['seed']})"
    parts = [
        f"# {title}",
        "",
        f"{summary['rounds']} rounds, {summary['clients']} clients "
        + "("
        + ", ".join(f"{n} {g}" for g, n in summary["groups"].items())
        + "). "
        f"Bytes up {_fmt_bytes(summary['bytes_up'])}, down {_fmt_bytes(summary['bytes_down'])}; "
        f"{summary['wall_s']:.1f} s ({summary['seconds_per_round']:.2f} s/round), "
        f"peak memory {summary['peak_rss_mb']:.0f} MiB.",
        "",
        "`test/<subset>`: the final model tested with only those modalities. `group/<g>`: the mean over "
        "clients of group g of their deployed model on the modalities they hold. `overall`: the mean "
        "over all clients.",
        "",
        *_data_section(summary.get("data", {})),
        "## Final metrics",
        "",
        metrics_table(summary["final"]) if summary["final"] else "(no evaluation)",
        "",
    ]
    if "privacy" in summary:
        parts += privacy_markdown(summary["privacy"])
    if plots and rows:
        plot_run_metrics(rows, path / "plots" / "metrics.png", title)
        plot_bytes({summary["algorithm"]: rows}, path / "plots" / "bytes.png")
        parts += [
            "## Curves",
            "",
            "![metrics per round](plots/metrics.png)",
            "",
            "![bytes per round](plots/bytes.png)",
            "",
        ]
    if comparison is not None:
        parts += [f"Side by side with the baselines: [{comparison.name}]({_relative(comparison, path)})", ""]
    parts += [
        "Reproduce: `fedmosaic run --config config.toml` (the resolved config in this folder; its paths "
        "are stored absolute, so this works from any directory).",
        "",
    ]
    out = path / "report.md"
    out.write_text("\n".join(parts))
    return out


def _data_section(data: dict[str, Any]) -> list[str]:
    notes = data_notes(data)
    return ["## Data lost before training", "", *(f"- {line}" for line in notes), ""] if notes else []


def _relative(target: Path, start: Path) -> str:
    return os.path.relpath(target, start)


def comparison_rows(runs: list[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the side-by-side table (accuracy / macro-F1 per group and overall)."""
    groups = sorted({k for _, s in runs for k in s["final"] if k.startswith("group/")})
    header = [
        "run",
        "algorithm",
        "overall acc",
        "overall macro-F1",
        *[f"{g} acc" for g in groups],
        "bytes up",
        "bytes down",
        "s/round",
    ]
    rows = []
    for label, s in runs:
        final = s["final"]

        def cell(key: str, metric: str, final: dict[str, Any] = final) -> str:
            return f"{final[key][metric]:.3f}" if key in final else "–"

        rows.append(
            [
                label,
                s["algorithm"],
                cell("overall", "accuracy"),
                cell("overall", "macro_f1"),
                *[cell(g, "accuracy") for g in groups],
                _fmt_bytes(s["bytes_up"]),
                _fmt_bytes(s["bytes_down"]),
                f"{s['seconds_per_round']:.2f}",
            ]
        )
    return header, rows


def compare_runs(paths: list[Path], out: Path, labels: list[str] | None = None) -> Path:
    """Write ``comparison.md`` and overlaid curves for several runs into ``out`` (holding its lock)."""
    with FolderLock(out, "--out"):
        return _compare_runs(paths, out, labels)


def _compare_runs(paths: list[Path], out: Path, labels: list[str] | None) -> Path:
    loaded = [load_run(p) for p in paths]
    labels = labels or _unique_labels(paths, [s for s, _ in loaded])
    header, rows = comparison_rows([(label, s) for label, (s, _) in zip(labels, loaded, strict=True)])
    curves = {label: r for label, (_, r) in zip(labels, loaded, strict=True)}
    out.mkdir(parents=True, exist_ok=True)
    plot_comparison(curves, out / "plots" / "comparison_accuracy.png", "accuracy")
    plot_comparison(curves, out / "plots" / "comparison_macro_f1.png", "macro_f1")
    plot_bytes(curves, out / "plots" / "comparison_bytes.png")
    lines = [
        "# Comparison",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * 2 + "---:|" * (len(header) - 2),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        "Runs: " + ", ".join(f"`{label}` = `{p}`" for label, p in zip(labels, paths, strict=True)),
        "",
        "![accuracy](plots/comparison_accuracy.png)",
        "",
        "![macro-F1](plots/comparison_macro_f1.png)",
        "",
        "![bytes](plots/comparison_bytes.png)",
        "",
    ]
    target = out / COMPARISON
    target.write_text("\n".join(lines))
    return target


def _unique_labels(paths: list[Path], summaries: list[dict[str, Any]]) -> list[str]:
    algos = [s["algorithm"] for s in summaries]
    if len(set(algos)) == len(algos):
        return algos
    return [f"{a} ({p.name})" for a, p in zip(algos, paths, strict=True)]
