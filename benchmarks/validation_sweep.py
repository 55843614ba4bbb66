"""Benchmark: bad replies tried against the server's reply validation, by kind and algorithm.

For each algorithm, one real round is trained (tiny sizes); then, for every client in turn and every
corruption kind of ``engines/faults.py::CORRUPTIONS`` (NaN, Inf, wrong shape, wrong dtype, missing
and extra arrays, x1e6 norm, missing and NaN metadata), that client's reply is corrupted and the
round's replies are screened exactly as the engines do before ``aggregate``. A try counts as caught
when the corrupted reply, and no other, is rejected. The clean round is screened too (false
rejections). Writes the section between ``<!-- validation:begin -->`` and ``<!-- validation:end -->``
of BENCHMARKS.md.

    python benchmarks/validation_sweep.py            # 7 algorithms, seed 0 (a few minutes)
    python benchmarks/validation_sweep.py --from-results   # the section from benchmarks/results/
    python benchmarks/validation_sweep.py --smoke    # fedavg and local only (< 1 min)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _harness import Benchmark, Context, Results, Row, by_row
from fedmosaic.algorithms.registry import get_algorithm
from fedmosaic.config import load_config
from fedmosaic.core.algorithm import ServerData
from fedmosaic.core.message import Message
from fedmosaic.core.seeding import SERVER, Rng
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.faults import CORRUPTIONS, default_target
from fedmosaic.engines.local import configure_threads
from fedmosaic.engines.protocol import build_client, build_server, settings_from_config
from fedmosaic.engines.screening import screen

SECTION = "validation"
TINY = [
    "rounds=1",
    "compare=[]",
    "engine.progress=false",
    "output.plots=false",
    "task.options.n_samples=400",
    "task.proxy_size=40",
    "task.labelled_size=40",
    "model.embed_dim=16",
    "model.text_hidden=16",
]
# kinds that need a floating-point array to corrupt (the rest only touch names or metadata)
NEEDS_ARRAY = {"nan", "inf", "wrong_shape", "wrong_dtype", "missing_array", "norm_1e6"}


def sensor_overrides(folder: Path) -> list[str]:
    """A small mHealth-format task (synthetic logs in the real format) for the autoencoder algorithms."""
    from fedmekt import mhealth_overrides, write_mhealth_like  # benchmarks/fedmekt.py's mHealth files

    return [
        "rounds=1",
        *mhealth_overrides(write_mhealth_like(folder, scale=0.05)),
        "task.options.window=32",
        "task.partition=iid",
        "task.proxy_size=40",
        "task.labelled_size=40",
        'clients.mix="acc:2,gyro:2,acc+gyro:4"',
    ]


SENSOR = ("mmfedavg", "fedmekt")  # rows on the mHealth-format task; the rest on TINY


def rows(args: argparse.Namespace) -> list[Row]:
    """One row per algorithm (smoke: fedavg and local)."""
    out = [Row("fedavg", ("algorithm.name=fedavg",)), Row("local", ("algorithm.name=local",))]
    if not args.smoke:
        out += [
            Row("fedcmi", ("algorithm.name=fedcmi",)),
            Row("gvf", ("algorithm.name=gvf", "algorithm.dim=16")),
            Row("mmfedavg", ("algorithm.name=mmfedavg",)),
            Row("fedmekt", ("algorithm.name=fedmekt", "algorithm.proxy_batch=16")),
        ]
    return out


def prepare(ctx: Context) -> None:
    ctx.data["sensor"] = [] if ctx.smoke else sensor_overrides(ctx.workdir / "mhealth")


def measure(row: Row, seed: int, ctx: Context) -> dict[str, object]:
    """Per kind [caught, tried]; the clean round's false rejections and replies."""
    base = ctx.data["sensor"] if row.name in SENSOR else TINY
    counts, false_rejections, n = sweep([*base, f"seed={seed}", *row.overrides])
    return {"counts": counts, "false_rejections": false_rejections, "replies": n}


def one_round(overrides: list[str]) -> tuple[object, object, dict[str, Message], dict[str, Message]]:
    """The server half, the config, and round 1's plan and replies (trained for real)."""
    cfg = load_config(None, overrides)
    configure_threads(cfg.engine.threads)
    task = build_task(cfg)
    algorithm = get_algorithm(cfg.algorithm.name)
    settings = settings_from_config(cfg, task.info, len(task.specs))
    server = build_server(algorithm, settings, ServerData(task.proxy, task.labelled, task.test))
    client = build_client(algorithm, settings)
    plan = server.configure(1, task.specs, Rng(cfg.seed, 1, SERVER))
    replies = {
        cid: client.fit(message, Message(), task.client(cid), Rng(cfg.seed, 1, cid))[0]
        for cid, message in plan.items()
    }
    return server, cfg, plan, replies


def sweep(overrides: list[str]) -> tuple[dict[str, tuple[int, int]], int, int]:
    """Per kind (caught, tried); the clean round's false rejections and replies."""
    server, cfg, plan, replies = one_round(overrides)
    clean = screen(server, 1, plan, replies, cfg.robustness)
    counts: dict[str, tuple[int, int]] = {}
    for kind, corrupt in CORRUPTIONS.items():
        caught = tried = 0
        for cid, reply in replies.items():
            has_float = any(a.dtype.kind == "f" for a in reply.arrays.values())
            if kind in NEEDS_ARRAY and not has_float:
                continue  # nothing to corrupt (local's replies carry metadata only)
            bad = corrupt(reply, default_target(reply) if has_float else "")
            result = screen(server, 1, plan, {**replies, cid: bad}, cfg.robustness)
            tried += 1
            caught += list(result.rejected) == [cid]
        counts[kind] = (caught, tried)
    return counts, len(clean.rejected), len(replies)


def render(stored: Results) -> str:
    """The markdown section."""
    results = {name: runs[0] for name, runs in by_row(stored).items()}
    kinds = list(next(iter(results.values()))["counts"])
    total_caught = sum(c for r in results.values() for c, _ in r["counts"].values())
    total_tried = sum(t for r in results.values() for _, t in r["counts"].values())
    lines = [
        "### Bad replies tried against reply validation (issue 9)",
        "",
        "One real round per algorithm (tiny sizes: the synthetic image+text task; an mHealth-format "
        "acc+gyro task for mmfedavg and fedmekt), default `[robustness]` settings; then each client's "
        "reply in turn corrupted by each kind and the round screened as the engines do. Cell: caught / "
        "tried (caught = that reply, and no other, rejected). `local` replies carry no arrays, so only "
        f"the name and metadata kinds apply. Command: `{stored['command']}`.",
        "",
        f"| algorithm | {' | '.join(kinds)} | clean replies falsely rejected |",
        "|---|" + "---:|" * (len(kinds) + 1),
    ]
    for label, r in results.items():
        cells = [f"{c}/{t}" if t else "—" for c, t in (r["counts"][k] for k in kinds)]
        lines.append(f"| {label} | {' | '.join(cells)} | {r['false_rejections']}/{r['replies']} |")
    by_kind = {k: [sum(r["counts"][k][i] for r in results.values()) for i in (0, 1)] for k in kinds}
    lines += [
        "",
        f"Total: {total_caught} of {total_tried} bad replies caught; by kind: "
        + ", ".join(f"{k} {c}/{t}" for k, (c, t) in by_kind.items())
        + ".",
    ]
    return "\n".join(lines)


BENCH = Benchmark(
    "validation",
    __doc__,
    "benchmarks/validation_sweep.py",
    rows,
    render,
    measure,
    seeds=(0,),
    prepare=prepare,
)

if __name__ == "__main__":
    BENCH.main()
