"""Benchmark: the engine against a bare PyTorch loop doing the same training, side by side.

The reference trains the same model (same initial weights) on the same batches in the same order,
averages the way FedAvg does and evaluates the global model on the same test batches, as a plain
loop over tensors: no Federation, no messages, no client states, no checkpoints. Both run in this
process, one after the other, with one torch thread (``engine.threads = 1``). The ratio engine s/round
÷ bare-loop s/round is reported for training and for evaluation separately (target: at most 1.15x),
with a check that the bare loop reproduces the engine's numbers (global weights after round 1 and
the metrics of every evaluated round) and a profile of the engine's rounds by where the time goes.
Writes the ``throughput`` section of BENCHMARKS.md.

    python benchmarks/throughput.py            # default task fedavg + uci-hapt fedavg, 5 rounds each
    python benchmarks/throughput.py --from-results   # the section from benchmarks/results/, no runs
    python benchmarks/throughput.py --smoke    # a tiny synthetic task, 1 round, prints only (CI)
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import _harness
from _harness import unpack_hapt

SECTION = "throughput"
TARGET = 1.15
# The profile parts that are the engine's own work (not torch's, not the metrics library's).
OWN_PARTS = ("data assembly", "state copies", "screen + aggregate", "I/O")
EVAL_BATCH = 256  # what the engine's evaluation uses (models/train.py::predict)

# One process, one thread, as the bare loop (the embedded default's engine.workers = "auto" would
# train on every core)
COMMON = ["compare=[]", "engine.progress=false", "engine.threads=1", "engine.workers=1", "output.plots=false"]
SMOKE = [
    "task.options.n_samples=300",
    "task.proxy_size=30",
    "task.labelled_size=30",
    "model.embed_dim=16",
    "model.text_hidden=16",
    "training.local_epochs=1",
]


# ----------------------------------------------------------------------------- timing


@dataclass
class Clock:
    """Wall and CPU seconds, added up over the spans it timed."""

    wall: float = 0.0
    cpu: float = 0.0

    def span(self) -> _Span:
        return _Span(self)


class _Span:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def __enter__(self) -> None:
        self.t = (time.perf_counter(), time.process_time())

    def __exit__(self, *exc: object) -> None:
        self.clock.wall += time.perf_counter() - self.t[0]
        self.clock.cpu += time.process_time() - self.t[1]


@dataclass
class Timing:
    """Training (everything in a round but evaluation: plan, fit, aggregate, record) and evaluation."""

    rounds: int = 0
    total: Clock = field(default_factory=Clock)
    eval: Clock = field(default_factory=Clock)

    def per_round(self) -> dict[str, float]:
        n = max(self.rounds, 1)
        return {
            "train_wall": (self.total.wall - self.eval.wall) / n,
            "train_cpu": (self.total.cpu - self.eval.cpu) / n,
            "eval_wall": self.eval.wall / n,
            "eval_cpu": self.eval.cpu / n,
        }


# ----------------------------------------------------------------------------- the engine


class TimedServer:
    """A server wrapper timing the evaluation phase (configure_evaluate and evaluate)."""

    def __init__(self, inner: Any, clock: Clock) -> None:
        self.inner, self.clock = inner, clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def configure_evaluate(self, *args: Any) -> Any:
        with self.clock.span():
            return self.inner.configure_evaluate(*args)

    def evaluate(self, *args: Any) -> Any:
        with self.clock.span():
            return self.inner.evaluate(*args)


def run_engine(cfg: Any, task: Any, folder: Path) -> tuple[Timing, list[dict[str, Any]], Any]:
    """The engine as ``fedmosaic run`` drives it (a run folder: metrics, checkpoints); its timing and rows."""
    from fedmosaic.engines.federation import Federation

    timing = Timing()
    fed = Federation.from_config(
        cfg, task, folder=folder, server_wrappers=[lambda s: TimedServer(s, timing.eval)]
    )
    rows = []
    try:
        first = None
        for _ in range(cfg.rounds):
            with timing.total.span():
                result = fed.step()
            timing.rounds += 1
            rows.append(result.row)
            if first is None:
                first = {k: v.detach().clone() for k, v in fed.server.inner.model.state_dict().items()}
    finally:
        fed.close()
    return timing, rows, first


def profile_engine(cfg: Any, task: Any, folder: Path, rounds: int) -> dict[str, float]:
    """Cumulative seconds per round of the engine's parts under cProfile (its overhead included)."""
    from fedmosaic.engines.federation import Federation

    fed = Federation.from_config(cfg, task, folder=folder)
    profiler = cProfile.Profile()
    try:
        profiler.enable()
        for _ in range(rounds):
            fed.step()
        profiler.disable()
    finally:
        fed.close()
    stats = pstats.Stats(profiler)
    cumulative: dict[tuple[str, str], float] = {}
    for (path, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        key = (Path(path).name, func)
        cumulative[key] = max(cumulative.get(key, 0.0), ct)
    parts = {
        "whole round": [("federation.py", "step")],
        "client training (train_epochs)": [("train.py", "train_epochs")],
        "data assembly (View.batches)": [("task.py", "batches")],
        "backward + Adam step": [("_tensor.py", "backward"), ("optimizer.py", "wrapper")],
        "state copies (to_arrays, load_arrays)": [("params.py", "to_arrays"), ("params.py", "load_arrays")],
        "seeded generators (fork_rng)": [("random.py", "fork_rng")],
        "screen + aggregate": [("screening.py", "screened_aggregate")],
        "evaluation (evaluate_subsets)": [("train.py", "evaluate_subsets")],
        "metrics (scikit-learn)": [("metrics.py", "classification_metrics")],
        "I/O (metrics rows, checkpoints)": [("federation.py", "_record")],
    }
    out = {}
    for label, keys in parts.items():
        out[label] = sum(cumulative.get(k, 0.0) for k in keys) / rounds
    return out


# ----------------------------------------------------------------------------- the bare loop


def run_bare(cfg: Any, task: Any) -> tuple[Timing, list[dict[str, Any]], Any]:
    """FedAvg as a plain PyTorch loop over tensors prepared once; its timing, metrics and round-1 weights."""
    import torch
    from sklearn.metrics import accuracy_score, f1_score

    from fedmosaic.core.seeding import numpy_rng, torch_seed
    from fedmosaic.models.build import build_classifier

    info, seed, tcfg = task.info, cfg.seed, cfg.training
    names = info.modality_names
    # Every modality as one tensor, converted once (images: bytes to floats in [0, 1]).
    data = {}
    for m in names:
        raw = task.store[m]
        if raw.dtype == np.uint8:
            data[m] = torch.from_numpy(raw.astype(np.float32) / 255.0)
        elif np.issubdtype(raw.dtype, np.integer):
            data[m] = torch.from_numpy(raw.astype(np.int64))
        else:
            data[m] = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
    labels = torch.from_numpy(task.labels.astype(np.int64))

    def inputs(idx: np.ndarray, present: tuple[str, ...]) -> dict[str, torch.Tensor]:
        rows = torch.from_numpy(idx)
        return {m: data[m].index_select(0, rows) for m in present}

    with torch.random.fork_rng(
        devices=[]
    ):  # the engine's initial weights: seeded from (seed, 0, server, init)
        torch.manual_seed(torch_seed(seed, 0, "server", "init"))
        model = build_classifier(info, cfg.model)
    local = build_classifier(info, cfg.model)
    keys = list(model.state_dict())

    timing, rows, first = Timing(), [], None
    for r in range(1, cfg.rounds + 1):
        with timing.total.span():
            global_state = {k: v.clone() for k, v in model.state_dict().items()}
            sums: dict[str, torch.Tensor] = {}
            weights: dict[str, float] = {}
            losses, counts = [], []
            for client in task.clients:
                cid, train = client.spec.id, client.train
                held = [m for m in names if m in client.spec.modalities]
                shared = [k for k in keys if not k.startswith("encoders.") or k.split(".")[1] in held]
                local.load_state_dict(global_state)
                params = [p for p in local.parameters() if p.requires_grad]
                opt = torch.optim.Adam(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
                local.train()
                client_losses = []
                torch.manual_seed(torch_seed(seed, r, cid, "dropout"))
                for epoch in range(tcfg.local_epochs):
                    # the engine's batch order (the data layer's View.batch_indices), as index arrays
                    order = numpy_rng(seed, r, cid, f"batches-{epoch}")
                    for idx, present in train.batch_indices(tcfg.batch_size, order, drop_singletons=True):
                        loss = torch.nn.functional.cross_entropy(
                            local(inputs(idx, present)), labels[torch.from_numpy(idx)]
                        )
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        client_losses.append(float(loss.detach()))
                n = float(len(train))
                losses.append(float(np.mean(client_losses)))
                counts.append(n)
                state = local.state_dict()
                with torch.no_grad():
                    for k in shared:  # sums in float64, as FedAvg's weighted mean
                        sums[k] = sums.get(k, 0.0) + n * state[k].double()
                        weights[k] = weights.get(k, 0.0) + n
            with torch.no_grad():
                target = model.state_dict()
                for k, total in sums.items():
                    target[k].copy_(total / weights[k])
            if first is None:
                first = {k: v.detach().clone() for k, v in model.state_dict().items()}
            train_loss = float(np.dot(losses, counts) / np.sum(counts))
            with timing.eval.span():
                model.eval()
                results = {}
                test = task.test
                with torch.no_grad():
                    for subset in info.subsets():
                        truth, preds = [], []
                        for idx, present in test.restrict(subset).batch_indices(EVAL_BATCH):
                            preds.append(model(inputs(idx, present)).argmax(1).numpy())
                            truth.append(task.labels[idx])
                        y, p = np.concatenate(truth), np.concatenate(preds)
                        classes = list(range(info.num_classes))
                        results[f"test/{info.group(subset)}"] = {
                            "accuracy": float(accuracy_score(y, p)),
                            "macro_f1": float(
                                f1_score(y, p, labels=classes, average="macro", zero_division=0)
                            ),
                            "weighted_f1": float(
                                f1_score(y, p, labels=classes, average="weighted", zero_division=0)
                            ),
                        }
        timing.rounds += 1
        rows.append({"train_loss": train_loss, "eval": results})
    return timing, rows, first


# ----------------------------------------------------------------------------- comparing


def compare(
    engine_rows: list[dict[str, Any]], bare_rows: list[dict[str, Any]], w_engine: Any, w_bare: Any
) -> dict[str, Any]:
    """How far the bare loop is from the engine's numbers."""
    import torch

    weight_diff = max(float((w_engine[k].double() - w_bare[k].double()).abs().max()) for k in w_engine)
    identical = all(torch.equal(w_engine[k], w_bare[k]) for k in w_engine)
    metric_diff, loss_diff = 0.0, 0.0
    for e, b in zip(engine_rows, bare_rows, strict=True):
        loss_diff = max(loss_diff, abs(e["train"]["train_loss"] - b["train_loss"]))
        for key, metrics in b["eval"].items():
            for name, value in metrics.items():
                metric_diff = max(metric_diff, abs(e["eval"][key][name] - value))
    return {
        "weights_identical": identical,
        "weight_diff": weight_diff,
        "loss_diff": loss_diff,
        "metric_diff": metric_diff,
    }


def setting(label: str, overrides: list[str], rounds: int, profile_rounds: int) -> dict[str, Any]:
    """Engine and bare loop on one task: per-round timings, ratios, agreement and the engine's profile."""
    import torch

    from fedmosaic.config import load_config
    from fedmosaic.data.tasks import build_task

    cfg = load_config(None, [*COMMON, f"rounds={rounds}", *overrides])
    torch.set_num_threads(cfg.engine.threads)
    task = build_task(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        engine, engine_rows, w_engine = run_engine(cfg, task, Path(tmp) / "run")
        bare, bare_rows, w_bare = run_bare(cfg, task)
        profile = profile_engine(cfg, task, Path(tmp) / "profiled", profile_rounds) if profile_rounds else {}
    e, b = engine.per_round(), bare.per_round()
    return {
        "label": label,
        "rounds": rounds,
        "engine": e,
        "bare": b,
        "train_ratio": e["train_cpu"] / b["train_cpu"],
        "eval_ratio": e["eval_cpu"] / b["eval_cpu"],
        "train_ratio_wall": e["train_wall"] / b["train_wall"],
        "eval_ratio_wall": e["eval_wall"] / b["eval_wall"],
        "agreement": compare(engine_rows, bare_rows, w_engine, w_bare),
        "profile": profile,
    }


def section(results: list[dict[str, Any]], command: str, load: str) -> str:
    lines = [
        "## Engine overhead against a bare PyTorch loop",
        "",
        "The same FedAvg (same initial weights, same batches in the same order, same test batches)",
        "run by the engine (with a run folder: metrics rows and a checkpoint per round, as",
        "`fedmosaic run`) and as a bare PyTorch loop over tensors prepared once",
        "(`benchmarks/throughput.py`), one after the other in one process, one torch thread.",
        "Ratio = engine ÷ bare loop, per round, CPU seconds (wall in brackets);",
        f"target at most {TARGET}x.",
        "",
        "| task | rounds | engine train s/round | bare train s/round | train ratio "
        "| engine eval s/round | bare eval s/round | eval ratio | same numbers |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        e, b, a = r["engine"], r["bare"], r["agreement"]
        same = (
            "weights bit-identical after round 1"
            if a["weights_identical"]
            else f"max weight diff {a['weight_diff']:.2g}"
        ) + f"; max metric diff {a['metric_diff']:.2g}, train-loss diff {a['loss_diff']:.2g}"
        lines.append(
            f"| {r['label']} | {r['rounds']} | {e['train_cpu']:.3f} ({e['train_wall']:.3f}) | "
            f"{b['train_cpu']:.3f} ({b['train_wall']:.3f}) | "
            f"**{r['train_ratio']:.2f}x** ({r['train_ratio_wall']:.2f}x) | "
            f"{e['eval_cpu']:.3f} ({e['eval_wall']:.3f}) | {b['eval_cpu']:.3f} ({b['eval_wall']:.3f}) | "
            f"**{r['eval_ratio']:.2f}x** ({r['eval_ratio_wall']:.2f}x) | {same} |"
        )
    for r in results:
        if not r["profile"]:
            continue
        lines += [
            "",
            f"Where the engine's round goes, {r['label']} (cProfile, cumulative wall seconds per round,",
            "profiler overhead included; parts overlap: training contains data assembly",
            "and the torch steps):",
            "",
            "| part | s/round |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v:.3f} |" for k, v in r["profile"].items()]
        own = sum(v for k, v in r["profile"].items() if k.startswith(OWN_PARTS))
        lines += [
            "",
            f"The engine's own work (data assembly, state copies, screen + aggregate, I/O): "
            f"{100 * own / r['profile']['whole round']:.1f}% of the profiled round.",
        ]
    lines += [
        "",
        "A ratio below 1 in evaluation: the engine embeds each test batch once per modality for all",
        "modality subsets and takes both F1 averages from one scikit-learn call; the bare loop runs each",
        "subset through the whole model and calls scikit-learn three times. Below 1 in training: the",
        "bare loop steps `torch.optim.Adam` with its defaults (one tensor at a time on a CPU), the engine",
        "the same Adam on one flat copy of the parameters (`models/flat_optimizer.py`, the same weights",
        "bit for bit). Both build the model the same way (its max pools are `models/pooling.py`'s).",
        "CPU seconds are the figure",
        "to read on a shared machine; wall seconds (and the profile, which is in wall seconds) only",
        "on an idle one.",
        "",
        f"Measured with `{command}` (load before: {load}).",
    ]
    return "\n".join(lines)


def render(stored: _harness.Results) -> str:
    """The section from the stored results."""
    numbers = stored["runs"][0]["numbers"]
    return section(numbers["results"], stored["command"], numbers["load"])


def main() -> None:
    parser = _harness.parser(__doc__, seeds=None, rounds=5, loop=False)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    def measure() -> dict[str, Any]:
        load = f"1-minute load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
        if args.smoke:
            return {"results": [setting("synthetic (smoke)", SMOKE, 1, 1)], "load": load}
        results = [setting("default task (synthetic image+text)", [], args.rounds, 2)]
        with tempfile.TemporaryDirectory() as tmp:
            hapt = unpack_hapt(args.shared, Path(tmp))
            results.append(
                setting(
                    "uci-hapt (acc+gyro)", ["task.dataset=uci-hapt", f"task.data_dir={hapt}"], args.rounds, 2
                )
            )
        return {"results": results, "load": load}

    _harness.standalone(SECTION, "benchmarks/throughput.py", parser, args, measure, render, smoke_rounds=1)


if __name__ == "__main__":
    sys.exit(main())
