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

    python benchmarks/fedcmi.py            # full: 2 tasks x 3 seeds x 5 variants (see ROUNDS)
    python benchmarks/fedcmi.py --smoke    # tiny sizes, 1 seed, prints only (CI)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import BENCHMARKS_MD, SHARED, mean_std, publish
from fedmosaic.config import RunConfig, load_config, validate
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.federation import Federation

SECTION = "fedcmi"
ROUNDS = 15
# smoke: every code path (infiltration starts in round 2), at a fraction of the cost
SMOKE = ["training.local_epochs=1", "clients.per_round=4", "model.embed_dim=16", "model.text_hidden=16"]
# name -> algorithm block
VARIANTS: dict[str, dict[str, object]] = {
    "fedcmi": {"name": "fedcmi"},
    "fedcmi, no class-wise T": {"name": "fedcmi", "class_temperature": False},
    "fedcmi, no infiltration": {"name": "fedcmi", "infiltration": False},
    "fedavg": {"name": "fedavg"},
    "local": {"name": "local"},
}
COMMON = ["engine.progress=false", "compare=[]", "output.plots=false", 'clients.mix="each:2,all:6"']


def tasks(shared: Path, smoke: bool) -> dict[str, list[str]]:
    """Each benchmark task as run-config overrides."""
    fsdd = [
        "task.dataset=fsdd-digits",
        f"task.data_dir={shared / 'datasets' / 'fsdd'}",
        "task.proxy_size=0",
        "task.labelled_size=0",
    ]
    synthetic = [
        "task.dataset=synthetic",
        "task.options.n_samples=" + ("200" if smoke else "2000"),
        "task.options.texture_reliability=0.2",
        "task.proxy_size=0",
        "task.labelled_size=0",
    ]
    if smoke:
        fsdd += SMOKE
        synthetic += SMOKE
    return {"fsdd-digits (image+audio)": fsdd, "synthetic, weak image (image+text)": synthetic}


def variant_config(base: RunConfig, algorithm: dict[str, object]) -> RunConfig:
    """``base`` with another algorithm block."""
    tree = base.to_toml_dict()
    tree["algorithm"] = dict(algorithm)
    return validate(tree)


def run_task(overrides: list[str], seeds: list[int], rounds: int, workdir: Path) -> dict[str, list[dict]]:
    """Every variant's final evaluation per seed; the task is built once per seed and shared."""
    out: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for seed in seeds:
        base = load_config(None, [*COMMON, *overrides, f"seed={seed}", f"rounds={rounds}"])
        task = build_task(base)
        for name, algorithm in VARIANTS.items():
            cfg = variant_config(base, algorithm)
            folder = workdir / f"seed{seed}" / name.replace(" ", "_").replace(",", "")
            t0 = time.process_time()
            summary = Federation.from_config(cfg, task, folder=folder).run()
            summary["cpu_s"] = time.process_time() - t0
            out[name].append(summary)
            print(f"  seed {seed} {name}: {summary['cpu_s']:.0f} s CPU", flush=True)
    return out


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one seed; prints only")
    parser.add_argument("--output", type=Path, default=BENCHMARKS_MD)
    parser.add_argument("--shared", type=Path, default=SHARED, help="folder holding datasets/fsdd")
    args = parser.parse_args()
    seeds = args.seeds[:1] if args.smoke else args.seeds
    rounds = 2 if args.smoke else args.rounds
    sections = []
    t0 = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, overrides) in enumerate(tasks(args.shared, args.smoke).items()):
            print(label, flush=True)
            results = run_task(overrides, seeds, rounds, Path(tmp) / f"task{i}")
            sections.append(table(label, results, seeds, rounds))
    command = (
        "python benchmarks/fedcmi.py"
        + (" --smoke" if args.smoke else "")
        + ("" if seeds == [0, 1, 2] else f" --seeds {' '.join(map(str, seeds))}")
    )
    command += "" if rounds == ROUNDS or args.smoke else f" --rounds {rounds}"
    intro = (
        "## FedCMI vs FedAvg vs local (issue 6)\n\n"
        f"Command: `{command}` (total CPU {time.process_time() - t0:.0f} s). 10 clients (2 per single "
        "modality, 6 with both), all training every round; default training block (Adam, lr 0.003, "
        "batch 32, 2 local epochs), embed_dim 64, FedCMI defaults (lambda 1, warm-up 1 round, k = 2). "
        "fedavg/fedcmi: the global model on the test set seen through each subset; local: the mean "
        "over the clients that hold the subset of their own models."
    )
    section = "\n\n".join([intro, *sections])
    publish(section, args.output, SECTION, args.smoke)


if __name__ == "__main__":
    main()
