"""Supervised training and evaluation loops shared by the weight-sharing algorithms."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from fedmosaic.core.device import model_device, to_device
from fedmosaic.core.metrics import classification_metrics
from fedmosaic.core.seeding import Rng
from fedmosaic.core.task import TaskInfo, View
from fedmosaic.models.flat_optimizer import FlatOptimizer
from fedmosaic.models.multimodal import MultimodalClassifier


def make_optimizer(params: list[nn.Parameter], cfg: Any) -> FlatOptimizer:
    """Adam or SGD from a TrainingConfig, on the multi-tensor (``foreach``) path, stepping one flat
    copy of the parameters (:mod:`fedmosaic.models.flat_optimizer`).

    PyTorch picks the one-tensor-at-a-time loop on a CPU unless asked; the multi-tensor path does the
    same arithmetic per element (bit-identical weights, ``tests/test_train.py``) with one kernel
    call per step instead of one per tensor; the flat copy then spares it the walk over the default
    model's 59 tensors. Not ``fused``: its arithmetic differs, and so would every published number.
    """
    if cfg.optimizer == "sgd":
        build = partial(
            torch.optim.SGD, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True
        )
    else:
        build = partial(torch.optim.Adam, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    return FlatOptimizer(params, build)


def train_epochs(
    model: nn.Module,
    view: View,
    cfg: Any,
    rng: Rng,
    epochs: int | None = None,
    proximal: tuple[float, dict[str, torch.Tensor]] | None = None,
    loss_fn: Callable[[nn.Module, dict[str, torch.Tensor], torch.Tensor], torch.Tensor] | None = None,
    before_step: Callable[[dict[str, nn.Parameter]], None] | None = None,
) -> float:
    """Cross-entropy training on ``view`` for ``epochs`` (default ``cfg.local_epochs``); mean loss.

    ``proximal = (mu, reference)`` adds FedProx's ``mu/2 * ||w - w_ref||^2`` over the named parameters.
    ``loss_fn(model, inputs, labels)`` replaces the batch's cross-entropy (MOON adds its contrastive
    term to it from the same forward pass). ``before_step(named_parameters)`` runs after each
    backward pass and before the optimiser step, so it may edit the gradients (SCAFFOLD adds its
    control-variate correction ``c - c_i``); it is called once per optimiser step.

    Batches (and the proximal reference) go to the model's device; the loss comes back a float.
    """
    device = model_device(model)
    if proximal is not None:
        proximal = (proximal[0], {n: to_device(ref, device) for n, ref in proximal[1].items()})
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg)
    named = dict(model.named_parameters())
    losses: list[torch.Tensor] = []
    model.train()
    with rng.seeded("dropout"):
        for epoch in range(epochs or cfg.local_epochs):
            order = rng.numpy(f"batches-{epoch}")
            for inputs, labels in view.batches(cfg.batch_size, order, drop_singletons=True):
                inputs, labels = to_device(inputs, device), to_device(labels, device)
                if loss_fn is None:
                    loss = nn.functional.cross_entropy(model(inputs), labels)
                else:
                    loss = loss_fn(model, inputs, labels)
                if proximal is not None:
                    mu, reference = proximal
                    loss = loss + 0.5 * mu * sum(
                        ((named[n] - ref) ** 2).sum() for n, ref in reference.items()
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if before_step is not None:
                    before_step(named)
                optimizer.step()
                # kept as tensors: reading a float here would wait for a GPU after every step
                losses.append(loss.detach())
    return float(np.mean([float(x) for x in losses])) if losses else float("nan")


EVAL_BATCH = 256  # samples per evaluation batch


@torch.no_grad()
def predict(model: nn.Module, view: View, batch_size: int = EVAL_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true, y_pred)`` over ``view`` in eval mode, on the model's device; numpy on the CPU."""
    model.eval()
    device = model_device(model)
    truth, preds = [], []
    for inputs, labels in view.batches(batch_size):
        preds.append(model(to_device(inputs, device)).argmax(1).cpu().numpy())
        truth.append(labels.numpy())
    return np.concatenate(truth), np.concatenate(preds)


def evaluate_subsets(
    model: nn.Module, test: View, info: TaskInfo, held: frozenset[str] | None = None
) -> dict[str, dict[str, float]]:
    """Metrics of ``model`` on ``test`` seen through every subset of ``held`` modalities.

    Keys are subset names (``"image"``, ``"text"``, ``"image+text"``). A
    :class:`~fedmosaic.models.multimodal.MultimodalClassifier` embeds each batch of each modality once
    for all subsets (the batches of the subsets hold the same samples when the test samples hold
    every modality): the same tensors through the same encoders, so the same logits, at about half
    the encoder passes for two modalities.
    """
    if type(model).forward is not MultimodalClassifier.forward:
        out = {}
        for subset in info.subsets(held):
            y_true, y_pred = predict(model, test.restrict(subset))
            out[info.group(subset)] = classification_metrics(y_true, y_pred, info.num_classes)
        return out
    return _evaluate_embedded(model, test, info, held)


@torch.no_grad()
def _evaluate_embedded(
    model: MultimodalClassifier, test: View, info: TaskInfo, held: frozenset[str] | None
) -> dict[str, dict[str, float]]:
    model.eval()
    device = model_device(model)
    cache: dict[tuple[str, bytes], torch.Tensor] = {}  # (modality, batch's store indices) -> embeddings
    out = {}
    for subset in info.subsets(held):
        view = test.restrict(subset)
        truth, preds = [], []
        for idx, present in view.batch_indices(EVAL_BATCH):
            key = idx.tobytes()
            embeddings = {}
            for m in present:
                if (m, key) not in cache:
                    cache[(m, key)] = model.encoders[m](to_device(view.inputs(idx, (m,))[m], device))
                embeddings[m] = cache[(m, key)]
            preds.append(model.classify(embeddings).argmax(1).cpu().numpy())
            truth.append(view.labels_store[idx].astype(np.int64))
        y_true, y_pred = np.concatenate(truth), np.concatenate(preds)
        out[info.group(subset)] = classification_metrics(y_true, y_pred, info.num_classes)
    return out
