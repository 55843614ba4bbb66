"""Diagnosis (issue 18, item 4): how far does each algorithm's *global* encoder move per round?

Runs the FedMEKT benchmark's HAPT task (``fedmekt.hapt_overrides``) for a few rounds, one seed, and
after every round records the global encoders' relative weight change, ``||w_r - w_{r-1}|| /
||w_{r-1}||``, and the total one, ``||w_r - w_0|| / ||w_0||``, together with the server's loss terms
(FedMEKT's ``server_recon`` and ``server_kd``) and its optimiser steps per round. The last round is
scored by the linear probe beside the untrained-encoder and raw-statistics controls. Printed only.

    python benchmarks/fedmekt_drift.py --rounds 5
    python benchmarks/fedmekt_drift.py --rounds 5 --runs "FedMEKT-C" "FedMEKT-C, eta=gamma=0"
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from _harness import SHARED, cpu_seconds, unpack_hapt
from fedmekt import ALGORITHMS, hapt_overrides
from fedmosaic.config import load_config
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.federation import Federation

RUNS = {
    "FedMEKT-C": ALGORITHMS["FedMEKT-C"],
    "FedMEKT-C, eta=gamma=0": [*ALGORITHMS["FedMEKT-C"], "algorithm.eta=0", "algorithm.gamma=0"],
    "FedMEKT-C, server_epochs=40": [*ALGORITHMS["FedMEKT-C"], "algorithm.server_epochs=40"],
    "mmFedAvg": ALGORITHMS["mmFedAvg"],
}


def encoder_vector(state: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([v.ravel() for k, v in sorted(state.items()) if k.startswith("encoders.")])


def drift(label: str, data_dir: Path, seed: int, rounds: int, folder: Path) -> dict:
    cfg = load_config(
        None, [*hapt_overrides(data_dir, seed, rounds), *RUNS[label], f"engine.eval_every={rounds}"]
    )
    task = build_task(cfg)
    cpu, wall = cpu_seconds(), time.perf_counter()
    fed = Federation.from_config(cfg, task, folder=folder)
    w0 = prev = encoder_vector(fed.server.state().arrays)
    per_round = []
    for result in fed.rounds():
        w = encoder_vector(fed.server.state().arrays)
        step = float(np.linalg.norm(w - prev) / np.linalg.norm(prev))
        total = float(np.linalg.norm(w - w0) / np.linalg.norm(w0))
        train = {k: result.train[k] for k in ("server_recon", "server_kd", "train_loss") if k in result.train}
        per_round.append({"round": result.round, "step": step, "total": total, **train})
        shown = ", ".join(f"{k} {v:.3g}" for k, v in per_round[-1].items())
        print(f"{label}: {shown}", flush=True)
        prev = w
        last = result.eval
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    scores = {
        key: {s: last[f"{key}/{s}"]["weighted_f1"] for s in ("acc", "gyro")}
        for key in ("test", "control/untrained", "control/raw_stats")
    }
    print(f"{label}: weighted-F1 {scores}; {cpu:.1f} CPU s, {wall:.1f} wall s", flush=True)
    return {"rounds": per_round, "scores": scores, "cpu": cpu, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--shared", type=Path, default=SHARED)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = unpack_hapt(args.shared, Path(tmp))
        for label in args.runs:
            drift(label, data_dir, args.seed, args.rounds, Path(tmp) / label.replace(" ", "_"))


if __name__ == "__main__":
    main()
