"""FedCMI: balanced multimodal FL by cross-modal infiltration (Fan et al., arXiv 2401.00894).

In joint training the stronger modality dominates and the weaker one stays under-trained; in FL this
compounds across clients. FedCMI gives each modality m, besides its encoder, a **self projector**
``s_m`` (its own knowledge) and an **infiltration projector** ``i_m`` (knowledge infiltrated from
the other modality); a per-modality head ``h_m = H_m([s_m, i_m])`` and a fused head
``f = F([s_1, s_2])`` (see :mod:`fedmosaic.models.cmi`). Only model weights cross the wire.

Client, for a batch holding both modalities (labels ``y``, batch size B):

* **Dominant modality** ``d``: the modality whose head has the larger summed true-class probability
  ``sum_i softmax(h_m)_i[y_i]`` under the current local model; the other one is the weak ``w``.
  Ties go to the second modality (the authors' ``ratio > 1`` test).
* **Infiltration loss** (after ``warmup_rounds`` rounds): the weak modality's head fed with its
  infiltration projection (its self projection detached, so only the infiltration path and the head
  learn from it) is distilled from the *frozen global model's* head of the dominant modality,
  with a per-sample temperature ``T_{y_i}``::

      L_inf = 1/B sum_i -sum_c softmax(h^G_d(x_i) / T_{y_i})_c * log softmax(H_w([sg(s_w), i_w]) / T_{y_i})_c

  where ``h^G`` is the model the client received this round, kept frozen (eval mode, no gradients).
* **Class-wise temperature**, computed once before local training with the received model on the
  client's samples that hold both modalities: ``p_m(c)`` is the mean true-class probability of
  head m over the samples of class c, ``r(c) = p_1(c) / p_2(c)`` and ``r_bar`` its mean over the
  classes present. Oriented so the client's dominant modality is the numerator (if ``r_bar < 1``,
  ``r(c) = p_2(c)/p_1(c)`` and the threshold is ``1/r_bar``, as in the authors' code)::

      T_c = 1 / (1 + k log(r(c) / r_bar))   if r(c) > r_bar,   else T_c = 1       (k = 2)

  Classes the modality dominates more than usual get a sharper (T < 1) distillation target.
  Without class-wise temperatures every ``T_c`` is ``temperature`` (default 1).
* **Local loss** = ``CE(f) + 2 CE(h_1) + 2 CE(h_2) + lambda * L_inf``; a batch holding one modality
  (a single-modality client) trains ``CE(h_m)``. Optional FedProx term ``mu/2 ||w - w_global||^2``.

Server: FedAvg per component weighted by training-set size: each modality's encoder, projectors and
head over the sampled clients that hold that modality, the fused head over those holding both.

Defaults taken from the authors' public code (``client/FedCMI.py``, ``config/utils.py`` of their
FedCMI release): ``MI_alpha = 1.0`` (lambda), ``warmup_epoch = 1`` (warm-up rounds), ``coef1 = 2.0``
(self-head weight), ``coef3 = 2.0`` (temperature coefficient k), ``temp = 1.0`` (fixed temperature),
linear projectors (``branch_type = linear``), concat fusion, FedProx off (their ``mu = 1.0`` applies
only with ``--prox``). Their optimiser is SGD, lr 1e-3, momentum 0.9, weight decay 1e-4; here the
optimiser lives in the run's ``training`` block (``--set training.optimizer=sgd training.lr=0.001
training.weight_decay=0.0001`` reproduces it), so every algorithm of an experiment trains alike.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from pydantic import ConfigDict, Field
from torch.nn import functional as F

from fedmosaic.algorithms.base import EncoderAlgorithm, GlobalModelServer, weighted_average
from fedmosaic.algorithms.registry import register
from fedmosaic.algorithms.robust import aggregation_of
from fedmosaic.core.algorithm import AlgorithmConfig, ServerData, Settings, Uploads, sample_clients
from fedmosaic.core.device import model_device, to_device
from fedmosaic.core.message import Message
from fedmosaic.core.modality import ClientSpec
from fedmosaic.core.seeding import SERVER, Rng, torch_seed, torch_seeded
from fedmosaic.core.task import ClientData, View
from fedmosaic.core.validation import ReplySpec
from fedmosaic.models.cmi import CMIClassifier, build_cmi_classifier, part_prefixes
from fedmosaic.models.params import load_arrays, to_arrays
from fedmosaic.models.train import make_optimizer


class FedCMIConfig(AlgorithmConfig):
    """FedCMI's own hyperparameters (``[algorithm]`` with ``name = "fedcmi"``)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )
    name: str = "fedcmi"
    lambda_: float = Field(1.0, ge=0, alias="lambda", description="weight of the infiltration loss")
    warmup_rounds: int = Field(1, ge=0, description="rounds before the infiltration loss starts")
    class_temperature: bool = Field(True, description="class-wise temperature adaptation (off: ablation)")
    temperature_coef: float = Field(2.0, gt=0, description="k in T_c = 1 / (1 + k log(r_c / r_bar))")
    temperature: float = Field(1.0, gt=0, description="the fixed temperature when class_temperature is off")
    infiltration: bool = Field(
        True, description="infiltration projectors and loss (off: self projectors only, ablation)"
    )
    self_weight: float = Field(2.0, ge=0, description="weight of each per-modality head's cross-entropy")
    mu: float = Field(0.0, ge=0, description="FedProx proximal weight (0 = off)")


