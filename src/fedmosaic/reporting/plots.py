"""Matplotlib figures of a run's (or several runs') metrics per round and bytes per round."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt

Rows = list[dict[str, Any]]


def eval_keys(rows: Rows) -> list[str]:
    """Evaluation keys present in the rows: test subsets, then groups, then ``overall``."""
    keys: set[str] = set()
    for row in rows:
        keys.update(row.get("eval", {}))
    return sorted(keys, key=lambda k: (k.split("/")[0] != "test", k.split("/")[0] != "group", k))


def _series(rows: Rows, key: str, metric: str) -> tuple[list[int], list[float]]:
    points = [(r["round"], r["eval"][key][metric]) for r in rows if key in r.get("eval", {})]
    return [p[0] for p in points], [p[1] for p in points]


def plot_run_metrics(rows: Rows, path: Path, title: str) -> Path:
    """Accuracy and macro-F1 per round for every evaluation key of one run."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for ax, metric in zip(axes, ("accuracy", "macro_f1"), strict=True):
        for key in eval_keys(rows):
            x, y = _series(rows, key, metric)
            ax.plot(x, y, marker="o", ms=3, lw=2.2 if key == "overall" else 1.2, label=key)
        ax.set_xlabel("round")
        ax.set_ylabel(metric)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    return _save(fig, path)


def plot_bytes(runs: dict[str, Rows], path: Path) -> Path:
    """Bytes up and down per round, one line per run."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharex=True)
    for ax, field in zip(axes, ("bytes_up", "bytes_down"), strict=True):
        for label, rows in runs.items():
            ax.plot([r["round"] for r in rows], [r[field] / 1e6 for r in rows], marker="o", ms=3, label=label)
        ax.set_xlabel("round")
        ax.set_ylabel(f"{field.replace('_', ' ')} per round (MB)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def plot_comparison(runs: dict[str, Rows], path: Path, metric: str = "accuracy") -> Path:
    """One panel per evaluation key, each run overlaid."""
    keys = sorted(
        {k for rows in runs.values() for k in eval_keys(rows)},
        key=lambda k: (k.split("/")[0] != "test", k.split("/")[0] != "group", k),
    )
    cols = min(len(keys), 4) or 1
    nrows = (len(keys) + cols - 1) // cols or 1
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.2 * nrows), squeeze=False, sharey=True)
    for ax, key in zip(axes.flat, keys, strict=False):
        for label, rows in runs.items():
            x, y = _series(rows, key, metric)
            if x:
                ax.plot(x, y, marker="o", ms=3, label=label)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("round")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    axes[0, 0].set_ylabel(metric)
    axes[0, 0].legend(fontsize=8)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
