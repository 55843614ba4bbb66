"""Benchmark: FedAvg with 10%, 20% and 30% poisoned clients under each aggregation rule and with
reply validation on or off.

The default task (synthetic image+text; 2 image-only, 2 text-only and 6 image+text clients, all
training every round). Poisoned clients are drawn per seed; each sends its honest update reversed
and amplified (``sent - 10 * (trained - sent)``, a scaled sign flip: :class:`Attack`). Rows:

* weighted mean (plain FedAvg), reply validation off / on;
* coordinate-wise median and trimmed mean (``trim_fraction`` 0.3), validation off (the rule alone);
* a gross attack for contrast, at 30% only: replies scaled by 1e6 (``norm_1e6``), mean with
  validation off / on.

Compared against the clean run (no poisoned client, weighted mean). Final overall accuracy, mean ±
std over seeds, and the number of rejected replies (all rounds and seeds; how many were poisoned).
Writes the section between ``<!-- robustness:begin -->`` and ``<!-- robustness:end -->`` of
BENCHMARKS.md.

    python benchmarks/robustness.py            # full: 6 rounds, seeds 0 1 2 (695 CPU s)
    python benchmarks/robustness.py --from-results   # the section from benchmarks/results/, no runs
    python benchmarks/robustness.py --smoke    # tiny task, 1 round, one seed, 30% only (< 1 min)
"""

from __future__ import annotations

import argparse

import numpy as np

from _harness import TINY, Benchmark, Context, Results, Row, federation_run, mean_std, seeds_of
from fedmosaic.engines.faults import Attack

FRACTIONS = (0.1, 0.2, 0.3)
TRIM = 0.3
# row label -> (overrides, attack): "signflip" = the scaled sign flip, "norm_1e6" = replies x 1e6
VARIANTS: dict[str, tuple[list[str], str]] = {
    "mean, validation off": (["robustness.aggregator=mean", "robustness.validate_replies=false"], "signflip"),
    "mean, validation on": (["robustness.aggregator=mean", "robustness.validate_replies=true"], "signflip"),
    "median, validation off": (
        ["robustness.aggregator=median", "robustness.validate_replies=false"],
        "signflip",
    ),
    f"trimmed mean ({TRIM}), validation off": (
        [
            "robustness.aggregator=trimmed_mean",
            f"robustness.trim_fraction={TRIM}",
            "robustness.validate_replies=false",
        ],
        "signflip",
    ),
    "x1e6 replies: mean, validation off": (
        ["robustness.aggregator=mean", "robustness.validate_replies=false"],
        "norm_1e6",
    ),
    "x1e6 replies: mean, validation on": (
        ["robustness.aggregator=mean", "robustness.validate_replies=true"],
        "norm_1e6",
    ),
}
ATTACK = Attack("signflip", 10.0)


def poisoned_clients(ids: list[str], fraction: float, seed: int) -> set[str]:
    """``round(fraction * n)`` clients, drawn from the seed (the same set for every variant)."""
    k = round(fraction * len(ids))
    picked = np.random.default_rng([seed, 90210]).choice(len(ids), size=k, replace=False)
    return {ids[i] for i in picked}


def rows(args: argparse.Namespace) -> list[Row]:
    """The clean run, then every rule at every fraction (the x1e6 rows at the largest only)."""
    fractions = FRACTIONS[-1:] if args.smoke else FRACTIONS
    out = [
        Row("clean", tuple(VARIANTS["mean, validation off"][0]), params={"attack": "none", "fraction": 0.0})
    ]
    for label, (overrides, attack) in VARIANTS.items():
        for f in fractions if attack == "signflip" else fractions[-1:]:
            out.append(Row(f"{label} @ {f}", tuple(overrides), params={"attack": attack, "fraction": f}))
    return out


def measure(row: Row, seed: int, ctx: Context) -> dict:
    """One run; final overall accuracy and the rejected replies (total, and how many were poisoned)."""
    from fedmosaic import load_config

    attack, fraction = row.params["attack"], row.params["fraction"]
    base = [f"rounds={ctx.args.rounds}", "engine.threads=1", "algorithm.name=fedavg"]
    overrides = [*base, *(TINY if ctx.smoke else []), f"seed={seed}", *row.overrides]
    task = ctx.task(load_config(None, overrides))  # the one federation_run trains on
    bad = poisoned_clients([s.id for s in task.specs], fraction, seed)
    wrappers = []
    if bad:
        from fedmosaic.engines.faults import CorruptingClient, PoisonedClient

        wrappers.append(
            (lambda inner: PoisonedClient(inner, bad, ATTACK))
            if attack == "signflip"
            else (lambda inner: CorruptingClient(inner, bad, "norm_1e6"))
        )
    summary = federation_run(overrides, ctx, client_wrappers=wrappers, keep_rows=True)
    rows = summary.pop("rows")
    rejected = [cid for row in rows for cid in row.get("rejected", {})]
    return {
        "acc": float(summary["final"]["overall"]["accuracy"]),
        "rejected": len(rejected),
        "rejected_poisoned": sum(cid in bad for cid in rejected),
        "replies_poisoned": len(bad) * len(rows),
    }


def render(stored: Results) -> str:
    """The markdown section."""
    seeds, rounds = seeds_of(stored), stored["options"]["rounds"]
    results: dict[tuple[str, float], list[dict]] = {}
    for run in stored["runs"]:
        label = run["row"].rsplit(" @ ", 1)[0]
        results.setdefault((label, run["params"]["fraction"]), []).append(run["numbers"])
    clean = results.pop(("clean", 0.0))
    fractions = sorted({f for _, f in results})
    header = " | ".join(f"{int(f * 100)}% poisoned: acc | rejected (poisoned / all)" for f in fractions)
    lines = [
        "### Poisoned clients: robust aggregation and reply validation (issue 9)",
        "",
        f"FedAvg on the default task ({'tiny sizes' if stored['options']['smoke'] else 'default sizes'}; "
        f"10 clients, all training every round), {rounds} rounds, seeds {', '.join(map(str, seeds))}; "
        "final overall accuracy, mean ± std over seeds. Poisoned clients (drawn per seed, the same for "
        f"every row) send `sent - {ATTACK.scale:g} * (trained - sent)` (scaled sign flip); the last two "
        "rows instead send their trained weights x 1e6 (30% only). Validation: names, shapes, dtypes, "
        "finite values, norm bound (RMS <= 100 x max(sent, peers' median, 1)). Rejected: replies left out "
        "over all rounds and seeds (poisoned ones / all; poisoned replies sent per cell = poisoned clients "
        f"x {rounds} rounds x {len(seeds)} seeds). Command: `{stored['command']}`.",
        "",
        f"Clean run (no poisoned client, weighted mean): accuracy {mean_std([r['acc'] for r in clean])}.",
        "",
        f"| rule | {header} |",
        "|---|" + "---:|---:|" * len(fractions),
    ]
    for label in VARIANTS:
        cells = []
        for f in fractions:
            cell = results.get((label, f))
            if cell is None:
                cells.append("— | —")
                continue
            rej = sum(r["rejected"] for r in cell)
            rej_bad = sum(r["rejected_poisoned"] for r in cell)
            sent = sum(r["replies_poisoned"] for r in cell)
            cells.append(f"{mean_std([r['acc'] for r in cell])} | {rej_bad}/{sent} poisoned, {rej} in all")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


BENCH = Benchmark(
    "robustness", __doc__, "benchmarks/robustness.py", rows, render, measure, rounds=6, smoke_rounds=1
)

if __name__ == "__main__":
    BENCH.main()
