"""What FedMEKT and the mmFedAvg/mmFedProx baselines share: their config fields, the split LSTM
autoencoder built from the task, a local reconstruction-training loop, and a server half that scores
its global encoder by linear evaluation.

All three are semi-supervised: clients train autoencoders on *unlabelled* windows; only the server's
labelled data ever meets a label (through a fresh linear classifier on the frozen global encoder).

Two evaluation protocols (``algorithm.eval_protocol``):

- ``"reference"`` (default): the reference code's (``models/step_probe.py``): the encoder runs over
  continuous streams, a classifier labels every time step from its representation, trained on the
  server's labelled share of the recordings; the test stream is scored in 2,000-step windows by
  weighted-F1. A data set without continuous recordings (synthetic tasks, window-only loaders) gets
  its labelled and test windows laid end to end as the streams (a warning says so).
- ``"windows"``: one representation per window (the last step's), a probe on the labelled windows,
  scored per test window (``models/linear_probe.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from fedmosaic.core.algorithm import Algorithm, AlgorithmConfig, ServerData, Settings
from fedmosaic.core.device import to_device
from fedmosaic.core.message import Message
from fedmosaic.core.metrics import global_model_groups
from fedmosaic.core.modality import ClientSpec
from fedmosaic.core.seeding import SERVER, Rng, torch_seed, torch_seeded
from fedmosaic.core.stream import ServerStreams
from fedmosaic.core.task import TaskInfo, View
from fedmosaic.data.streams import stream_from_windows
from fedmosaic.models.autoencoder import SplitAutoencoder
from fedmosaic.models.linear_probe import PROBE_KEYS, linear_evaluation, unconverged, window_statistics
from fedmosaic.models.params import load_arrays, to_arrays
from fedmosaic.models.step_probe import SeqFeaturizer, local_statistics, step_evaluation

log = logging.getLogger(__name__)


class AutoencoderConfig(AlgorithmConfig):
    """Fields every autoencoder-based algorithm has (defaults: the FedMEKT reference code's)."""

    rep_size: int = Field(
        4, ge=1, description="top encoder layer width (4 for mHealth-like data, 10 for Opportunity)"
    )
    lr_local: float = Field(0.004, gt=0, description="clients' Adam learning rate")
    probe_tol: float = Field(
        1e-6, gt=0, le=1e-2, description="gradient tolerance of the L-BFGS logistic-regression probe"
    )
    probe_max_iter: int = Field(
        5000, ge=1, le=1_000_000, description="at most this many L-BFGS iterations of the probe"
    )
    probe_c: float = Field(1.0, gt=0, description="inverse L2 strength of the probe (standardised features)")
    eval_protocol: Literal["reference", "windows"] = Field(
        "reference",
        description="reference = per-step classifier over continuous streams, test scored in 2,000-step "
        "windows by weighted-F1 (the reference code's); windows = one probe per window (last step)",
    )
    probe_stride: int = Field(
        10,
        ge=1,
        le=10_000,
        description="reference protocol: fit the per-step classifier on every n-th labelled step "
        "(0.2 s apart at 50 Hz by default)",
    )
    eval_controls: bool = Field(
        True,
        description="also score the untrained (round-0) encoder and raw statistics (per window, or per "
        "step over the trailing 128 steps) with the same classifier and labels "
        "(eval keys control/untrained/<subset>, control/raw_stats/<subset>)",
    )
    reverse_target: bool = Field(
        True, description="reconstruct the window time-reversed (the reference's choice)"
    )


def sensor_window_problems(algorithm: str, info: TaskInfo) -> list[str]:
    """The split LSTM autoencoder reads every modality as a ``(channels, time)`` sensor window: one
    line naming each modality that is not (``check_task`` of the autoencoder family)."""
    wrong = [
        f"modality {m.name!r} is {m.kind} of shape {m.shape}"
        for m in info.modalities
        if m.kind not in ("timeseries", "audio") or len(m.shape) != 2
    ]
    return [f"{algorithm} needs (channels, time) sensor windows; {', '.join(wrong)}"] if wrong else []


class AutoencoderAlgorithm(Algorithm):
    """Base of FedMEKT, mmFedAvg and mmFedProx: declares the sensor-window requirement."""

    @classmethod
    def check_task(cls, info: TaskInfo) -> list[str]:
        return sensor_window_problems(cls.name, info)


def channels_of(settings: Settings) -> dict[str, int]:
    """Channels per modality; every modality must be a ``(channels, time)`` sensor window."""
    problems = sensor_window_problems(settings.algorithm.name, settings.info)
    if problems:  # engines check first (Algorithm.check_task); this guards a hand-built Settings
        raise ValueError(f"algorithm.name: {problems[0]}")
    return {m.name: m.shape[0] for m in settings.info.modalities}


def build_autoencoder(settings: Settings[AutoencoderConfig]) -> SplitAutoencoder:
    """The run's initial autoencoder: the same weights at every party, from ``(seed, 0, server, init)``."""
    cfg = settings.algorithm
    with torch_seeded(torch_seed(settings.seed, 0, SERVER, "init")):
        return SplitAutoencoder(channels_of(settings), cfg.rep_size).to(settings.device)


def prefixes(modalities: frozenset[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Parameter-name prefixes of the encoders and decoders of ``modalities``."""
    return tuple(f"{part}.{m}." for m in sorted(modalities) for part in ("encoders", "decoders"))


def trainable(model: SplitAutoencoder, held: frozenset[str]) -> list[torch.nn.Parameter]:
    """The parameters a party holding ``held`` trains: its modalities' encoders and decoders only."""
    keep = prefixes(held)
    return [p for n, p in model.named_parameters() if n.startswith(keep)]


# (batch of windows by modality, step number) -> the loss of that step (reconstruction + KD, ...)
LossFn = Callable[[dict[str, torch.Tensor], int], torch.Tensor]


def train_reconstruction(
    model: SplitAutoencoder,
    view: View,
    held: frozenset[str],
    settings: Settings[AutoencoderConfig],
    rng: Rng,
    loss_fn: LossFn | None = None,
) -> float:
    """``training.local_epochs`` epochs of batched training; mean loss.

    The loss of a batch is ``loss_fn(inputs, step)``, by default the cross-modal reconstruction.

    One optimiser step per batch of ``training.batch_size`` whole windows (the reference took one
    step per 16-32-sample slice of a long sequence, in float64). A fresh Adam each round: optimiser
    moments are not part of the persisted state, which keeps checkpoints small and resumes exact.
    """
    cfg = settings.algorithm
    # fused: one kernel per step for all parameters instead of a Python loop over ~20 small tensors
    optimizer = torch.optim.Adam(trainable(model, held), lr=cfg.lr_local, fused=True)
    model.train()
    losses: list[float] = []
    step = 0
    for epoch in range(settings.training.local_epochs):
        order = rng.numpy(f"batches-{epoch}")
        for inputs, _ in view.batches(settings.training.batch_size, order):
            inputs = to_device(inputs, settings.device)
            if loss_fn is None:
                loss = model.reconstruction_loss(inputs, cfg.reverse_target)
            else:
                loss = loss_fn(inputs, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            step += 1
    return float(np.mean(losses)) if losses else float("nan")


class LinearEvalServer:
    """Server half holding a global autoencoder, scored by linear evaluation of its frozen encoders."""

    def __init__(self, settings: Settings[AutoencoderConfig], data: ServerData) -> None:
        self.settings = settings
        self.data = data
        self.model = build_autoencoder(settings)
        self._controls: dict[str, dict[str, float]] | None = None
        self._streams: ServerStreams | None = None

    @property
    def streams(self) -> ServerStreams:
        """The reference protocol's streams: the data set's recordings, or the windows end to end."""
        if self._streams is None:
            if self.data.streams is not None:
                self._streams = self.data.streams
            else:
                log.warning(
                    "algorithm.eval_protocol = 'reference': the data set has no continuous recordings; "
                    "the server's labelled and test windows, laid end to end, stand in for them"
                )
                labelled, test = stream_from_windows(self.data.labelled), stream_from_windows(self.data.test)
                self._streams = ServerStreams(labelled, test, "windows")
        return self._streams

    def configure_evaluate(self, round: int, clients: list[ClientSpec]) -> dict[str, Message]:
        return {}  # one global encoder: the server evaluates it on its own labelled and test sets

    def _probe(self, model: SplitAutoencoder | None) -> dict[str, dict[str, float]]:
        """The protocol's metrics by subset for ``model``'s frozen encoders (None: raw statistics)."""
        cfg = self.settings.algorithm
        if cfg.eval_protocol == "reference":
            streams = self.streams
            per_step: SeqFeaturizer = local_statistics
            if model is not None:

                def per_step(x: torch.Tensor, modality: str) -> torch.Tensor:
                    return model.encode(to_device(x, self.settings.device), modality)[0]

            return step_evaluation(
                per_step,
                streams.labelled,
                streams.test,
                self.settings.info,
                cfg.probe_tol,
                cfg.probe_max_iter,
                cfg.probe_c,
                cfg.probe_stride,
            )
        featurize: Callable[[torch.Tensor, str], torch.Tensor] = window_statistics
        if model is not None:

            @torch.no_grad()
            def featurize(x: torch.Tensor, modality: str) -> torch.Tensor:
                return model.represent(to_device(x, self.settings.device), modality)

        return linear_evaluation(
            featurize,
            self.data.labelled,
            self.data.test,
            self.settings.info,
            tol=cfg.probe_tol,
            max_iter=cfg.probe_max_iter,
            c=cfg.probe_c,
        )

    def controls(self) -> dict[str, dict[str, float]]:
        """The same probe and labels on features that involve no federated learning.

        ``control/untrained/<subset>``: the run's initial encoder (the round-0 weights every party
        starts from); ``control/raw_stats/<subset>``: mean, std, min and max per channel (of the
        window, or per step of the trailing 128 steps plus the step's own values). Neither
        depends on the round, so they are computed once per server object and repeated in every
        evaluated row (a reloaded server recomputes the same numbers: the probe has no seed).
        """
        if self._controls is None:
            initial = build_autoencoder(self.settings).eval()
            self._controls = {
                **{f"control/untrained/{k}": v for k, v in self._probe(initial).items()},
                **{f"control/raw_stats/{k}": v for k, v in self._probe(None).items()},
            }
        return self._controls

    def evaluate(
        self, round: int, clients: list[ClientSpec], replies: dict[str, Message]
    ) -> dict[str, dict[str, float]]:
        self.model.eval()
        subsets = {f"test/{k}": v for k, v in self._probe(self.model).items()}
        # group/* and overall are means over clients of their group's metrics, not of probe records
        metrics_only = {k: {m: x for m, x in v.items() if m not in PROBE_KEYS} for k, v in subsets.items()}
        out = {**subsets, **global_model_groups(metrics_only, clients)}
        if self.settings.algorithm.eval_controls:
            out.update(self.controls())
        missed = unconverged(out)
        if missed:
            cfg = self.settings.algorithm
            log.warning(
                "round %d: the classifier did not reach algorithm.probe_tol=%g within "
                "algorithm.probe_max_iter=%d iterations for %s; its scores understate the features",
                round,
                cfg.probe_tol,
                cfg.probe_max_iter,
                ", ".join(missed),
            )
        return out

    def model_state(self) -> dict[str, np.ndarray]:
        """The global autoencoder's arrays, for checkpoints."""
        return to_arrays(self.model)

    def state(self) -> Message:
        return Message(self.model_state())

    def load_state(self, state: Message) -> None:
        load_arrays(
            self.model, {k: v for k, v in state.arrays.items() if k.startswith(("encoders.", "decoders."))}
        )
