"""Diagnose gvf: why does (or doesn't) it beat local training? Four measurements after a run.

1. Learning curve: each group's accuracy every ``--eval-every`` rounds, with the server's statistics
   (``delta_mean`` = mean over clients of L_val(received shared part) - L_val(fine-tuned one)).
2. One space? For each client and held modality: how often the nearest vector, among another complete
   client's proxy vectors of the same modality (and of the other modality), belongs to the same proxy
   sample (chance = 1 / n_proxy). Near chance = every client projects into a space of its own.
3. Class information: a logistic-regression probe (4-fold CV on the proxy set's labels) on a
   single-modality client's own proxy vectors, on [own, filled slot], and on the filled slot alone.
4. The global vectors at test time: each client's test accuracy with its bank and with the bank removed.

    python benchmarks/gvf_diagnose.py --set algorithm.alignment=true      # any gvf overrides
    python benchmarks/gvf_diagnose.py --smoke                              # tiny, < 1 min (a test)

Prints a report; writes nothing.
"""

from __future__ import annotations

import argparse
import copy
import warnings

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from fedmosaic.algorithms import gvf
from fedmosaic.config import load_config
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.federation import Federation
from fedmosaic.models.fusion import fill_from_bank
from fedmosaic.models.train import evaluate_subsets

SMOKE = [
    "rounds=2",
    "task.options.n_samples=300",
    "task.proxy_size=40",
    "task.labelled_size=20",
    "model.embed_dim=16",
    "model.text_hidden=16",
    "algorithm.dim=16",
]


def retrieval(a: np.ndarray, b: np.ndarray) -> float:
    """How often row i of ``a``'s nearest row of ``b`` (cosine) is row i."""
    sim = gvf.unit_rows(a) @ gvf.unit_rows(b).T
    return float((sim.argmax(1) == np.arange(len(a))).mean())


def probe(x: np.ndarray, y: np.ndarray) -> float:
    """Cross-validated accuracy of a logistic regression from ``x`` to ``y`` (4 folds)."""
    with warnings.catch_warnings():  # tiny (smoke) proxy sets have classes with fewer than 4 samples
        warnings.simplefilter("ignore", UserWarning)
        return float(cross_val_score(LogisticRegression(max_iter=2000), x, y, cv=4).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], help="a config override (repeatable)")
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic run (< 1 min)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = [
        "algorithm.name=gvf",
        "compare=[]",
        "engine.progress=false",
        "output.plots=false",
        f"engine.eval_every={args.eval_every}",
        *(SMOKE if args.smoke else []),
        *args.set,
    ]
    cfg = load_config(None, overrides)
    task = build_task(cfg)
    with Federation.from_config(cfg, task) as fed:  # in memory: the client states stay in this process
        print("1. learning curve (round: group accuracy | server statistics)")
        for result in fed.rounds():
            acc = {k[6:]: round(v["accuracy"], 3) for k, v in result.eval.items() if k[:6] == "group/"}
            stats = {k: round(v, 3) for k, v in result.train.items()}
            print(f"  {result.round}: {acc or ''} | {stats}", flush=True)
        report(fed, task)


def report(fed: Federation, task) -> None:
    """Sections 2-4 of the module docstring, from the clients' states after the run."""
    client, proxy = fed.client, fed.server.proxy
    names = proxy.info.modality_names
    models, vectors = {}, {}
    update = fed.server.configure_evaluate(fed.total_rounds, fed.specs)  # the run's update step
    for spec in fed.specs:
        state = fed.client_state(spec.id)
        # a copy: the client reuses one model object for every client it evaluates
        models[spec.id] = copy.deepcopy(client.evaluated_model(update[spec.id], state))
        inputs = gvf.ClientState.from_message(state).proxy
        for m in spec.modalities:
            vectors[spec.id, m] = client._vectors(models[spec.id], m, inputs[m])
    complete = [s.id for s in fed.specs if len(s.modalities) == len(names)]
    labels = proxy.labels
    print(f"2./3. one space? (retrieval, chance {1 / len(labels):.3f}) and class information (probe)")
    for spec in fed.specs:
        for m in sorted(spec.modalities):
            other = next(n for n in names if n != m)
            v = vectors[spec.id, m]
            peers = [c for c in complete if c != spec.id]
            same = np.mean([retrieval(v, vectors[c, m]) for c in peers])
            cross = np.mean([retrieval(v, vectors[c, other]) for c in peers])
            line = f"  {spec.id} {'+'.join(sorted(spec.modalities))} {m}: retrieval same {same:.3f} "
            line += f"cross {cross:.3f} | probe own {probe(v, labels):.3f}"
            model = models[spec.id]
            if len(spec.modalities) == 1 and len(model.bank(m)):
                fill = fill_from_bank(
                    torch.from_numpy(v), model.bank(m), model.bank(other), model.fill, model.fill_temperature
                ).numpy()
                line += f" own+fill {probe(np.hstack([v, fill]), labels):.3f} fill {probe(fill, labels):.3f}"
            print(line)
    print("4. test accuracy with the bank | without")
    for spec in fed.specs:
        model, test = models[spec.id], task.client(spec.id).test
        with torch.no_grad():
            full = evaluate_subsets(model, test, task.info, spec.modalities)
            bank = {m: model.bank(m) for m in model.order if len(model.bank(m))}
            model.set_bank({})
            bare = evaluate_subsets(model, test, task.info, spec.modalities)
            model.set_bank(bank)
        group = task.info.group(spec.modalities)
        print(f"  {spec.id} {group}: {full[group]['accuracy']:.3f} | {bare[group]['accuracy']:.3f}")


if __name__ == "__main__":
    main()
