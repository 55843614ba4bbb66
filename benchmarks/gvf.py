"""Benchmark: global-vector fusion (gvf) against local-only and fedavg, with its ablations.

Two tasks (the synthetic image+text task and fsdd-digits, image+audio), each with 2 clients holding
only modality A, 2 only modality B and 6 holding both. For every client group: accuracy and
macro-F1 of local, fedavg and gvf (mean ± std over seeds), then the ablations of gvf (random
pairing, alignment switched on, no gating, sample-count weights, no global vectors, no proxy anchor, a
personal (not aggregated) classifier, no update step) and one diagnostic that breaks the design
(encoders aggregated too). Writes
the section between ``<!-- gvf:begin -->`` and ``<!-- gvf:end -->`` of BENCHMARKS.md.

    python benchmarks/gvf.py                  # full: 10 rounds, seeds 0 1 2 (84 runs, 4,300 CPU s)
    python benchmarks/gvf.py --jobs 2         # the same, two runs at a time
    python benchmarks/gvf.py --resume         # continue a stopped run: only the missing runs
    python benchmarks/gvf.py --from-results   # the section from benchmarks/results/, no runs
    python benchmarks/gvf.py --smoke          # tiny synthetic run, one seed, one ablation (CI, < 60 s)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _harness import TINY, Benchmark, Context, Results, Row, federation_run, majority_class, mean_std

MAIN = ("local", "fedavg", "gvf")
# Each ablation switches one part of gvf's defaults (alignment and the proxy-label extension are off
# by default since they measured worse; their rows switch them on); the last two rows are variants
# (algorithm.name, set after the main row's "gvf").
ABLATIONS = {
    "random pairing": ["algorithm.pairing=random"],
    "with alignment (InfoNCE)": ["algorithm.alignment=true"],
    "no gating (concatenation)": ["algorithm.gating=false"],
    "sample-count weights": ["algorithm.weighting=samples"],
    "no global vectors": ["algorithm.global_vectors=false"],
    "no proxy anchor": ["algorithm.anchor_weight=0"],
    "personal classifier": ["algorithm.shared_classifier=false"],
    "no update step (own fine-tuned shared part)": ["algorithm.update_clients=false"],
    "with proxy labels (extension)": ["algorithm.proxy_weight=1"],
    # The like-for-like local-only control (a variant, not a switch): gvf's own model, trained on each
    # client's data alone.
    "no federation (gvf's model, local only)": ["algorithm.name=gvf-local"],
    # Not an ablation: the diagnostic variant breaks the design (encoders leave the clients) to
    # measure what keeping them private costs.
    "diagnostic: encoders shared too": ["algorithm.name=gvf-shared-encoders"],
}


def smoke(algorithm: str) -> list[str]:
    """The tiny sizes; gvf's own width only for gvf's rows (a baseline's algorithm block has no ``dim``)."""
    return [*TINY, *(["algorithm.dim=16"] if algorithm.startswith("gvf") else [])]


def datasets(shared: Path, smoke: bool) -> dict[str, list[str]]:
    """The tasks and their overrides (fsdd-digits only when its folder exists, and not in smoke mode)."""
    out = {"synthetic": ["task.dataset=synthetic"]}
    fsdd = shared / "datasets" / "fsdd"
    if not smoke and fsdd.is_dir():
        out["fsdd-digits"] = ["task.dataset=fsdd-digits", f"task.data_dir={fsdd}"]
    return out


def rows(args: argparse.Namespace) -> list[Row]:
    """Per task: the baselines and gvf at ``--seeds``, then the ablations at ``--ablation-seeds``."""
    ablations = dict(list(ABLATIONS.items())[:1]) if args.smoke else ABLATIONS
    if args.ablations is not None:
        ablations = {a: ABLATIONS[a] for a in args.ablations}
    ablation_seeds = tuple(args.ablation_seeds[:1] if args.smoke else args.ablation_seeds)
    out = []
    for task in datasets(args.shared, args.smoke):
        out += [Row(f"{task}: {name}", (f"algorithm.name={name}",), params={"task": task}) for name in MAIN]
        out += [
            Row(f"{task}: gvf, {label}", ("algorithm.name=gvf", *extra), ablation_seeds, {"task": task})
            for label, extra in ablations.items()
        ]
    return out


def measure(row: Row, seed: int, ctx: Context) -> dict:
    """One run of a row on its task, evaluated after the last round only."""
    rounds = ctx.args.rounds
    task = datasets(ctx.args.shared, ctx.smoke)[row.params["task"]]
    tiny = smoke(row.overrides[0].removeprefix("algorithm.name=")) if ctx.smoke else []
    return federation_run(
        [*task, f"rounds={rounds}", f"engine.eval_every={rounds}", *tiny, f"seed={seed}", *row.overrides], ctx
    )


def majority(ctx: Context) -> dict[str, list[dict[str, float]]]:
    """Per task and seed of the main rows: the majority-class baseline (the seed sets the split)."""
    from fedmosaic import load_config

    out: dict[str, list[dict[str, float]]] = {}
    for name, task in datasets(ctx.args.shared, ctx.smoke).items():
        tiny = smoke("local") if ctx.smoke else []
        for seed in ctx.args.seeds:
            cfg = load_config(None, [*task, *tiny, f"seed={seed}"])
            out.setdefault(name, []).append(majority_class(ctx.task(cfg)))
    return out


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ablation-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--ablations", nargs="*", choices=list(ABLATIONS), help="run only these ablations (default: all)"
    )