# ---------------------------------------------------------------------------------------------
# The method's pieces, as plain functions (each is tested on its own)


def true_class_scores(logits: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, float]:
    """Per modality, the summed softmax probability of the true class over the batch."""
    return {
        m: float(F.softmax(x.detach(), dim=1).gather(1, labels[:, None]).sum()) for m, x in logits.items()
    }


def dominant_modality(logits: dict[str, torch.Tensor], labels: torch.Tensor, order: tuple[str, str]) -> str:
    """The batch's dominant modality: the head with the larger summed true-class probability.

    ``order`` is the task's modality order; a tie goes to the second (the authors test ``ratio > 1``).
    """
    scores = true_class_scores(logits, labels)
    return order[0] if scores[order[0]] > scores[order[1]] else order[1]


def class_temperatures(p1: np.ndarray, p2: np.ndarray, coef: float = 2.0, eps: float = 1e-8) -> np.ndarray:
    """Class-wise temperatures from each head's mean true-class probability per class.

    ``p1[c]``, ``p2[c]``: mean true-class probability of modality 1's / 2's head over the samples of
    class c (NaN for a class without samples: its temperature is 1). See the module docstring.
    """
    p1, p2 = np.asarray(p1, dtype=np.float64), np.asarray(p2, dtype=np.float64)
    temps = np.ones(len(p1))
    present = ~(np.isnan(p1) | np.isnan(p2))
    if not present.any():
        return temps
    # eps keeps a class no head gets right from dividing by zero (the authors skip p_2 = 0 classes)
    ratio = np.maximum(p1[present], eps) / np.maximum(p2[present], eps)
    r_bar = float(ratio.mean())
    if r_bar < 1:  # modality 2 dominates this client: orient the ratio towards it (authors' code)
        ratio, r_bar = 1.0 / ratio, 1.0 / r_bar
    above = ratio > r_bar
    t = np.ones(len(ratio))
    t[above] = 1.0 / (1.0 + coef * np.log(ratio[above] / r_bar))
    temps[present] = t
    return temps


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor, temps: torch.Tensor) -> torch.Tensor:
    """``mean_i -sum_c softmax(teacher_i / T_i)_c log softmax(student_i / T_i)_c`` (teacher not trained)."""
    t = temps[:, None]
    target = F.softmax(teacher.detach() / t, dim=1)
    return -(target * F.log_softmax(student / t, dim=1)).sum(1).mean()


