"""Data scenarios applied to the clients' training data after the split (docs/scenarios.md).

* ``task.label_missing_rate``: ``floor(rate * n)`` of each client's ``n`` training samples lose
  their label. They leave the client's training view: every algorithm here trains its clients on
  labelled samples only (no loss is ever computed on them), and none uses the unlabelled ones.
* ``task.label_noise_rate``: ``floor(rate * n_labelled)`` of each client's labelled training samples
  get a wrong label through a sparse, seeded confusion rule: each class has ``NOISE_TARGETS`` fixed
  wrong classes (drawn once per run from the seed), and a flipped sample of class ``c`` takes one of
  those, uniformly. The labels live in a copy of the label store that only client training views
  read: the test set, the server's sets and the clients' validation samples keep their true labels.
* ``clients.sample_drop_rate``: each training sample of a client holding several modalities loses
  each of them with that probability, independently; a sample that would lose all of them keeps
  one, drawn uniformly. Absent modalities are absent keys in the batches (``View.batches`` groups
  samples by mask pattern), never zero-filled; the expected share of modality-samples dropped is
  ``p - p**M / M`` for ``M`` held modalities (0.375 at ``p = 0.5``, ``M = 2``).

Exact counts (not Bernoulli draws) for the labels, so a rate is honoured to one sample per client.
Every draw comes from a generator keyed by (seed, client id, scenario), so one scenario's rate never
changes another's draws, and the same seed gives the same data whatever else changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fedmosaic.core.modality import ClientSpec
from fedmosaic.core.seeding import numpy_rng
from fedmosaic.core.task import ClientData, View

NOISE_TARGETS = 2  # wrong classes per true class in the confusion rule (fewer when there are fewer)


@dataclass(frozen=True)
class Scenario:
    """The three rates (each in [0, 1); 0 = off)."""

    label_missing_rate: float = 0.0
    label_noise_rate: float = 0.0
    sample_drop_rate: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.label_missing_rate or self.label_noise_rate or self.sample_drop_rate)


def confusion_targets(num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``(classes, k)``: the wrong classes each class may flip to, ``k = min(NOISE_TARGETS, classes - 1)``."""
    k = min(NOISE_TARGETS, num_classes - 1)
    rows = [rng.permutation(np.delete(np.arange(num_classes), c))[:k] for c in range(num_classes)]
    return np.array(rows, dtype=np.int64).reshape(num_classes, k)


def pick(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """A bool mask of exactly ``floor(rate * n)`` of ``n`` positions (always fewer than ``n``)."""
    chosen = np.zeros(n, dtype=bool)
    chosen[rng.choice(n, size=int(np.floor(rate * n)), replace=False)] = True
    return chosen


def flip_labels(
    labels: np.ndarray, chosen: np.ndarray, targets: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """``labels`` with each ``chosen`` one replaced by one of its class's ``targets``, uniformly."""
    out = labels.copy()
    rows = np.flatnonzero(chosen)
    if len(rows) and targets.shape[1]:
        out[rows] = targets[labels[rows], rng.integers(targets.shape[1], size=len(rows))]
    return out


def drop_modalities(mask: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """``mask`` with each True entry turned False with probability ``rate``; a row that would lose
    every modality keeps one of those it had, drawn uniformly."""
    drop = mask & (rng.random(mask.shape) < rate)
    out = mask & ~drop
    for row in np.flatnonzero(~out.any(axis=1) & mask.any(axis=1)):
        out[row, rng.choice(np.flatnonzero(mask[row]))] = True
    return out


def apply_scenarios(
    clients: list[ClientData], labels: np.ndarray, num_classes: int, scenario: Scenario, seed: int
) -> tuple[list[ClientData], dict[str, Any]]:
    """The clients with the scenario applied to their training views, and the effective counts.

    ``labels`` (the task's true labels) is never modified: noisy labels go into a copy that only the
    returned training views read.
    """
    client_labels = labels.copy()
    targets = confusion_targets(num_classes, numpy_rng(seed, 0, "task", "scenario-noise-rule"))
    counts = {"train_before": 0, "labels_dropped": 0, "labels_flipped": 0, "modality_samples": 0}
    counts["modality_samples_dropped"] = 0
    out = []
    for client in clients:
        cid, train = client.spec.id, client.train
        counts["train_before"] += len(train)
        if scenario.label_missing_rate:
            unlabelled = pick(
                len(train), scenario.label_missing_rate, numpy_rng(seed, 0, cid, "scenario-missing")
            )
            counts["labels_dropped"] += int(unlabelled.sum())
            train = train.subset(~unlabelled)
        if scenario.label_noise_rate:
            rng = numpy_rng(seed, 0, cid, "scenario-noise")
            chosen = pick(len(train), scenario.label_noise_rate, rng)
            noisy = flip_labels(labels[train.indices], chosen, targets, rng)
            counts["labels_flipped"] += int((noisy != labels[train.indices]).sum())
            client_labels[train.indices] = noisy
        mask = train.mask
        if len(client.spec.modalities) > 1:
            counts["modality_samples"] += int(mask.sum())
            if scenario.sample_drop_rate:
                rng = numpy_rng(seed, 0, cid, "scenario-sample-drop")
                mask = drop_modalities(train.mask, scenario.sample_drop_rate, rng)
                counts["modality_samples_dropped"] += int(train.mask.sum() - mask.sum())
        train = View(train.info, train.store, client_labels, train.indices, mask)
        spec = ClientSpec(cid, client.spec.modalities, len(train), client.spec.group)
        out.append(ClientData(spec, train, client.val, client.test))
    names = clients[0].train.info.class_names if clients else ()
    record: dict[str, Any] = {
        "label_missing_rate": scenario.label_missing_rate,
        "label_noise_rate": scenario.label_noise_rate,
        "sample_drop_rate": scenario.sample_drop_rate,
        **counts,
        "noise_rule": {names[c]: [names[t] for t in targets[c]] for c in range(len(names))}
        if scenario.label_noise_rate
        else {},
    }
    return out, record
