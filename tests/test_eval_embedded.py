"""Evaluation through every modality subset embeds each test batch once per modality, same numbers."""

from __future__ import annotations

import torch

from fedmosaic.algorithms.base import initial_model
from fedmosaic.core.algorithm import Settings
from fedmosaic.core.metrics import classification_metrics
from fedmosaic.data.tasks import build_task
from fedmosaic.models.train import evaluate_subsets, predict


def test_subsets_share_encoder_passes_and_give_the_plain_forward_numbers(tiny_cfg) -> None:
    task = build_task(tiny_cfg)
    info = task.info
    settings = Settings(info, tiny_cfg.algorithm, tiny_cfg.training, tiny_cfg.model, 0, 1, 1)
    model = initial_model(settings)
    with torch.no_grad():  # weights off their initial values, so that the classes predicted differ
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    calls = {m: 0 for m in info.modality_names}
    for m in info.modality_names:
        model.encoders[m].register_forward_hook(lambda *_, m=m: calls.__setitem__(m, calls[m] + 1))
    got = evaluate_subsets(model, task.test, info)
    batches = len(list(task.test.batch_indices(256)))
    assert calls == {m: batches for m in info.modality_names}  # not once per subset holding it
    for subset in info.subsets():
        y_true, y_pred = predict(model, task.test.restrict(subset))
        assert got[info.group(subset)] == classification_metrics(y_true, y_pred, info.num_classes)