@torch.no_grad()
def mean_true_class_probs(model: CMIClassifier, view: View, num_classes: int) -> dict[str, np.ndarray]:
    """Per modality, each class's mean true-class probability of its head over ``view``'s complete samples.

    Classes without complete samples get NaN. Eval mode: this is a measurement, not a training step.
    """
    model.eval()
    sums = {m: np.zeros(num_classes) for m in model.names}
    counts = np.zeros(num_classes)
    complete = view.subset(np.flatnonzero(view.mask.all(axis=1)))
    device = model_device(model)
    for inputs, labels in complete.batches(256):
        out = model.outputs(to_device(inputs, device))
        y = labels.numpy()
        counts += np.bincount(y, minlength=num_classes)
        on_device = to_device(labels, device)
        for m in model.names:
            p = F.softmax(out.heads[m], dim=1).gather(1, on_device[:, None]).squeeze(1).cpu().numpy()
            sums[m] += np.bincount(y, weights=p, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {m: np.where(counts > 0, sums[m] / counts, np.nan) for m in model.names}


def initial_cmi_model(settings: Settings[FedCMIConfig]) -> CMIClassifier:
    """The run's initial FedCMI model, the same for every party: seeded from ``(seed, 0, server, init)``."""
    with torch_seeded(torch_seed(settings.seed, 0, SERVER, "init")):
        # built on the CPU generator, then moved: the same initial weights on every device
        return build_cmi_classifier(settings.info, settings.model, settings.algorithm.infiltration).to(
            settings.device
        )


# ---------------------------------------------------------------------------------------------
# The two halves


class FedCMIClient:
    """Load the global parts for my modalities, train with the FedCMI loss, send the same parts back."""

    def __init__(self, settings: Settings[FedCMIConfig]) -> None:
        self.settings = settings
        self.cfg = settings.algorithm
        self._model: CMIClassifier | None = None
        self._teacher: CMIClassifier | None = None

    @property
    def model(self) -> CMIClassifier:
        """The local model skeleton (built once; every call overwrites the parts it uses)."""
        if self._model is None:
            self._model = initial_cmi_model(self.settings)
        return self._model

    @property
    def teacher(self) -> CMIClassifier:
        """The frozen copy of the received global model: the infiltration loss's teacher."""
        if self._teacher is None:
            self._teacher = initial_cmi_model(self.settings)
            self._teacher.requires_grad_(False)
        return self._teacher

    def temperatures(self, model: CMIClassifier, view: View) -> torch.Tensor:
        """Per-class temperatures for this round (before any local step, so from the global model)."""
        num_classes = self.settings.info.num_classes
        if not self.cfg.class_temperature:
            return torch.full((num_classes,), self.cfg.temperature, device=self.settings.device)
        probs = mean_true_class_probs(model, view, num_classes)
        m1, m2 = model.names
        temps = class_temperatures(probs[m1], probs[m2], self.cfg.temperature_coef)
        return torch.from_numpy(temps).float().to(self.settings.device)

    def fit(self, message: Message, state: Message, data: ClientData, rng: Rng) -> tuple[Message, Message]:
        cfg, training = self.cfg, self.settings.training
        model = self.model
        load_arrays(model, message.arrays)
        held = data.spec.modalities
        complete = all(m in held for m in model.names)
        infiltrate = cfg.infiltration and complete and rng.round > cfg.warmup_rounds
        temps = None
        if infiltrate:
            load_arrays(self.teacher, message.arrays)
            self.teacher.eval()  # frozen: batch-norm statistics and dropout as at inference
            temps = self.temperatures(model, data.train)
        prefixes = part_prefixes(model, held)
        named = {n: p for n, p in model.named_parameters() if n.startswith(prefixes)}
        optimizer = make_optimizer(list(named.values()), training)
        reference = (
            {n: to_device(torch.from_numpy(message.arrays[n].copy()), self.settings.device) for n in named}
            if cfg.mu > 0
            else {}
        )

        losses: list[float] = []
        inf_losses: list[float] = []
        dominant: dict[str, int] = defaultdict(int)
        model.train()
        with rng.seeded("dropout"):
            for epoch in range(training.local_epochs):
                order = rng.numpy(f"batches-{epoch}")
                for inputs, labels in data.train.batches(training.batch_size, order, drop_singletons=True):
                    inputs, labels = (
                        to_device(inputs, self.settings.device),
                        to_device(labels, self.settings.device),
                    )
                    out = model.outputs(inputs)
                    if out.fused is None:  # one modality in this batch: train what is held
                        loss = sum(F.cross_entropy(h, labels) for h in out.heads.values())
                    else:
                        loss = F.cross_entropy(out.fused, labels) + cfg.self_weight * sum(
                            F.cross_entropy(h, labels) for h in out.heads.values()
                        )
                        if infiltrate:
                            d = dominant_modality(out.heads, labels, model.names)
                            w = model.names[1] if d == model.names[0] else model.names[0]
                            dominant[d] += 1
                            with torch.no_grad():
                                target = self.teacher.outputs({d: inputs[d]}).heads[d]
                            student = model.head_logits(w, out.self_proj[w].detach(), out.inf_proj[w])
                            l_inf = soft_cross_entropy(student, target, temps[labels])  # type: ignore[index]
                            loss = loss + cfg.lambda_ * l_inf
                            inf_losses.append(float(l_inf.detach()))
                    if reference:
                        loss = loss + 0.5 * cfg.mu * sum(
                            ((named[n] - r) ** 2).sum() for n, r in reference.items()
                        )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    losses.append(float(loss.detach()))

        meta: dict[str, float | int] = {
            "n_train": len(data.train),
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "inf_batches": len(inf_losses),
            "inf_loss": float(np.mean(inf_losses)) if inf_losses else 0.0,
        }
        meta.update({f"dominant_{m}": dominant[m] for m in model.names})
        return Message(to_arrays(model, prefixes), meta), state  # no persistent client state

    def evaluate(self, message: Message, state: Message, data: ClientData) -> Message:
        return Message()  # one global model: the server evaluates it


class FedCMIServer(GlobalModelServer):
    """Holds the global FedCMI model; sends each client its parts and averages each part over holders."""

    model: CMIClassifier

    def __init__(self, settings: Settings, data: ServerData) -> None:
        super().__init__(settings, data.test, initial_cmi_model(settings))

    def configure(self, round: int, clients: list[ClientSpec], rng: Rng) -> dict[str, Message]:
        picked = sample_clients(clients, self.settings.clients_per_round, rng)
        return {c.id: Message(to_arrays(self.model, part_prefixes(self.model, c.modalities))) for c in picked}

    def aggregate(self, round: int, replies: dict[str, Message], rng: Rng) -> dict[str, float]:
        # a part no sampled client holds keeps its global value (it is in no reply)
        load_arrays(
            self.model,
            weighted_average(replies, rule=aggregation_of(self.settings), device=self.settings.device),
        )
        return self._train_stats(replies)

    def reply_spec(self, round: int, client_id: str, sent: Message) -> ReplySpec:
        """The sent parts back, and the statistics :meth:`_train_stats` reads."""
        dominant = tuple(f"dominant_{m}" for m in self.model.names)
        meta = ("n_train", "train_loss", "inf_batches", "inf_loss", *dominant)
        return ReplySpec.echo(sent, meta=meta, finite_meta=("n_train", "inf_batches", "inf_loss"))

    def _train_stats(self, replies: dict[str, Message]) -> dict[str, float]:
        total = sum(float(r.meta["n_train"]) for r in replies.values())
        stats: dict[str, float] = {}
        if total:
            loss = sum(float(r.meta["train_loss"]) * float(r.meta["n_train"]) for r in replies.values())
            stats["train_loss"] = loss / total
        inf_batches = sum(int(r.meta["inf_batches"]) for r in replies.values())
        if inf_batches:
            stats["inf_loss"] = (
                sum(float(r.meta["inf_loss"]) * int(r.meta["inf_batches"]) for r in replies.values())
                / inf_batches
            )
            for m in self.model.names:  # share of infiltration batches in which m was dominant
                stats[f"dominant_share_{m}"] = (
                    sum(int(r.meta[f"dominant_{m}"]) for r in replies.values()) / inf_batches
                )
        return stats


@register
class FedCMI(EncoderAlgorithm):
    name = "fedcmi"
    Config = FedCMIConfig
    Server = FedCMIServer
    Client = FedCMIClient
    uploads = Uploads(
        fit_arrays=("encoders.{m}.*", "self_proj.{m}.*", "inf_proj.{m}.*", "heads.{m}.*", "fused.*"),
        fit_meta=("n_train", "train_loss", "inf_loss", "inf_batches", "dominant_*"),
    )
    summary = (
        "FedCMI: the weak modality learns from the global model's dominant one (cross-modal infiltration)"
    )
