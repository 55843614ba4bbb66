"""Benchmark: what Flower's Deployment Engine adds per round, against the local engine, on the same run.

The same config runs twice: in-process on the local engine, and on a SuperLink + N SuperNodes on
127.0.0.1 (``flwr run``, the clients split over the nodes' folders). Both write timings.jsonl with
the same clock around the same round loop, so the difference per round is Flower's cost: pushing
and pulling messages through the SuperLink, the SuperNodes' 3 s polling, and a fresh ClientApp
process (importing torch and fedmosaic) per node and message. The metrics of both runs are compared
too (they are bit-identical). Writes the ``flower`` section of BENCHMARKS.md.

    python benchmarks/flower_overhead.py            # the default task, 3 rounds, 3 SuperNodes
    python benchmarks/flower_overhead.py --from-results   # the section from benchmarks/results/, no runs
    python benchmarks/flower_overhead.py --smoke    # tiny task, 2 rounds; prints, never writes
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import _harness
from fedmosaic.config import load_config
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.federation import Federation
from fedmosaic.engines.flower import prepare_nodes, write_app
from fedmosaic.engines.flower_local import descendants, local_federation
from fedmosaic.engines.run_folder import read_jsonl

SECTION = "flower"
SMOKE = [
    "task.options.n_samples=400",
    "task.proxy_size=40",
    "task.labelled_size=40",
    "model.embed_dim=16",
    "model.text_hidden=16",
]


def seconds(folder: Path) -> list[float]:
    return [row["seconds"] for row in read_jsonl(folder / "timings.jsonl")]


def import_seconds(module: str) -> tuple[float, float]:
    """Wall and CPU seconds of a fresh Python importing ``module`` (what a ClientApp process pays)."""
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, timeout=300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return time.perf_counter() - t0, cpu


def compute_time(fed, run_id: int) -> dict:
    """Flower's own accounting of the run (``flwr list --run-id``): ServerApp and ClientApp seconds."""
    done = fed.flwr("list", "fedmosaic", "--run-id", str(run_id), "--format", "json")
    text = done.stdout
    return json.loads(text[text.find("{") :])["runs"][0].get("compute-time", {})


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user + system) of ``pids``, their live descendants and every child they reaped.

    A process's reaped children are in its cutime/cstime and a live one is counted by itself, so
    nothing is counted twice; this process's own reaped children (the ``flwr`` CLI calls) are added.
    """
    tick = os.sysconf("SC_CLK_TCK")
    tree = set(pids)
    for pid in pids:
        tree.update(descendants(pid))
    total = 0
    for pid in tree:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return total / tick + children.ru_utime + children.ru_stime


def own_cpu() -> float:
    """CPU seconds of this process and its reaped children (the local engine's forked workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure(
    overrides: list[str], nodes: int, workdir: Path, timeout_s: float, worker: bool, fast_poll: bool
) -> dict:
    """Run ``overrides`` locally and on Flower; timings, setup costs and whether metrics match."""
    cfg = load_config(None, overrides)
    local = workdir / "local"
    cpu0, wall0 = own_cpu(), time.perf_counter()
    Federation.from_config(cfg, build_task(cfg), folder=local).run()
    local_cpu, local_wall = own_cpu() - cpu0, time.perf_counter() - wall0
    folders = prepare_nodes(cfg, workdir / "nodes", nodes)
    app = write_app(workdir / "app")
    flower = workdir / "flower"
    load_before = os.getloadavg()[0]
    imports = {
        m: import_seconds(m)
        for m in ("flwr.supernode.cli", "fedmosaic.engines.flower_client", "fedmosaic.engines.flower_node")
    }
    t0 = time.perf_counter()
    with local_federation(workdir / "federation", fast_poll=fast_poll) as fed:
        for k, folder in enumerate(folders):
            fed.start_supernode(f"node_{k}", folder, worker=worker)
        fed.wait_workers()
        started = time.perf_counter()
        pids = [p.pid for p in fed.processes.values()]
        cpu_before, submitted_at = cpu_seconds(pids), time.time()
        run_id = fed.submit(app, {"set": ";".join(overrides), "out": str(flower), "min-nodes": nodes})
        status = fed.wait_run(run_id, timeout_s)
        finished = time.perf_counter()
        flower_cpu = cpu_seconds(pids) - cpu_before
        accounting = compute_time(fed, run_id)
    if status != "finished:completed":
        raise SystemExit(f"the Flower run ended {status}; logs in {workdir / 'federation'}")
    flower_s, local_s = seconds(flower), seconds(local)
    first = read_jsonl(flower / "timings.jsonl")[0]
    return {
        "rounds": cfg.rounds,
        "nodes": nodes,
        "worker": worker,
        "fast_poll": fast_poll,
        "clients": json.loads((local / "summary.json").read_text())["clients"],
        "local_s": local_s,
        "flower_s": flower_s,
        "local_wall": local_wall,
        "local_cpu": local_cpu,
        "flower_wall": finished - started,
        "flower_cpu": flower_cpu,
        "start_s": started - t0,
        "run_s": finished - started,
        "first_round_s": first["ended"] - first["seconds"] - submitted_at,
        "outside_rounds_s": (finished - started) - sum(flower_s),
        "identical": (local / "metrics.jsonl").read_bytes() == (flower / "metrics.jsonl").read_bytes(),
        "bytes_per_round": np.mean(
            [r["bytes_up"] + r["bytes_down"] for r in read_jsonl(flower / "metrics.jsonl")]
        ),
        "load": (load_before, os.getloadavg()[0]),
        "imports": imports,
        # fedavg: per node one query message, then one train message per round (no client evaluation)
        "clientapp_s": accounting.get("clientapp-seconds", float("nan")) / (nodes * (1 + cfg.rounds)),
    }


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def table(numbers: dict, command: str) -> str:
    """The section: s/round of each engine per repeat, their mean ± std, and where the time goes."""
    repeats = numbers["repeats"]
    m = repeats[-1]  # the setup-cost and accounting figures quoted in the text: the last repeat's
    local = [float(np.mean(r["local_s"])) for r in repeats]
    flower = [float(np.mean(r["flower_s"])) for r in repeats]
    overhead = [f - lo for f, lo in zip(flower, local, strict=True)]
    ratio = [f / lo for f, lo in zip(flower, local, strict=True)]
    flwr_only, light, heavy = m["imports"].values()
    worker = "a node worker beside each SuperNode" if m["worker"] else "no node worker"
    worker += (
        ", SuperNodes started by `python -m fedmosaic.engines.supernode` (idle poll 0.2 s)"
        if m["fast_poll"]
        else ", `flower-supernode` (idle poll 3 s)"
    )

    def per_repeat(values: list[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    def rounds(key: str) -> str:
        return "; ".join(", ".join(f"{s:.2f}" for s in r[key]) for r in repeats)

    return "\n".join(
        [
            f"Flower Deployment Engine vs the local engine on the same run: {m['clients']} clients on "
            f"{m['nodes']} SuperNodes (SuperLink and nodes on 127.0.0.1, insecure, {worker}), fedavg, "
            f"{m['rounds']} rounds, the pair run {len(repeats)} time(s) one after the other. "
            f"Command: `{command}`",
            "",
            f"| engine | s / round, mean ± std over the {len(repeats)} repeats | per repeat (mean of its "
            "rounds) | every round (s), repeats separated by ; |",
            "|---|---:|---|---|",
            f"| local | {_mean_std(local)} | {per_repeat(local)} | {rounds('local_s')} |",
            f"| flower | {_mean_std(flower)} | {per_repeat(flower)} | {rounds('flower_s')} |",
            f"| **overhead** | **{_mean_std(overhead)}** (flower / local: {_mean_std(ratio)}x) | "
            f"{per_repeat(overhead)} | |",
            "",
            f"Whole run of the last repeat, wall s and CPU s: local {m['local_wall']:.1f}, "
            f"{m['local_cpu']:.1f}; flower {m['flower_wall']:.1f}, {m['flower_cpu']:.1f}. "
            "Metrics identical to the local engine in every repeat: "
            f"{'yes' if all(r['identical'] for r in repeats) else 'NO'}.",
            "",
            f"Whole run: local = building the task + the rounds + outputs in one process; flower = "
            f"`flwr run` to finished, CPU of every Flower and fedmosaic process of the federation "
            f"(SuperLink, "
            f"SuperNodes, SuperExecs, ServerApp, ClientApps, node workers). From `flwr run` to the start of "
            f"round 1: {m['first_round_s']:.1f} s (ServerApp start, the server's sets, asking the nodes "
            f"for their clients); `flwr run` to finished minus the rounds: {m['outside_rounds_s']:.1f} s. "
            f"Starting the SuperLink, SuperNodes and node workers (until every worker is ready): "
            f"{m['start_s']:.1f} s, before `flwr run`. {m['bytes_per_round'] / 1e6:.2f} MB counted per "
            "round on both engines.",
            "",
            f"Where the overhead goes: Flower starts a `flwr-clientapp` process per node and message "
            f"(Flower's accounting: {m['clientapp_s']:.1f} s of ClientApp process time per message). "
            f"A cold one imports Flower's SuperNode stack first ({flwr_only[0]:.1f} s wall, "
            f"{flwr_only[1]:.1f} s CPU for `flwr.supernode.cli` in a fresh process run alone just before); "
            f"here each is forked from a zygote that imported it once per node "
            f"(`fedmosaic.engines.warm_clientapp`), then imports only Flower and "
            f"`fedmosaic.engines.flower_client` (cold: {light[0]:.1f} s, {light[1]:.1f} s CPU) and "
            f"forwards the message to the node worker, which keeps torch, the algorithms and the node's "
            f"data loaded (without a worker the process imports `fedmosaic.engines.flower_node`: "
            f"{heavy[0]:.1f} s, {heavy[1]:.1f} s CPU, and reads the data). A node's message carries "
            f"all its clients as two records: their arrays packed into one Flower Array, their names and "
            f"metadata in one JSON index (`fedmosaic.engines.flower_records`: 5 Flower objects per "
            f"message, one more per further 5 MB, where an Array per model tensor made hundreds and "
            f"three records and an Array per client 2 + 4 per client). A node starts the ClientApp as "
            f"soon as it has a message's head and pulls "
            f"its content after, so the ClientApp often asks for objects that are not there yet: it "
            f"asks again after 20 ms, doubling to 250 ms (`fedmosaic.engines.flower_pull`), where "
            f"flwr 1.41.0 waits 1 s first (the ServerApp and SuperNode pull likewise). An idle "
            f"`flower-supernode` polls the SuperLink every 3 s (fixed in flwr "
            f"1.41.0), so the next round's message waits up to 3 s on each node, 0.2 s with the launcher; "
            f"a node's SuperExec is woken by its SuperNode the moment a message is stored "
            f"(`fedmosaic.engines.flower_wake`; otherwise it asks every 1 s, not 10 times a second), and "
            f"the SuperNode's waits for a ClientApp's reply and its objects (every 0.5 s in flwr 1.41.0) "
            f"end when they are stored (`flower_wake.Doorbell`); the "
            f"SuperLink's polls every 0.1 s (`FLWR_SUPEREXEC_TASK_POLL_INTERVAL`), the ServerApp every "
            f"0.05 s (`poll-s`). What remains per round: the nodes' training itself (three nodes share "
            f"the machine's cores, as the local engine's workers do), the ServerApp's aggregation, the "
            f"transfer of every message's records (one HTTP request per Flower object, two at a time, "
            f"through the SuperLink), and those polls. Machine: 2 CPU "
            f"cores shared with other jobs (1-min load average {repeats[0]['load'][0]:.1f} before the "
            f"first repeat, {m['load'][1]:.1f} after the last).",
        ]
    )


def render(stored: _harness.Results) -> str:
    """The section from the stored results."""
    return table(stored["runs"][0]["numbers"], stored["command"])


def main() -> None:
    parser = _harness.parser(__doc__, seeds=None, rounds=3, loop=False)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument(
        "--no-worker", action="store_true", help="no node worker: every ClientApp process does the work"
    )
    parser.add_argument(
        "--no-fast-poll", action="store_true", help="flower-supernode itself (its idle poll: 3 s)"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="bounded wait for the Flower run (s)")
    parser.add_argument("--repeats", type=int, default=3, help="how many times the pair of runs is measured")
    args = parser.parse_args()

    def run() -> dict:
        overrides = [f"rounds={args.rounds}", "compare=[]", "engine.progress=false", "output.plots=false"]
        overrides += SMOKE if args.smoke else []
        repeats = []
        # Rounds of seconds on a shared 2-core machine vary by a second from one federation to the
        # next (process placement, poll phases), so the pair is measured more than once.
        worker, fast_poll = not args.no_worker, not args.no_fast_poll
        for _ in range(1 if args.smoke else args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                repeats.append(measure(overrides, args.nodes, Path(tmp), args.timeout, worker, fast_poll))
        return {"repeats": repeats}

    _harness.standalone(SECTION, "benchmarks/flower_overhead.py", parser, args, run, render, smoke_rounds=2)


if __name__ == "__main__":
    main()
