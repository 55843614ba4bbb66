"""The report's figures, inspected as matplotlib objects: one colour per series across all panels,
one legend per figure, coinciding series kept visible, integer round ticks, a training-loss panel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from fedmosaic.reporting.plots import (
    bytes_figure,
    comparison_figure,
    plot_bytes,
    plot_comparison,
    plot_run_metrics,
    run_metrics_figure,
)

KEYS = ("test/image", "test/text", "group/image", "group/text", "overall")


def rows(
    scores: dict[str, list[float]], f1: dict[str, list[float]] | None = None, loss: list[float] | None = None
) -> list[dict[str, Any]]:
    """Metric rows of a 3-round run: accuracy ``scores[key][round]`` (macro-F1 = half, unless given)."""
    out = []
    for i in range(3):
        row: dict[str, Any] = {
            "round": i + 1,
            "eval": {
                k: {"accuracy": v[i], "macro_f1": (f1 or {}).get(k, [x / 2 for x in v])[i]}
                for k, v in scores.items()
            },
            "bytes_up": 1_000_000 * (i + 1),
            "bytes_down": 2_000_000,
        }
        if loss is not None:
            row["train"] = {"train_loss": loss[i]}
        out.append(row)
    return out


def drawn(ax) -> dict[str, Any]:
    """Label -> Line2D of the data lines on one axis."""
    return {line.get_label(): line for line in ax.get_lines()}


def colours_by_label(fig: Figure) -> dict[str, set[str]]:
    colours: dict[str, set[str]] = {}
    for ax in fig.axes:
        for label, line in drawn(ax).items():
            colours.setdefault(label, set()).add(to_hex(line.get_color()))
    return colours


def legend_texts(fig: Figure) -> list[str]:
    assert len(fig.legends) == 1, "one legend for the whole figure"
    assert all(ax.get_legend() is None for ax in fig.axes), "no per-panel legend"
    return [t.get_text() for t in fig.legends[0].get_texts()]


def assert_integer_round_ticks(fig: Figure) -> None:
    fig.draw_without_rendering()  # settles autoscaling, so the ticks are the ones a PNG shows
    for ax in fig.axes:
        if ax.get_xlabel() == "round":
            lo, hi = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks


def text_notes(ax) -> str:
    return "\n".join(t.get_text() for t in ax.texts)


def test_run_metrics_figure() -> None:
    same = [0.2, 0.4, 0.5]
    scores = {
        "test/image": same,
        "group/image": list(same),  # identical in both panels
        "test/text": [0.3, 0.3, 0.6],
        "group/text": [0.3, 0.3, 0.6],  # identical accuracy, different macro-F1
        "overall": [0.25, 0.35, 0.55],
    }
    f1 = {"test/text": [0.1, 0.2, 0.3], "group/text": [0.1, 0.2, 0.4]}
    fig = run_metrics_figure(rows(scores, f1, loss=[2.3, 1.7, 1.2]), "fedavg on synthetic (seed 0)")

    accuracy, macro_f1, loss = fig.axes
    assert [accuracy.get_ylabel(), macro_f1.get_ylabel()] == ["accuracy", "macro_f1"]
    assert all(len(c) == 1 for c in colours_by_label(fig).values()), colours_by_label(fig)
    assert set(drawn(accuracy)) == set(drawn(macro_f1)) == set(scores)

    # the training loss has its own panel
    assert "train loss" in loss.get_ylabel()
    assert list(drawn(loss)["train loss"].get_ydata()) == [2.3, 1.7, 1.2]

    # a series exactly on top of another is drawn so both show, and named
    first, twin = drawn(accuracy)["test/image"], drawn(accuracy)["group/image"]
    assert np.array_equal(first.get_ydata(), twin.get_ydata())
    assert (first.get_linestyle(), first.get_marker()) != (twin.get_linestyle(), twin.get_marker())
    assert twin.get_markersize() > first.get_markersize()
    texts = legend_texts(fig)
    assert "group/image (= test/image)" in texts and "train loss" in texts
    assert "group/text" in texts  # equal in one panel only: said in that panel, not in the legend
    assert "group/text = test/text" in text_notes(accuracy)
    assert "group/text" not in text_notes(macro_f1)
    assert_integer_round_ticks(fig)


def test_run_without_training_loss_says_so() -> None:
    fig = run_metrics_figure(rows({"overall": [0.1, 0.2, 0.3]}), "t")
    assert "no training loss recorded" in text_notes(fig.axes[2])


def test_comparison_figure_one_colour_per_run_and_one_legend() -> None:
    a = rows({k: [0.1, 0.2, 0.3] for k in KEYS})
    # b holds no image data: before, the panels it is missing from shifted the colours of the runs after it
    b = rows({k: [0.2, 0.3, 0.4] for k in KEYS if "image" not in k})
    c = rows({k: [0.3, 0.5, 0.7] for k in KEYS})
    again = [dict(r) for r in a]  # a rerun with identical numbers
    fig = comparison_figure({"fedavg": a, "local": b, "gvf": c, "fedavg (rerun)": again}, "accuracy")

    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == list(KEYS)
    colours = colours_by_label(fig)
    assert all(len(c) == 1 for c in colours.values()), colours
    assert len({next(iter(c)) for c in colours.values()}) == 4  # and four different colours
    assert "local" not in drawn(panels[0]) and "local" in drawn(panels[1])
    assert legend_texts(fig) == ["fedavg", "local", "gvf", "fedavg (rerun) (= fedavg)"]
    assert drawn(panels[0])["fedavg (rerun)"].get_linestyle() == "--"
    assert_integer_round_ticks(fig)


def test_bytes_figure_one_colour_per_run_and_one_legend() -> None:
    runs = {"fedavg": rows({"overall": [0.1, 0.2, 0.3]}), "gvf": rows({"overall": [0.1, 0.2, 0.3]})}
    for r in runs["gvf"]:
        r["bytes_up"] = 123
    fig = bytes_figure(runs)
    assert all(len(c) == 1 for c in colours_by_label(fig).values())
    assert legend_texts(fig) == ["fedavg", "gvf"]
    up, down = fig.axes
    assert "gvf = fedavg" in text_notes(down) and not text_notes(up)  # equal downloads only
    assert_integer_round_ticks(fig)


def test_plot_functions_write_pngs(tmp_path: Path) -> None:
    run = rows({k: [0.1, 0.2, 0.3] for k in KEYS}, loss=[1.0, 0.8, 0.7])
    for path in (
        plot_run_metrics(run, tmp_path / "plots" / "metrics.png", "t"),
        plot_bytes({"fedavg": run}, tmp_path / "plots" / "bytes.png"),
        plot_comparison({"fedavg": run, "local": run}, tmp_path / "plots" / "cmp.png", "macro_f1"),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
