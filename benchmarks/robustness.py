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

    python benchmarks/robustness.py            # full: 6 rounds, seeds 0 1 2 (~25 min, one process)
    python benchmarks/robustness.py --smoke    # tiny task, 1 round, one seed, 30% only (< 1 min)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import BENCHMARKS_MD, publish
from _common import mean_std as _ms
from fedmosaic.config import load_config
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.faults import Attack, CorruptingClient, PoisonedClient
from fedmosaic.engines.federation import Federation
from fedmosaic.engines.run_folder import read_jsonl

SECTION = "robustness"
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
SMOKE = [
    "task.options.n_samples=400",
    "task.proxy_size=40",
    "task.labelled_size=40",
    "model.embed_dim=16",
    "model.text_hidden=16",
]
ATTACK = Attack("signflip", 10.0)


def poisoned_clients(ids: list[str], fraction: float, seed: int) -> set[str]:
    """``round(fraction * n)`` clients, drawn from the seed (the same set for every variant)."""
    k = round(fraction * len(ids))
    picked = np.random.default_rng([seed, 90210]).choice(len(ids), size=k, replace=False)
    return {ids[i] for i in picked}


def one_run(overrides: list[str], attack: str, fraction: float, seed: int, folder: Path) -> dict:
    """One run; final overall accuracy and the rejected replies (total, and how many were poisoned)."""
    cfg = load_config(None, [*overrides, f"seed={seed}"])
    task = build_task(cfg)
    bad = poisoned_clients([s.id for s in task.specs], fraction, seed)
    wrappers = []
    if bad:
        wrappers.append(
            (lambda inner: PoisonedClient(inner, bad, ATTACK))
            if attack == "signflip"
            else (lambda inner: CorruptingClient(inner, bad, "norm_1e6"))
        )
    summary = Federation.from_config(cfg, task, folder=folder, client_wrappers=wrappers).run()
    rows = read_jsonl(folder / "metrics.jsonl")
    rejected = [cid for row in rows for cid in row.get("rejected", {})]
    return {
        "acc": float(summary["final"]["overall"]["accuracy"]),
        "rejected": len(rejected),
        "rejected_poisoned": sum(cid in bad for cid in rejected),
        "replies_poisoned": len(bad) * len(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--smoke", action="store_true", help="tiny task, 1 round, one seed, 30%% only")
    parser.add_argument("--output", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    seeds = args.seeds[:1] if args.smoke else args.seeds
    rounds = 1 if args.smoke else args.rounds
    fractions = FRACTIONS[-1:] if args.smoke else FRACTIONS
    base = [
        f"rounds={rounds}",
        "compare=[]",
        "engine.progress=false",
        "engine.threads=1",
        "output.plots=false",
        "algorithm.name=fedavg",
        *(SMOKE if args.smoke else []),
    ]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        n = iter(range(10**6))

        def runs(overrides: list[str], attack: str, fraction: float) -> list[dict]:
            return [one_run(base + overrides, attack, fraction, s, Path(tmp) / str(next(n))) for s in seeds]

        clean = runs(VARIANTS["mean, validation off"][0], "signflip", 0.0)
        results = {
            (label, f): runs(overrides, attack, f)
            for label, (overrides, attack) in VARIANTS.items()
            for f in (fractions if attack == "signflip" else fractions[-1:])
        }
    minutes = (time.perf_counter() - start) / 60
    command = "python benchmarks/robustness.py" + (" --smoke" if args.smoke else "")
    if not args.smoke and (seeds != [0, 1, 2] or rounds != 6):
        command += f" --rounds {rounds} --seeds {' '.join(map(str, seeds))}"
    header = " | ".join(f"{int(f * 100)}% poisoned: acc | rejected (poisoned / all)" for f in fractions)
    lines = [
        "### Poisoned clients: robust aggregation and reply validation (issue 9)",
        "",
        f"FedAvg on the default task ({'tiny sizes' if args.smoke else 'default sizes'}; 10 clients, all "
        f"training every round), {rounds} rounds, seeds {', '.join(map(str, seeds))}; final overall "
        "accuracy, mean ± std over seeds. Poisoned clients (drawn per seed, the same for every row) send "
        f"`sent - {ATTACK.scale:g} * (trained - sent)` (scaled sign flip); the last two rows instead send "
        "their trained weights x 1e6 (30% only). Validation: names, shapes, dtypes, finite values, "
        "norm bound (RMS <= 100 x max(sent, peers' median, 1)). Rejected: replies left out over all "
        "rounds and seeds "
        f"(poisoned ones / all; poisoned replies sent per cell = poisoned clients x {rounds} rounds x "
        f"{len(seeds)} seeds). Command: `{command}` ({minutes:.0f} min, one process, shared 2-core machine).",
        "",
        f"Clean run (no poisoned client, weighted mean): accuracy {_ms([r['acc'] for r in clean])}.",
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
            cells.append(f"{_ms([r['acc'] for r in cell])} | {rej_bad}/{sent} poisoned, {rej} in all")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    section = "\n".join(lines)
    publish(section, args.output, SECTION, args.smoke)


if __name__ == "__main__":
    main()
