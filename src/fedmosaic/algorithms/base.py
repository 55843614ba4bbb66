"""Plumbing shared by the weight-sharing algorithms: the global model and the client's model slot."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from fedmosaic.algorithms.robust import Aggregation
from fedmosaic.core.algorithm import Algorithm, Settings, Uploads
from fedmosaic.core.message import Message
from fedmosaic.core.metrics import global_model_groups
from fedmosaic.core.modality import ClientSpec
from fedmosaic.core.seeding import SERVER, torch_seed, torch_seeded
from fedmosaic.core.task import TaskInfo, View
from fedmosaic.core.validation import ReplySpec
from fedmosaic.models.build import build_classifier, encoder_problems
from fedmosaic.models.params import load_arrays, to_arrays
from fedmosaic.models.train import evaluate_subsets

# What a client's own evaluation reports: metrics per group of its modalities (core.metrics.flatten_eval).
SELF_EVALUATION = ("{g}/accuracy", "{g}/macro_f1", "{g}/weighted_f1")
# FedAvg's and FedProx's uploads: the weights of the held modalities' encoders, the head and the
# fusion block (``model.fusion = concat | attention``; ``mean`` has no parameters).
WEIGHT_UPLOADS = Uploads(
    fit_arrays=("encoders.{m}.*", "fusion.*", "head.*"), fit_meta=("n_train", "train_loss")
)


class EncoderAlgorithm(Algorithm):
    """An algorithm whose model has one :func:`~fedmosaic.models.build.build_encoder` encoder per
    modality (FedAvg, FedProx, local, centralized, FedCMI, GVF): it declares that every modality must
    have one, so a data set of an unknown kind or shape is refused before any work."""

    @classmethod
    def check_task(cls, info: TaskInfo) -> list[str]:
        return encoder_problems(cls.name, info)


def initial_model(settings: Settings) -> nn.Module:
    """The run's initial classifier: the same weights for every party, from ``(seed, 0, server, init)``.

    Built on the CPU from the CPU generator and then moved to ``settings.device``, so a GPU run
    starts from exactly the weights of a CPU run.
    """
    with torch_seeded(torch_seed(settings.seed, 0, SERVER, "init")):
        return build_classifier(settings.info, settings.model).to(settings.device)


class ModelSlot:
    """A client half's reusable model: built once per process, reset to the initial weights on demand.

    Building encoders (BERT in particular) costs more than a local epoch on small data, so a client
    half keeps one skeleton and loads whichever weights a call needs. Nothing in it survives a
    call as *state*: every call overwrites the parts it uses. Every client of a process shares the
    slot, so device memory holds one model whatever the number of clients.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._model: nn.Module | None = None
        self._initial: dict[str, np.ndarray] = {}

    def fresh(self) -> nn.Module:
        """The model with the run's initial weights."""
        model = self.model
        load_arrays(model, self._initial)
        return model

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            self._model = initial_model(self.settings)
            self._initial = to_arrays(self._model)
        return self._model


class GlobalModelServer:
    """Server half holding one global classifier: evaluation on the test set and checkpoint state."""

    def __init__(self, settings: Settings, test: View, model: nn.Module | None = None) -> None:
        self.settings = settings
        self.test = test
        self.model = initial_model(settings) if model is None else model

    def configure_evaluate(self, round: int, clients: list[ClientSpec]) -> dict[str, Message]:
        return {}  # one global model: the server evaluates it on its own test set

    def evaluate(
        self, round: int, clients: list[ClientSpec], replies: dict[str, Message]
    ) -> dict[str, dict[str, float]]:
        subsets = {
            f"test/{k}": v for k, v in evaluate_subsets(self.model, self.test, self.settings.info).items()
        }  # on the model's device (settings.device)
        return {**subsets, **global_model_groups(subsets, clients)}

    def reply_spec(self, round: int, client_id: str, sent: Message) -> ReplySpec:
        """The weights that were sent, back with the same names, shapes and dtypes."""
        return ReplySpec.echo(sent)

    def state(self) -> Message:
        return Message(to_arrays(self.model))

    def load_state(self, state: Message) -> None:
        load_arrays(self.model, state.arrays)


def weighted_train_loss(replies: dict[str, Message]) -> dict[str, float]:
    """The clients' training losses (``meta["train_loss"]``) averaged, weighted by ``meta["n_train"]``."""
    total = sum(float(r.meta["n_train"]) for r in replies.values())
    loss = sum(float(r.meta["train_loss"]) * float(r.meta["n_train"]) for r in replies.values())
    return {"train_loss": loss / total} if total else {}


def sample_count(reply: Message) -> float:
    """A reply's aggregation weight under FedAvg: the client's training-sample count."""
    return float(reply.meta["n_train"])


def weighted_average(
    replies: dict[str, Message],
    weight: Callable[[Message], float] = sample_count,
    rule: Aggregation | None = None,
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    """Each named array averaged over the replies that carry it, reply r weighted by ``weight(r)``.

    Averaging by name (not over all replies) is what makes a modality's parts average over the
    clients holding that modality; a part no reply carries is absent, so it keeps its global value.
    Sums run in float64; ``load_arrays`` casts back to each parameter's dtype. ``rule`` (default:
    this mean) swaps in a robust rule per name (:mod:`fedmosaic.algorithms.robust`). On a CUDA
    ``device`` the mean runs there (:func:`device_weighted_mean`); the robust rules, and the mean
    on cpu and mps (no float64 on Apple GPUs), run in numpy.
    """
    if (rule is None or rule.is_mean) and torch.device(device).type == "cuda":
        return device_weighted_mean(replies, weight, device)
    if rule is not None and not rule.is_mean:
        by_name: dict[str, list[np.ndarray]] = defaultdict(list)
        for reply in replies.values():
            for name, value in reply.arrays.items():
                by_name[name].append(value)
        return {name: rule.combine(values) for name, values in by_name.items()}
    sums: dict[str, np.ndarray] = {}
    weights: dict[str, float] = defaultdict(float)
    for reply in replies.values():
        w = weight(reply)
        for name, value in reply.arrays.items():
            sums[name] = sums.get(name, 0.0) + w * value.astype(np.float64)
            weights[name] += w
    return {name: total / weights[name] for name, total in sums.items()}


def device_weighted_mean(
    replies: dict[str, Message], weight: Callable[[Message], float], device: str
) -> dict[str, np.ndarray]:
    """:func:`weighted_average`'s mean computed with torch on ``device``, returned as CPU numpy.

    The same float64 operations in the same order as the numpy mean (each product, sum and the
    final division rounded once), so it gives the same bytes; tests check that on the CPU.
    """
    sums: dict[str, torch.Tensor | float] = {}
    weights: dict[str, float] = defaultdict(float)
    for reply in replies.values():
        w = weight(reply)
        for name, value in reply.arrays.items():
            term = w * torch.from_numpy(np.asarray(value)).to(device, torch.float64)
            # 0.0 + the first term, as numpy does (it turns a -0.0 into 0.0: the same bytes)
            sums[name] = sums.get(name, 0.0) + term
            weights[name] += w
    return {name: (total / weights[name]).cpu().numpy() for name, total in sums.items()}
