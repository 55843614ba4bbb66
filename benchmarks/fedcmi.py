"""Benchmark: FedCMI against FedAvg and local training, with its two ablations, on two image+X tasks.

FedCMI's claim (Fan et al., arXiv 2401.00894): cross-modal infiltration makes the weak modality
better without hurting the strong one or the fused result. Tested here on

* ``fsdd-digits``: spoken digits (log-mel audio) paired with 8x8 digit images, and
* the synthetic image+text task with the image made deliberately weak (its texture shows the true
  material in only 20% of the images instead of 40%),

each with 10 clients (2 per single modality, 6 holding both), every client training every round,
3 seeds. Reported per test-modality subset (each modality alone and both): accuracy and macro-F1 of
the global model (fedavg, fedcmi) or the mean over clients of their own models (local), mean ± std
over seeds; and the paired per-seed difference fedcmi - fedavg. Ablations: fedcmi without
class-wise temperatures (T = 1 for every class), and without infiltration (self projectors only).
Writes the ``fedcmi`` section of BENCHMARKS.md.

    python benchmarks/fedcmi.py            # full: 2 tasks x 3 seeds x 5 variants (15 rounds)
    python benchmarks/fedcmi.py --from-results   # the section from benchmarks/results/, no runs
    python benchmarks/fedcmi.py --smoke    # tiny sizes, 1 seed, prints only (CI)
"""

from __future__ import annotations

import argparse

import numpy as np

from _harness import Benchmark, Context, Results, Row, federation_run, mean_std, seeds_of

# smoke: every code path (infiltration starts in round 2), at a fraction of the cost
SMOKE = ["training.local_epochs=1", "clients.per_round=4", "model.embed_dim=16", "model.text_hidden=16"]
# name -> algorithm block
VARIANTS: dict[str, tuple[str, ...]] = {
    "fedcmi": ("algorithm.name=fedcmi",),
    "fedcmi, no class-wise T": ("algorithm.name=fedcmi", "algorithm.class_temperature=false"),
    "fedcmi, no infiltration": ("algorithm.name=fedcmi", "algorithm.infiltration=false"),
    "fedavg": ("algorithm.name=fedavg",),
    "local": ("algorithm.name=local",),
}


TASKS = {
    "fsdd-digits (image+audio)": ("task.dataset=fsdd-digits",),
    "synthetic, weak image (image+text)": ("task.dataset=synthetic", "task.options.texture_reliability=0.2"),
}


def rows(args: argparse.Namespace) -> list[Row]:
    """Every variant on every task (a row is ``<task>: <variant>``)."""
    return [
        Row(f"{task}: {name}", (*TASKS[task], *algorithm), params={"task": task, "variant": name})
        for task in TASKS
        for name, algorithm in VARIANTS.items()
    ]


def measure(row: Row, seed: int, ctx: Context) -> dict:
    """One variant's run; every variant of a task and seed trains on the same task."""
    fsdd = "fsdd" in row.params["task"]
    data = [f"task.data_dir={ctx.args.shared / 'datasets' / 'fsdd'}"] if fsdd else []
    size = [] if fsdd else ["task.options.n_samples=" + ("200" if ctx.smoke else "2000")]
    common = ['clients.mix="each:2,all:6"', "task.proxy_size=0", "task.labelled_size=0"]
    sets = [*common, *data, *size, *(SMOKE if ctx.smoke else []), f"rounds={ctx.args.rounds}"]
    return federation_run([*sets, f"seed={seed}", *row.overrides], ctx)


def modality_names(results: dict[str, list[dict]]) -> tuple[str, str, str]:
    """``(m1, m2, "m1+m2")`` from the subsets a run reports."""
    keys = [k.removeprefix("test/") for k in results["fedavg"][0]["final"] if k.startswith("test/")]
    both = next(k for k in keys if "+" in k)
    m1, m2 = both.split("+")
    return m1, m2, both


def table(label: str, results: dict[str, list[dict]], seeds: list[int], rounds: int) -> str:
    """One task's markdown: a row per variant, a column pair per test subset, then the verdict."""
    m1, m2, both = modality_names(results)
    subsets = (m1, m2, both)

    def values(name: str, subset: str, metric: str) -> list[float]:
        return [s["final"][f"test/{subset}"][metric] for s in results[name]]

    fedavg_acc = {m: float(np.mean(values("fedavg", m, "accuracy"))) for m in (m1, m2)}
    weak = min(fedavg_acc, key=fedavg_acc.get)  # type: ignore[arg-type]
    strong = m2 if weak == m1 else m1
    head = " | ".join(f"{s} acc | {s} F1" for s in subsets)
    lines = [
        f"### {label}",
        "",
        f"{rounds} rounds, seeds {', '.join(map(str, seeds))}; test modality subset: accuracy and macro-F1, "
        f"mean ± std over seeds. Weak modality (lower FedAvg accuracy alone): **{weak}**.",
        "",
        f"| variant | {head} | CPU s / run |",
        "|---|" + "---:|" * (2 * len(subsets) + 1),
    ]
    for name in results:
        cells = [mean_std(values(name, s, metric)) for s in subsets for metric in ("accuracy", "macro_f1")]
        cpu = np.mean([s["cpu_s"] for s in results[name]])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {cpu:.0f} |")
    lines += ["", "fedcmi - fedavg, paired by seed (accuracy; macro-F1):", ""]
    for role, subset in (("weak", weak), ("strong", strong), ("fused", both)):
        d_acc = np.subtract(values("fedcmi", subset, "accuracy"), values("fedavg", subset, "accuracy"))
        d_f1 = np.subtract(values("fedcmi", subset, "macro_f1"), values("fedavg", subset, "macro_f1"))
        wins = int((d_acc > 0).sum())
        lines.append(
            f"- {role} ({subset}): {d_acc.mean():+.3f} ± {d_acc.std():.3f}; {d_f1.mean():+.3f} ± "
            f"{d_f1.std():.3f} (fedcmi ahead in {wins}/{len(d_acc)} seeds)"
        )
    return "\n".join(lines)


def render(stored: Results) -> str:
    """Every task's table under one introduction."""
    by_task: dict[str, dict[str, list[dict]]] = {}
    for run in stored["runs"]:
        task = by_task.setdefault(run["params"]["task"], {})
        task.setdefault(run["params"]["variant"], []).append(run["numbers"])
    seeds, rounds = seeds_of(stored), stored["options"]["rounds"]
    cpu = sum(r["numbers"]["cpu_s"] for r in stored["runs"])
    intro = (
        "## FedCMI vs FedAvg vs local (issue 6)\n\n"
        f"Command: `{stored['command']}` (total CPU {cpu:.0f} s of the runs). 10 clients (2 per single "
        "modality, 6 with both), all training every round; default training block (Adam, lr 0.003, "
        "batch 32, 2 local epochs), embed_dim 64, FedCMI defaults (lambda 1, warm-up 1 round, k = 2). "
        "fedavg/fedcmi: the global model on the test set seen through each subset; local: the mean "
        "over the clients that hold the subset of their own models."
    )
    tables = [table(label, results, seeds, rounds) for label, results in by_task.items()]
    return "\n\n".join([intro, *tables])


BENCH = Benchmark("fedcmi", __doc__, "benchmarks/fedcmi.py", rows, render, measure, rounds=15)

if __name__ == "__main__":
    BENCH.main()
