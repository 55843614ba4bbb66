"""Matplotlib figures of a run's (or several runs') metrics, training loss and bytes per round.

Each ``*_figure`` function builds and returns the :class:`~matplotlib.figure.Figure` (tests inspect
it); each ``plot_*`` function saves one. Across every panel of a figure a series (a run, or an
evaluation key) keeps one colour and marker, and the figure has a single legend. A series that
lies exactly on an earlier one is drawn dashed with hollow markers and named in a note, since it
would otherwise vanish under it. Rounds are integers, and so are the x ticks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

Rows = list[dict[str, Any]]
Series = tuple[str, list[int], list[float]]
Style = dict[str, Any]

_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "<", ">", "h", "p")


def eval_keys(rows: Rows) -> list[str]:
    """Evaluation keys present in the rows: test subsets, then groups, then ``overall``."""
    keys: set[str] = set()
    for row in rows:
        keys.update(row.get("eval", {}))
    return _ordered(keys)


def _ordered(keys: set[str]) -> list[str]:
    return sorted(keys, key=lambda k: (k.split("/")[0] != "test", k.split("/")[0] != "group", k))


def _series(rows: Rows, key: str, metric: str) -> tuple[list[int], list[float]]:
    points = [(r["round"], r["eval"][key][metric]) for r in rows if key in r.get("eval", {})]
    return [p[0] for p in points], [p[1] for p in points]


def _train_loss(rows: Rows) -> tuple[list[int], list[float]]:
    points = [
        (r["round"], float(r["train"]["train_loss"]))
        for r in rows
        if isinstance(r.get("train", {}).get("train_loss"), int | float)
    ]
    return [p[0] for p in points], [p[1] for p in points]


def series_styles(labels: Sequence[str], emphasise: str | None = None) -> dict[str, Style]:
    """One colour and marker per label, fixed for the whole figure (not drawn from each axis' cycle).

    Assigning per axis gave a run a different colour in a panel where an earlier run had no data.
    """
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    styles = {}
    for i, label in enumerate(labels):
        styles[label] = {
            "color": palette(i % palette.N),
            "marker": _MARKERS[i % len(_MARKERS)],
            "markersize": 4,
            "linewidth": 2.4 if label == emphasise else 1.3,
            "linestyle": "-",
        }
    return styles


def _same(a: Series, b: Series) -> bool:
    return a[1] == b[1] and np.allclose(a[2], b[2], rtol=0.0, atol=1e-12, equal_nan=True)


def _draw(ax: Axes, series: list[Series], styles: dict[str, Style]) -> list[tuple[str, str]]:
    """Plot ``series`` on ``ax``; return ``(label, earlier label)`` for each one hidden under another."""
    drawn: list[Series] = []
    coincide: list[tuple[str, str]] = []
    for item in series:
        label, x, y = item
        if not x:
            continue
        style = dict(styles[label])
        twins = [d[0] for d in drawn if _same(d, item)]
        if twins:
            # exactly on top of the earlier one(s): dashed, with hollow markers a size larger per
            # earlier twin, so every one of them stays visible
            size = style["markersize"] + 4 * len(twins)
            style.update(linestyle="--", markerfacecolor="none", markersize=size)
            coincide.append((label, twins[0]))
        ax.plot(x, y, label=label, **style)
        drawn.append(item)
    return coincide


def _note(ax: Axes, pairs: list[tuple[str, str]]) -> None:
    if pairs:
        ax.text(
            0.02,
            0.97,
            "same values:\n" + "\n".join(f"{a} = {b}" for a, b in pairs),
            transform=ax.transAxes,
            fontsize=7,
            va="top",
            ha="left",
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"},
        )


def _name_coincidences(axes: Sequence[Axes], pairs_per_axis: list[list[tuple[str, str]]]) -> dict[str, str]:
    """Legend names for series equal to another in every panel; a note in the panel for the rest.

    Saying it once in the legend keeps the same note from being repeated in every panel.
    """
    if not pairs_per_axis:
        return {}
    everywhere = [p for p in pairs_per_axis[0] if all(p in q for q in pairs_per_axis[1:])]
    for ax, pairs in zip(axes, pairs_per_axis, strict=True):
        _note(ax, [p for p in pairs if p not in everywhere])
    return {label: f"{label} (= {twin})" for label, twin in everywhere}


def _round_axis(ax: Axes) -> None:
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "round 2.5"
    ax.grid(alpha=0.3)


def _legend(fig: Figure, styles: dict[str, Style], names: dict[str, str] | None = None, **kw: Any) -> None:
    """The figure's one legend: an entry per series, in the order given, whatever panel it is in."""
    names = names or {}
    handles = [Line2D([], [], label=names.get(label, label), **style) for label, style in styles.items()]
    fig.legend(handles=handles, fontsize=8, **kw)


def run_metrics_figure(rows: Rows, title: str) -> Figure:
    """Accuracy and macro-F1 per round for every evaluation key of one run, and its training loss."""
    keys = eval_keys(rows)
    styles = series_styles(keys, emphasise="overall")
    fig = Figure(figsize=(15, 4.2), layout="constrained")
    axes = fig.subplots(1, 3)
    pairs_per_panel = []
    for ax, metric in zip(axes[:2], ("accuracy", "macro_f1"), strict=True):
        pairs_per_panel.append(_draw(ax, [(k, *_series(rows, k, metric)) for k in keys], styles))
        ax.set_ylabel(metric)
        ax.set_ylim(0, 1)
        _round_axis(ax)
    names = _name_coincidences(axes[:2], pairs_per_panel)
    loss_ax = axes[2]
    x, y = _train_loss(rows)
    loss_style = {"color": "0.25", "marker": "o", "markersize": 3, "linewidth": 1.6, "linestyle": "-"}
    if x:
        loss_ax.plot(x, y, label="train loss", **loss_style)
    else:
        loss_ax.text(0.5, 0.5, "no training loss recorded", transform=loss_ax.transAxes, ha="center")
    loss_ax.set_ylabel("train loss (clients' mean)")
    loss_ax.set_title("training loss", fontsize=10)
    _round_axis(loss_ax)
    _legend(fig, {**styles, "train loss": loss_style}, names, loc="outside right upper")
    fig.suptitle(title)
    return fig


def bytes_figure(runs: dict[str, Rows]) -> Figure:
    """Bytes up and down per round, one line per run."""
    styles = series_styles(list(runs))
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    pairs_per_panel = []
    for ax, field in zip(axes, ("bytes_up", "bytes_down"), strict=True):
        series = [
            (label, [r["round"] for r in rows], [r[field] / 1e6 for r in rows])
            for label, rows in runs.items()
        ]
        pairs_per_panel.append(_draw(ax, series, styles))
        ax.set_ylabel(f"{field.replace('_', ' ')} per round (MB)")
        _round_axis(ax)
    _legend(fig, styles, _name_coincidences(axes, pairs_per_panel), loc="outside right upper")
    return fig


def comparison_figure(runs: dict[str, Rows], metric: str = "accuracy") -> Figure:
    """One panel per evaluation key, each run overlaid in its own colour; one legend naming the runs."""
    keys = _ordered({k for rows in runs.values() for k in eval_keys(rows)})
    styles = series_styles(list(runs))
    cols = min(len(keys), 4) or 1
    nrows = (len(keys) + cols - 1) // cols or 1
    fig = Figure(figsize=(4 * cols, 3.2 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False, sharey=True)
    pairs_per_panel = []
    for ax, key in zip(axes.flat, keys, strict=False):
        series = [(label, *_series(rows, key, metric)) for label, rows in runs.items()]
        pairs_per_panel.append(_draw(ax, series, styles))
        ax.set_title(key, fontsize=10)
        ax.set_ylim(0, 1)
        _round_axis(ax)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    for row in axes:
        row[0].set_ylabel(metric)
    names = _name_coincidences(list(axes.flat)[: len(keys)], pairs_per_panel)
    _legend(fig, styles, names, loc="outside upper center", ncols=min(len(runs), 6))
    return fig


def plot_run_metrics(rows: Rows, path: Path, title: str) -> Path:
    """Save :func:`run_metrics_figure` to ``path``."""
    return _save(run_metrics_figure(rows, title), path)


def plot_bytes(runs: dict[str, Rows], path: Path) -> Path:
    """Save :func:`bytes_figure` to ``path``."""
    return _save(bytes_figure(runs), path)


def plot_comparison(runs: dict[str, Rows], path: Path, metric: str = "accuracy") -> Path:
    """Save :func:`comparison_figure` to ``path``."""
    return _save(comparison_figure(runs, metric), path)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)  # a bare Figure: no pyplot state to close
    return path
