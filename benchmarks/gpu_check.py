"""GPU check (issue 20): the same run on the CPU and on a GPU, compared; s/round; peak device memory.

Run it on a machine with a GPU:

    python benchmarks/gpu_check.py                   # engine.device=auto (cuda, else mps)
    python benchmarks/gpu_check.py --device cuda:1   # a given GPU
    python benchmarks/gpu_check.py --device cpu      # a dry run: the CPU against itself (tests the script)

1. The README's default run (synthetic image+text, fedavg, 10 clients), ``--rounds`` rounds (3),
   on ``engine.device=cpu`` and on the GPU, the task built once: the two runs must sample the same
   clients and move the same bytes every round (exact), and every evaluation metric of every round
   and the training loss must agree within ``--tolerance`` (absolute, default 0.03). GPUs round
   differently (other kernels, other summation orders, TF32 where torch allows it) and that
   difference grows through training, so bit-equality is not expected there; on the CPU, fedmosaic
   is bit-exact whatever the device setting.
2. Seconds per round on each (wall and CPU seconds, rounds after the first, which also builds the models).
3. Peak device memory (``torch.cuda.max_memory_allocated``) with ``--sizes`` clients (10 and 1,000,
   ``benchmarks/scale.py``'s task, 10 sampled per round), each size in its own process: it should
   not grow with the number of clients (they share one model instance; their states live on the CPU).

Exit codes: 0 = checked, every comparison within tolerance; 1 = a comparison failed (listed);
3 = no GPU on this machine (one line says why; nothing was run). ``--output`` writes the ``gpu``
section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from _harness import publish

NO_GPU = 3
SECTION = "gpu"


def pick_device(name: str) -> tuple[str | None, str]:
    """The resolved device, or ``None`` and the one-line reason there is no GPU to check."""
    import torch

    from fedmosaic.core.device import resolve_device
    from fedmosaic.core.errors import ConfigError

    try:
        device = resolve_device(name, key="--device")
    except ConfigError as exc:
        return None, str(exc)
    if name == "auto" and device == "cpu":
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        return None, f"torch {torch.__version__} ({build}) sees no CUDA or MPS GPU on this machine"
    return device, ""


def run(
    device: str, rounds: int, task: Any = None
) -> tuple[list[dict[str, Any]], list[tuple[float, float]], Any]:
    """The default config for ``rounds`` rounds on ``device``: its rows, (wall, CPU) s per round, the task."""
    from fedmosaic.config import load_config
    from fedmosaic.data.tasks import build_task
    from fedmosaic.engines.federation import Federation

    cfg = load_config(
        None, [f"rounds={rounds}", "compare=[]", "engine.progress=false", f"engine.device={device}"]
    )
    task = build_task(cfg) if task is None else task
    rows, times = [], []
    with Federation.from_config(cfg, task) as fed:
        for _ in range(rounds):
            cpu0 = time.process_time()
            result = fed.step()
            rows.append(result.row)
            times.append((result.seconds, time.process_time() - cpu0))
    return rows, times, task


def differences(reference: list[dict[str, Any]], other: list[dict[str, Any]], tolerance: float) -> list[str]:
    """One line per disagreement: clients or bytes that differ (exactly), or a metric off by more
    than ``tolerance``."""
    out = []
    for a, b in zip(reference, other, strict=True):
        r = a["round"]
        for key in ("clients", "bytes_up", "bytes_down"):
            if a[key] != b[key]:
                out.append(f"round {r}: {key} differ: {a[key]} vs {b[key]}")
        pairs = [(f"train/{k}", v, b["train"].get(k)) for k, v in a["train"].items()]
        for name, metrics in a.get("eval", {}).items():
            pairs += [
                (f"eval/{name}/{k}", v, b.get("eval", {}).get(name, {}).get(k)) for k, v in metrics.items()
            ]
        for name, x, y in pairs:
            if y is None or not np.isfinite(float(y)) or abs(float(x) - float(y)) > tolerance:
                out.append(f"round {r}: {name} {x!r} vs {y!r} (tolerance {tolerance})")
    return out


def max_gap(reference: list[dict[str, Any]], other: list[dict[str, Any]]) -> float:
    """The largest absolute difference of any evaluation metric or training loss over all rounds."""
    gap = 0.0
    for a, b in zip(reference, other, strict=True):
        for k, v in a["train"].items():
            gap = max(gap, abs(float(v) - float(b["train"][k])))
        for name, metrics in a.get("eval", {}).items():
            for k, v in metrics.items():
                gap = max(gap, abs(float(v) - float(b["eval"][name][k])))
    return gap


def per_round(times: list[tuple[float, float]]) -> tuple[float, float]:
    """Mean (wall, CPU) seconds of the rounds after the first."""
    later = times[1:] or times
    return float(np.mean([t[0] for t in later])), float(np.mean([t[1] for t in later]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", default="auto", help="the GPU: auto (default), cuda, cuda:N, mps; cpu = dry run"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=0.03, help="largest absolute metric difference")
    parser.add_argument(
        "--sizes", type=int, nargs="*", default=[10, 1000], help="clients for the memory runs"
    )
    parser.add_argument("--output", type=Path, help="also write the gpu section of this BENCHMARKS.md")
    args = parser.parse_args(argv)
    device, reason = pick_device(args.device)
    if device is None:
        print(f"gpu_check: no GPU to check, nothing was run: {reason}", flush=True)
        return NO_GPU

    import torch

    cpu_rows, cpu_times, task = run("cpu", args.rounds)
    gpu_rows, gpu_times, _ = run(device, args.rounds, task)
    problems = differences(cpu_rows, gpu_rows, args.tolerance)
    same_traffic_broken = any(" differ: " in p for p in problems)
    (cpu_wall, cpu_cpu), (gpu_wall, gpu_cpu) = per_round(cpu_times), per_round(gpu_times)

    import scale

    memory = {n: scale.measure(n, 0, 2, scale.TEST_SIZE, device) for n in args.sizes}
    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else device
    shown = sys.argv[1:] if argv is None else argv
    command = " ".join(["python benchmarks/gpu_check.py", *shown])
    lines = [
        f"### GPU check: {name} against the CPU (issue 20)",
        "",
        f"The default run (synthetic image+text, fedavg, 10 clients), {args.rounds} rounds, the same "
        f"task on `engine.device=cpu` and `engine.device={device}`; torch {torch.__version__}. "
        f"Command: `{command}`",
        "",
        "| device | s / round (wall) | CPU s / round |",
        "|---|---:|---:|",
        f"| cpu | {cpu_wall:.3f} | {cpu_cpu:.3f} |",
        f"| {device} | {gpu_wall:.3f} | {gpu_cpu:.3f} |",
        "",
        f"- Same clients and bytes every round: {'NO' if same_traffic_broken else 'yes'}; "
        f"largest metric difference {max_gap(cpu_rows, gpu_rows):.4f} (tolerance {args.tolerance}): "
        f"{'within' if not problems else 'NOT within'}.",
        "",
        "| clients | peak device MiB | live models | s / round (wall) | peak RSS MiB |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n, row in memory.items():
        peak = row.get("cuda_peak_mib")
        lines.append(
            f"| {n:,} | {'n/a' if peak is None else f'{peak:.1f}'} | {row['models']:.0f} "
            f"| {row['s_per_round']:.3f} | {row['peak_rss_mb']:.0f} |"
        )
    if problems:
        lines += ["", "Differences:", *(f"- {p}" for p in problems)]
    section = "\n".join(lines)
    publish(section, args.output or Path("unused"), SECTION, smoke=args.output is None)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
