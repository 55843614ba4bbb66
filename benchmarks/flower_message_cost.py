"""Benchmark: what one Flower message costs a SuperNode, with and without a node worker (no Flower run).

Flower starts a fresh ClientApp process for every message a SuperNode receives. This measures, for
one round-1 train message to node_0 of the benchmark's 3-node split, the CPU seconds of: a fresh
process running fedmosaic's ClientApp handler without a node worker (it imports torch and fedmosaic,
reads the node folder and trains); the same with a node worker running (the process forwards the
message; the worker's own CPU for it is read from /proc); the training itself, in-process and warm
(what the local engine pays for those clients); and the worker's one-time warm-up. CPU seconds
hardly depend on what else runs on the machine, wall seconds do: both are given. Flower's own
`flwr-clientapp` start (its imports, heartbeat, HTTP client) comes on top of the process numbers
here, with or without a worker. Writes the ``flower-message`` section of BENCHMARKS.md.

    python benchmarks/flower_message_cost.py            # the default task (the flower_overhead run)
    python benchmarks/flower_message_cost.py --from-results   # the section from benchmarks/results/
    python benchmarks/flower_message_cost.py --smoke    # tiny task; prints, never writes
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomli_w
from flwr.app import RecordDict
from flwr.common.serde import recorddict_to_proto

from _harness import Benchmark, Context, Results, Row, by_row
from fedmosaic.config import load_config
from fedmosaic.core.seeding import SERVER, Rng
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.federation import Federation
from fedmosaic.engines.flower import RUN, TRAIN, prepare_nodes
from fedmosaic.engines.flower_node import answer
from fedmosaic.engines.flower_records import put_json, put_messages
from fedmosaic.engines.node_data import load_node

SMOKE = ["task.options.n_samples=400", "task.proxy_size=40", "task.labelled_size=40"]
SMOKE += ["model.embed_dim=16", "model.text_hidden=16"]
# A fresh process answering one train message through the ClientApp's own handler.
CHILD = """
import sys
from flwr.app import RecordDict
from flwr.common.serde import recorddict_from_proto
from flwr.proto.recorddict_pb2 import RecordDict as Proto
from fedmosaic.engines.flower_client import handle
proto = Proto()
proto.ParseFromString(open(sys.argv[1], "rb").read())
handle("train", recorddict_from_proto(proto), RecordDict(), {"data-dir": sys.argv[2]})
"""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def clientapp(message: Path, node: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one fresh process answering the message."""
    cpu, t0 = children_cpu(), time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD, str(message), str(node)], check=True, timeout=1800)
    return time.perf_counter() - t0, children_cpu() - cpu


