"""``engine.eval_clients``: a personalised algorithm evaluates a seeded sample of its clients."""

from __future__ import annotations

import pytest

from fedmosaic.config import ConfigError, with_overrides
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.federation import Federation


class Recorder:
    """A client wrapper noting which clients evaluate, round after round."""

    def __init__(self, inner, seen: list[str]) -> None:
        self.inner, self.seen = inner, seen

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def evaluate(self, message, state, data):
        self.seen.append(data.spec.id)
        return self.inner.evaluate(message, state, data)


def _evaluated(cfg, task, k: int | None, rounds: int = 2) -> tuple[list[str], list[dict]]:
    seen: list[str] = []
    fed = Federation(
        task,
        cfg.algorithm.name,
        rounds=rounds,
        eval_clients=k,
        training=cfg.training,
        model=cfg.model,
        client_wrappers=[lambda c: Recorder(c, seen)],
    )
    return seen, [r.row for r in fed.rounds()]


def test_local_evaluates_a_seeded_sample_of_clients(tiny_cfg) -> None:
    cfg = with_overrides(tiny_cfg, ["algorithm.name=local", "training.local_epochs=1"])
    task = build_task(cfg)
    everyone, _ = _evaluated(cfg, task, None, rounds=1)
    assert sorted(everyone) == sorted(c.spec.id for c in task.clients)  # today's behaviour by default
    sample, rows = _evaluated(cfg, task, 3)
    assert len(sample) == 6 and len(set(sample[:3])) == 3
    assert sample[:3] != sample[3:] or len(task.clients) == 3  # drawn per round
    again, rows_again = _evaluated(cfg, task, 3)
    assert again == sample and rows_again == rows  # same seed: same clients, same numbers
    assert "overall" in rows[-1]["eval"]


def test_eval_clients_is_checked_as_a_config_key(tiny_cfg) -> None:
    with pytest.raises(ConfigError, match=r"^engine\.eval_clients: "):
        with_overrides(tiny_cfg, ["engine.eval_clients=0"])
