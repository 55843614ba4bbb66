"""Benchmark: accuracy against epsilon under client-level DP (clip + Gaussian noise on every upload).

FedAvg on the embedded default task (synthetic image+text, 10 clients, all of them every round, 20
rounds) without DP and with DP at several noise multipliers z (clip C fixed), over seeds. Writes
the ``privacy`` section of BENCHMARKS.md and a plot of overall accuracy against the federation
epsilon (docs/privacy.md says what each epsilon means).

    python benchmarks/privacy.py              # full: 6 settings x 3 seeds (1037 CPU s)
    python benchmarks/privacy.py --from-results   # section and figure from benchmarks/results/
    python benchmarks/privacy.py --smoke      # tiny sizes, 1 seed, 2 rounds (CI); BENCHMARKS.md untouched
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _harness import (
    ROOT,
    TINY,
    Benchmark,
    Results,
    Row,
    by_row,
    mean_std,
    seeds_of,
    smoke_prepare,
)

CLIP = 1.0
DELTA = 1e-5
NOISE = (0.001, 0.003, 0.01, 0.03, 0.1)  # None = no DP is always run first
FIGURE = ROOT / "benchmarks" / "figures" / "privacy.png"


def rows(args: argparse.Namespace) -> list[Row]:
    """No DP first, then one row per noise multiplier z (smoke: the first z only)."""
    out = [Row("no DP")]
    for z in args.noise[:1] if args.smoke else args.noise:
        sets = ("privacy.enabled=true", f"privacy.clip={CLIP}", f"privacy.noise_multiplier={z}")
        out.append(Row(f"z = {z:g}", (*sets, f"privacy.delta={DELTA}"), params={"noise": z}))
    return out


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--figure", type=Path, default=FIGURE, help="where the PNG goes")
    parser.add_argument("--noise", type=float, nargs="+", default=list(NOISE), help="noise multipliers z")


def noises(stored: Results) -> dict[str, float | None]:
    """Row name -> its noise multiplier (None: no DP)."""
    return {r["row"]: r.get("params", {}).get("noise") for r in stored["runs"]}


def plot(stored: Results, args: argparse.Namespace) -> None:
    """Overall accuracy (mean ± std over seeds) against the federation epsilon (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = noises(stored)
    results = {z[name]: runs for name, runs in by_row(stored).items()}

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    dp = [(z, s) for z, s in results.items() if z is not None]
    eps = [s[0]["privacy"]["epsilon"] for _, s in dp]
    acc = [[x["final"]["overall"]["accuracy"] for x in s] for _, s in dp]
    ax.errorbar(eps, np.mean(acc, 1), yerr=np.std(acc, 1), marker="o", capsize=3, label="FedAvg + DP")
    for (z, _), e, a in zip(dp, eps, np.mean(acc, 1), strict=True):
        ax.annotate(f"z={z:g}", (e, a), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if None in results:
        base = [x["final"]["overall"]["accuracy"] for x in results[None]]
        ax.axhline(np.mean(base), color="k", ls="--", label="FedAvg, no DP")
        ax.axhspan(np.mean(base) - np.std(base), np.mean(base) + np.std(base), color="k", alpha=0.1)
    ax.set_xscale("log")
    ax.set_xlabel(f"federation epsilon (delta = {DELTA:g}, client-level)")
    ax.set_ylabel("overall test accuracy")
    ax.set_title(f"Default task, clip C = {CLIP:g}, mean ± std over seeds", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    # a smoke run never replaces the published figure
    path = args.results / FIGURE.name if args.smoke and args.figure == FIGURE else args.figure
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render(stored: Results) -> str:
    """The markdown section."""
    z = noises(stored)
    results = {z[name]: runs for name, runs in by_row(stored).items()}
    seeds = seeds_of(stored)
    lines = [
        "### Differential privacy: accuracy against epsilon",
        "",
        f"FedAvg on the default task (synthetic image+text, 10 clients, all sampled every round: q = 1), "
        f"each upload clipped jointly to L2 norm C = {CLIP:g} and noised with std z·C per coordinate on "
        f"the client (client-level local DP, docs/privacy.md); epsilon from Opacus' RDP accountant at "
        f"delta = {DELTA:g}. Seeds {', '.join(map(str, seeds))}; mean ± std over seeds, compared with "
        f"the same runs without DP. Command: `{stored['command']}`",
        "",
        "| setting | federation epsilon | local epsilon (per client) | overall acc | overall macro-F1 "
        "| s / round |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for noise, summaries in results.items():
        acc = mean_std([s["final"]["overall"]["accuracy"] for s in summaries])
        f1 = mean_std([s["final"]["overall"]["macro_f1"] for s in summaries])
        sec = mean_std([s["seconds_per_round"] for s in summaries], 2)
        if noise is None:
            lines.append(f"| no DP | ∞ | ∞ | {acc} | {f1} | {sec} |")
        else:
            p = summaries[0]["privacy"]
            lines.append(
                f"| z = {noise:g} | {p['epsilon']:.3g} | {p['epsilon_local']:.3g} | {acc} | {f1} | {sec} |"
            )
    dp_noises = sorted(z for z in results if z is not None)
    if None in results and dp_noises:
        mean_acc = {z: np.mean([s["final"]["overall"]["accuracy"] for s in results[z]]) for z in results}
        z0 = dp_noises[0]
        lines += [
            "",
            f"Gap to no DP at the smallest noise (z = {z0:g}, noise std {z0 * CLIP:g} per coordinate): "
            f"{mean_acc[None] - mean_acc[z0]:.3f} accuracy. That much is the cost of clipping every "
            f"update to C = {CLIP:g} rather than of the noise (a larger C was not measured).",
        ]
    lines += [
        "",
        "Epsilon columns: docs/privacy.md (federation = global models seen by outsiders, amplified by "
        "sampling when q < 1; local = one client's uploads seen by the server). With local noise on "
        "every coordinate of a ~110k-parameter upload from only 10 clients, utility survives only at "
        "very large epsilon: this table measures that cost, it is not a recommended setting. "
        "s / round is wall time and includes whatever else shared the 2 cores during the run.",
        "",
        f"![accuracy against epsilon]({FIGURE.relative_to(ROOT).as_posix()})",
    ]
    return "\n".join(lines)


BENCH = Benchmark(
    "privacy",
    __doc__,
    "benchmarks/privacy.py",
    rows,
    render,
    rounds=20,
    prepare=smoke_prepare(TINY),
    options=options,
    draw=plot,
)

if __name__ == "__main__":
    BENCH.main()