def measure(overrides: list[str], workdir: Path, repeats: int) -> dict:
    """The costs of one train message to node_0 (of 3), each way."""
    os.environ["FEDMOSAIC_WORKER_DIR"] = str(workdir / "w")
    cfg = load_config(None, overrides)
    node = prepare_nodes(cfg, workdir / "nodes", 3)[0]
    fed = Federation.from_config(cfg, build_task(cfg))
    plan = fed.server.configure(1, fed.specs, Rng(cfg.seed, 1, SERVER))
    hosted = {c.spec.id for c in load_node(str(node)).clients}
    content = RecordDict()
    run = {"round": 1, "config": tomli_w.dumps(cfg.to_toml_dict()), "clients-per-round": len(fed.specs)}
    put_json(content, RUN, **run)
    put_messages(content, TRAIN, {cid: message for cid, message in plan.items() if cid in hosted})
    message = workdir / "message.bin"
    message.write_bytes(recorddict_to_proto(content).SerializeToString())
    load = os.getloadavg()[0]
    out: dict = {"clients": len(hosted), "load": [load]}
    out["alone"] = [clientapp(message, node) for _ in range(repeats)]
    ready = workdir / "ready"
    argv = [sys.executable, "-m", "fedmosaic.cli", "node-worker", "--node-config", f'data-dir="{node}"']
    worker = subprocess.Popen(
        [*argv, "--ready", str(ready)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        t0, deadline = time.perf_counter(), time.monotonic() + 900
        while not ready.exists():
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the node worker did not start")
            time.sleep(0.1)
        out["warm_up"] = (time.perf_counter() - t0, process_cpu(worker.pid))
        out["forwarded"] = []
        for _ in range(repeats + 1):  # the first forwarded message also builds the model: dropped
            before = process_cpu(worker.pid)
            wall, cpu = clientapp(message, node)
            out["forwarded"].append((wall, cpu, process_cpu(worker.pid) - before))
        out["forwarded"] = out["forwarded"][1:]
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    answer(TRAIN, content, RecordDict(), {"data-dir": str(node)})  # warm, as the local engine is
    out["work"] = []
    for _ in range(repeats):
        cpu, t0 = own_cpu(), time.perf_counter()
        answer(TRAIN, content, RecordDict(), {"data-dir": str(node)})
        out["work"].append((time.perf_counter() - t0, own_cpu() - cpu))
    out["load"].append(os.getloadavg()[0])
    return out


def mean(rows: list[tuple], k: int) -> float:
    return sum(r[k] for r in rows) / len(rows)


def render(stored: Results) -> str:
    """The markdown section."""
    m, command = by_row(stored)["train message"][0], stored["command"]
    alone, fwd, work = m["alone"], m["forwarded"], m["work"]
    rows = [
        "| on the node, per train message | wall s | CPU s |",
        "|---|---:|---:|",
        f"| ClientApp process, no node worker (imports torch + fedmosaic, reads the node, trains) | "
        f"{mean(alone, 0):.1f} | {mean(alone, 1):.2f} |",
        f"| ClientApp process, node worker running (forwards the message) | {mean(fwd, 0):.1f} | "
        f"{mean(fwd, 1):.2f} |",
        f"| the node worker answering it | | {mean(fwd, 2):.2f} |",
        f"| the training itself, in-process and warm (the local engine's cost) | {mean(work, 0):.1f} | "
        f"{mean(work, 1):.2f} |",
        f"| node worker warm-up, once per node (not per message) | {m['warm_up'][0]:.1f} | "
        f"{m['warm_up'][1]:.2f} |",
    ]
    saved = mean(alone, 1) - mean(fwd, 1) - mean(fwd, 2)
    return "\n".join(
        [
            f"What one Flower message costs a SuperNode: a round-1 fedavg train message to node_0 of the "
            f"`flower_overhead.py` split ({m['clients']} clients), answered by a fresh process through "
            f"fedmosaic's ClientApp handler, with and without a node worker (means of {len(alone)} "
            f"messages each; no Flower processes, so Flower's own `flwr-clientapp` start comes on top of "
            f"the process rows either way). Command: `{command}`",
            "",
            *rows,
            "",
            f"The node worker saves {saved:.2f} CPU s per node and message "
            f"({saved / mean(alone, 1):.0%} of the process-without-worker cost); what remains per message "
            f"is the ClientApp process start (Python, Flower, fedmosaic's light client module) and the "
            "training itself.",
        ]
    )


def run(row: Row, seed: int, ctx: Context) -> dict:
    """One round-1 train message's costs (the row is the only one)."""
    overrides = [f"seed={seed}", "rounds=1", "compare=[]", "engine.progress=false", "output.plots=false"]
    overrides += SMOKE if ctx.smoke else []
    workdir = Path(tempfile.mkdtemp(prefix="fmw-b-"))  # short: it holds the worker's Unix socket
    try:
        return measure(overrides, workdir, 1 if ctx.smoke else ctx.args.repeats)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=2, help="messages per way of answering")


BENCH = Benchmark(
    "flower-message",
    __doc__,
    "benchmarks/flower_message_cost.py",
    lambda args: [Row("train message")],
    render,
    run,
    seeds=(0,),
    options=options,
)

if __name__ == "__main__":
    BENCH.main()