def _groups(summary: dict) -> list[str]:
    """Client groups, single modalities first, then the complete group."""
    groups = [k.removeprefix("group/") for k in summary["final"] if k.startswith("group/")]
    return sorted(groups, key=lambda g: (g.count("+"), g))


def table(name: str, results: dict[str, list[dict]], trivial: list[dict[str, float]] | None) -> list[str]:
    """One markdown table (rows: algorithms and ablations, then the majority-class baseline) plus the
    accuracy differences of gvf for a task."""
    groups = _groups(results["gvf"][0])
    head = " | ".join(f"{g} acc | {g} F1" for g in groups)
    lines = [
        f"#### {name}",
        "",
        f"| algorithm | seeds | {head} | overall acc | s / round | MB / round |",
        "|---|---:|" + "---:|" * (2 * len(groups) + 3),
    ]
    for row, summaries in results.items():
        cells = []
        for g in groups:
            cells.append(mean_std([s["final"][f"group/{g}"]["accuracy"] for s in summaries]))
            cells.append(mean_std([s["final"][f"group/{g}"]["macro_f1"] for s in summaries]))
        overall = mean_std([s["final"]["overall"]["accuracy"] for s in summaries])
        sec = np.mean([s["seconds_per_round"] for s in summaries])
        mb = np.mean([(s["bytes_up"] + s["bytes_down"]) / s["rounds"] / 1e6 for s in summaries])
        lines.append(
            f"| {row} | {len(summaries)} | " + " | ".join(cells) + f" | {overall} | {sec:.1f} | {mb:.2f} |"
        )

    if trivial:  # every client group is scored on the same test labels
        acc_f1 = [mean_std([m["accuracy"] for m in trivial]), mean_std([m["macro_f1"] for m in trivial])]
        lines.append(
            f"| majority class (most frequent training label) | {len(trivial)} | "
            + " | ".join(acc_f1 * len(groups))
            + f" | {acc_f1[0]} | | |"
        )

    def acc(row: str, g: str) -> float:
        return 100 * float(np.mean([s["final"][f"group/{g}"]["accuracy"] for s in results[row]]))

    checks = []
    for g in groups:
        vs_local, vs_fedavg = acc("gvf", g) - acc("local", g), acc("gvf", g) - acc("fedavg", g)
        kind = "complete" if "+" in g else "single-modality"
        checks.append(f"{g} ({kind}): {vs_local:+.1f} points vs local, {vs_fedavg:+.1f} vs fedavg")
    lines += ["", "gvf accuracy difference: " + "; ".join(checks) + "."]
    return lines


def render(stored: Results) -> str:
    """The markdown section: a table per task."""
    by_task: dict[str, dict[str, list[dict]]] = {}
    for run in stored["runs"]:
        task = run["params"]["task"]
        by_task.setdefault(task, {}).setdefault(run["row"].removeprefix(f"{task}: "), []).append(
            run["numbers"]
        )
    options = stored["options"]
    smoke = options["smoke"]
    seeds, ablation_seeds = options["seeds"], options["ablation_seeds"][: 1 if smoke else None]
    lines = [
        "### Global-vector fusion (gvf)",
        "",
        f"2 single-modality-A, 2 single-modality-B and 6 complete clients; {options['rounds']} rounds, "
        f"{'tiny' if smoke else 'default'} sizes; main rows over seeds {', '.join(map(str, seeds))}, "
        f"ablation rows over seed(s) {', '.join(map(str, ablation_seeds))}; mean ± std. "
        "Each client group's metric is the mean over its clients of the model that client deploys "
        "(local, gvf: its own; fedavg: the global model on the modalities it holds). "
        f"Command: `{stored['command']}`.",
        "",
    ]
    trivial = stored.get("once", {})
    for name, results in by_task.items():
        lines += [*table(name, results, trivial.get(name)), ""]
    return "\n".join(lines)


BENCH = Benchmark(
    "gvf",
    __doc__,
    "benchmarks/gvf.py",
    rows,
    render,
    measure,
    rounds=10,
    smoke_rounds=1,
    once=majority,
    options=options,
)

if __name__ == "__main__":
    BENCH.main()
