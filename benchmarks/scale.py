"""Benchmark: the local engine with 10, 100 and 1,000 clients, 10 sampled per round.

Synthetic image+text task, fedavg, every client holding both modalities. Each client holds the same
number of samples at every size and the server's test set has a fixed size, so the work of a round
(10 clients training, one evaluation of the global model) is the same at every size: what changes
is only how many clients exist. Each (size, seed) runs in its own subprocess, so the peak resident
memory is that run's alone. Writes the ``scale`` section of BENCHMARKS.md.

    python benchmarks/scale.py              # full: 10 / 100 / 1,000 clients x 3 seeds, 5 rounds (~6 min)
    python benchmarks/scale.py --from-results   # the section from benchmarks/results/, no runs
    python benchmarks/scale.py --smoke      # 10 and 30 clients, 1 seed, 2 rounds, prints only (CI)
    python benchmarks/scale.py --device cuda   # the same on a GPU (engine.device), adds peak device memory

Targets (issue 8): 1,000 clients in one process under 2 GB peak, and seconds per round with 1,000
clients within 1.2x of those with 10. Issue 20: device memory flat in the number of clients, because
every client of a process trains in the same model instances (their states are numpy, on the CPU):
at the end of the last round the worker counts the live torch models, their parameters and the bytes
of every live tensor (and, on CUDA, ``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _harness import Benchmark, Context, Results, Row, by_row, mean_std, seeds_of

PER_ROUND = 10
SAMPLES_PER_CLIENT = 30  # 27 training + 3 validation samples at val_fraction 0.1
TEST_SIZE = 500
TARGET_MB = 2048
TARGET_RATIO = 1.2


def overrides(
    n_clients: int, seed: int, rounds: int, test_size: int = TEST_SIZE, device: str = "cpu"
) -> list[str]:
    """The scale task for ``n_clients`` clients: fixed samples per client, fixed test set."""
    n_samples = n_clients * SAMPLES_PER_CLIENT + test_size
    return [
        f"engine.device={device}",
        f"seed={seed}",
        f"rounds={rounds}",
        "compare=[]",
        "engine.progress=false",
        "engine.threads=1",
        "engine.workers=1",  # the live-model counts are of this one process
        "output.plots=false",
        f"task.options.n_samples={n_samples}",
        f"task.test_fraction={test_size / n_samples!r}",
        # fedavg uses no server-side data besides the test set
        "task.proxy_size=0",
        "task.labelled_size=0",
        'clients.mix=""',
        f"clients.count={n_clients}",
        f"clients.per_round={PER_ROUND}",
    ]


def live_torch() -> dict[str, float]:
    """What torch holds right now in this process: root models, parameters, tensor bytes.

    ``models``: live ``nn.Module`` objects with parameters that are no other live module's child
    (the server's global model, the client half's model slot; transformers' parameter-free
    activation singletons are not models); ``parameters``: elements of the distinct live
    ``nn.Parameter`` objects; ``tensor_mib``: bytes of the distinct storages of every live tensor
    (CPU torch keeps no allocator statistics, so this is its counter). With CUDA also the bytes
    allocated on the GPU now and at the peak (``torch.cuda.memory_allocated``/``max_memory_allocated``).
    """
    import gc
    import warnings

    import torch

    gc.collect()
    objects = gc.get_objects()
    with warnings.catch_warnings():  # isinstance on deprecated torch.distributed aliases warns
        warnings.simplefilter("ignore")
        modules = [o for o in objects if isinstance(o, torch.nn.Module)]
        tensors = [o for o in objects if isinstance(o, torch.Tensor)]
    children = {id(c) for m in modules for c in m.children()}
    params = {id(o): o for o in tensors if isinstance(o, torch.nn.Parameter)}
    storages: dict[tuple[str, int], int] = {}
    for o in tensors:
        if o.device.type != "meta":
            storage = o.untyped_storage()
            storages[(str(o.device), storage.data_ptr())] = storage.nbytes()
    roots = [m for m in modules if id(m) not in children]
    out = {
        "models": float(sum(1 for m in roots if next(m.parameters(), None) is not None)),
        "parameters": float(sum(p.numel() for p in params.values())),
        "tensor_mib": sum(storages.values()) / 2**20,
    }
    if torch.cuda.is_available():
        out["cuda_mib"] = torch.cuda.memory_allocated() / 2**20
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def worker(n_clients: int, seed: int, rounds: int, test_size: int, device: str = "cpu") -> dict[str, Any]:
    """One run in this process: task build time, wall and CPU seconds per round, peak RSS, and what
    torch holds at the end of the last round (:func:`live_torch`)."""
    from fedmosaic import runner
    from fedmosaic.config import load_config
    from fedmosaic.engines.run_folder import peak_rss_mb

    marks: list[tuple[float, float]] = []
    held: dict[str, float] = {}

    def progress(_name: str, _rounds: int):
        marks.append((time.perf_counter(), time.process_time()))  # the task is built: the engine starts

        def on_round(r: int, _row: dict[str, Any]) -> None:
            marks.append((time.perf_counter(), time.process_time()))
            if r == rounds:  # the federation is still alive here; counted after the round's timing mark
                held.update(live_torch())

        return on_round

    cfg = load_config(None, overrides(n_clients, seed, rounds, test_size, device))
    with tempfile.TemporaryDirectory() as tmp:
        start = (time.perf_counter(), time.process_time())
        result = runner.start(cfg, Path(tmp) / "run", progress=progress)
    summary = result.summaries["fedavg"]
    # marks: engine start, end of round 1, ..., end of round R. Rounds 2..R are timed (round 1
    # also builds the client's model skeleton).
    wall = np.diff([m[0] for m in marks[1:]])
    cpu = np.diff([m[1] for m in marks[1:]])
    return {
        "clients": n_clients,
        "seed": seed,
        "rounds": summary["rounds"],
        "setup_s": marks[0][0] - start[0],
        "setup_cpu_s": marks[0][1] - start[1],
        "s_per_round": float(np.mean(wall)),
        "cpu_s_per_round": float(np.mean(cpu)),
        "peak_rss_mb": peak_rss_mb(),
        "accuracy": summary["final"]["overall"]["accuracy"],
        "device": device,
        **held,
    }


def rows(args: argparse.Namespace) -> list[Row]:
    """One row per number of clients (smoke: 10 and 30)."""
    if args.rounds < 2:
        raise SystemExit("--rounds: at least 2 (round 1 is not timed)")
    return [Row(str(n), params={"clients": n}) for n in ([10, 30] if args.smoke else sorted(args.sizes))]


def measure(row: Row, seed: int, ctx: Context) -> dict[str, Any]:
    """Run :func:`worker` in a fresh interpreter (so its peak RSS is its own)."""
    args = ctx.args
    cmd = [sys.executable, __file__, "--worker", str(row.params["clients"]), "--seed", str(seed)]
    cmd += ["--rounds", str(args.rounds), "--test-size", str(args.test_size), "--device", args.device]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{row.name} clients, seed {seed} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--test-size", type=int, default=TEST_SIZE, help="server test set size")
    parser.add_argument("--device", default="cpu", help="engine.device of every run (default cpu)")


def render(stored: Results) -> str:
    """The markdown section: one row per size, and the targets checked against the measurements."""
    rows = {int(name): runs for name, runs in by_row(stored).items()}
    seeds, rounds, test_size = seeds_of(stored), stored["options"]["rounds"], stored["options"]["test_size"]
    command = stored["command"]
    device = next(iter(rows.values()))[0]["device"]
    cuda = "cuda_peak_mib" in next(iter(rows.values()))[0]
    lines = [
        "### Scale: 10, 100 and 1,000 clients in one process (issues 8 and 20)",
        "",
        f"Local engine, synthetic image+text task, fedavg, every client holding both modalities, "
        f"{PER_ROUND} clients sampled per round, {SAMPLES_PER_CLIENT} samples per client, a fixed "
        f"{test_size}-sample test set evaluated every round; {rounds} rounds, seeds "
        f"{', '.join(map(str, seeds))}, each size and seed in its own process; mean ± std over seeds. "
        f"Seconds per round are rounds 2..{rounds} (round 1 also builds the client's model). "
        f"`engine.device = {device}`. Live torch objects are counted at the end of the last round "
        "(`live_torch()` in the script): models = live modules with parameters that are no other "
        "module's child, parameters = elements of the live `nn.Parameter`s, tensor MiB = the distinct "
        f"storages of every live tensor{'; peak CUDA MiB = cuda.max_memory_allocated' if cuda else ''}. "
        f"Command: `{command}`",
        "",
        "| clients | task setup CPU s | s / round (wall) | CPU s / round | peak RSS MiB | live models "
        f"| live parameters | live tensor MiB |{' peak CUDA MiB |' if cuda else ''} accuracy |",
        f"|---:|---:|---:|---:|---:|---:|---:|---:|{'---:|' if cuda else ''}---:|",
    ]
    for n, runs in rows.items():
        cuda_cell = f" {mean_std([r['cuda_peak_mib'] for r in runs], 1)} |" if cuda else ""
        lines.append(
            f"| {n:,} | {mean_std([r['setup_cpu_s'] for r in runs], 2)} "
            f"| {mean_std([r['s_per_round'] for r in runs], 3)} "
            f"| {mean_std([r['cpu_s_per_round'] for r in runs], 3)} "
            f"| {mean_std([r['peak_rss_mb'] for r in runs], 0)} "
            f"| {mean_std([r['models'] for r in runs], 0)} "
            f"| {mean_std([r['parameters'] for r in runs], 0)} "
            f"| {mean_std([r['tensor_mib'] for r in runs], 2)} |{cuda_cell}"
            f" {mean_std([r['accuracy'] for r in runs], 3)} |"
        )
    small, large = min(rows), max(rows)
    cpu = {n: np.mean([r["cpu_s_per_round"] for r in rows[n]]) for n in (small, large)}
    wall = {n: np.mean([r["s_per_round"] for r in rows[n]]) for n in (small, large)}
    peak = max(r["peak_rss_mb"] for r in rows[large])
    ratio = cpu[large] / cpu[small]
    lines += [
        "",
        f"- {large:,} vs {small:,} clients, CPU seconds per round: {ratio:.2f}x (wall: "
        f"{wall[large] / wall[small]:.2f}x); target ≤ {TARGET_RATIO}x: "
        f"{'met' if ratio <= TARGET_RATIO else 'NOT met'}.",
        f"- Peak resident memory with {large:,} clients: {peak:.0f} MiB (largest seed); target < "
        f"{TARGET_MB} MiB: {'met' if peak < TARGET_MB else 'NOT met'}.",
        f"- Live torch memory with {large:,} vs {small:,} clients: {flat(rows, small, large, 'models')} "
        f"models, {flat(rows, small, large, 'parameters')} parameters, "
        f"{flat(rows, small, large, 'tensor_mib')} tensor MiB"
        + (f", {flat(rows, small, large, 'cuda_peak_mib')} peak CUDA MiB" if cuda else "")
        + ": the clients share the model instances, so what torch holds does not grow with them "
        "(the resident-memory growth is the clients' numpy data and states).",
        "",
        "CPU seconds are the contention-free figure (the machine is shared with other jobs, which "
        "inflates wall time). Task setup is generating the data (it grows with the clients: "
        f"{SAMPLES_PER_CLIENT} samples each) and assembling the task.",
    ]
    return "\n".join(lines)


def flat(rows: dict[int, list[dict[str, Any]]], small: int, large: int, key: str) -> str:
    """``a -> b`` of ``key``'s mean at the smallest and the largest size (exact counts as integers)."""
    a, b = (float(np.mean([r[key] for r in rows[n]])) for n in (small, large))
    if a.is_integer() and b.is_integer():
        return f"{a:,.0f} -> {b:,.0f}"
    return f"{a:,.2f} -> {b:,.2f}"


def worker_main() -> None:
    """``--worker N --seed S ...``: one run in this process, its numbers as JSON on stdout."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--test-size", type=int, required=True)
    parser.add_argument("--device", required=True)
    a = parser.parse_args()
    print(json.dumps(worker(a.worker, a.seed, a.rounds, a.test_size, a.device)))


BENCH = Benchmark("scale", __doc__, "benchmarks/scale.py", rows, render, measure, rounds=5, options=options)

if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker_main()
    else:
        BENCH.main()
