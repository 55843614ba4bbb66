"""Global-vector fusion (gvf): single-modality clients borrow the missing modality from global vectors.

The method, part by part (see docs/gvf.md for the formulas and the measurements):

1. **Clients** keep their own encoders (never uploaded). Each held modality m is projected by an
   adapter into one shared d-dimensional space, ``h_m = A_m(E_m(x_m))``. Every client's encoders
   start from the same seeded weights. Clients holding several modalities can *align* the
   projections with a symmetric InfoNCE loss on their pairs (``alignment``, off by default: it cost
   complete clients accuracy and did not put different clients in one space, docs/gvf.md).
2. **Common data set**: the server distributes its proxy set (each client receives only the
   modalities it holds, once). After local training a client uploads the vectors ``h_m`` of the
   *proxy* samples (``vec/<m>``, the design's ``img_vec``/``txt_vec``), never of its private samples
   unless ``allow_private_vectors = true``. The server sends back the *proxy anchor*: the mean of all
   uploaded vectors of each proxy sample; clients pull their own vector of that sample towards it
   (InfoNCE against the batch's other samples, ``anchor_weight``), which keeps all private encoders'
   projections in one shared space, sample by sample.
3. **Server, global area**: K-Means per modality on all uploaded vectors (``k`` fixed, the number of
   classes, or chosen by silhouette); the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``)
   pairs the clusters of every modality with those of the first modality by cosine similarity of
   their centres; row i of every modality's paired centres is global-vector pair i.
4. **Fusion** (:mod:`fedmosaic.models.fusion`): cross-attention between the modality tokens gives Z,
   a forget gate mixes the client's own representation with Z into R, a classifier on R. A missing
   modality's token is filled from the global vectors (attention over the present modality's
   centres, applied to their partners; or the nearest centre's partner). Complete clients also train
   with each modality replaced by its fill, so the shared classifier knows filled inputs.
5. **Global update**: the adapters, the cross-attention block, the gate and the classifier are
   averaged over the clients that hold them (an adapter over the holders of its modality), weighted by
   contribution: ``w_k ∝ n_k · exp(Δ_k / τ)`` where ``Δ_k = L_val(θ_global, φ_k) − L_val(θ_k, φ_k)`` is
   how much client k's own update of the shared part θ lowered the cross-entropy on its own
   validation set (φ_k: its trained encoders, held fixed). ``weighting = "samples"`` gives ``w_k ∝ n_k``.
6. **Update step**: before evaluation every client takes in the aggregated shared part and the new
   global vectors, and is evaluated with its own encoders under them (``update_clients``).

What crosses the wire, per round and sampled client:
  down: the shared part θ for its modalities, the global vectors (k × d per modality, after round
  1), the proxy anchor (``anchor/<m>``, n_proxy × d per held modality, after round 1), in its first
  round the proxy set's inputs of the modalities it holds, and with
  ``proxy_weight > 0`` (off by default) one label per proxy sample (``pseudo/<m>``, -1 = unsure);
  before each evaluation (update step) the shared part and the global vectors again;
  up: the shared part θ, the proxy vectors ``vec/<m>`` (n_proxy × d per held modality), and scalars
  (``n_train``, ``train_loss``, ``delta`` and the two validation losses behind it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from torch import nn
from torch.nn import functional as F

from fedmosaic.algorithms.base import SELF_EVALUATION, EncoderAlgorithm, weighted_train_loss
from fedmosaic.algorithms.proxy_delivery import ProxyDelivery
from fedmosaic.algorithms.registry import register
from fedmosaic.algorithms.robust import aggregation_of
from fedmosaic.core.algorithm import (
    AlgorithmConfig,
    ServerData,
    Settings,
    Uploads,
    sample_clients,
)
from fedmosaic.core.device import to_device
from fedmosaic.core.message import Message
from fedmosaic.core.metrics import aggregate_client_evaluations, flatten_eval
from fedmosaic.core.modality import ClientSpec
from fedmosaic.core.seeding import SERVER, Rng, torch_seed, torch_seeded
from fedmosaic.core.task import ClientData, View, to_tensor
from fedmosaic.core.validation import ArraySpec, ReplySpec
from fedmosaic.models.build import build_encoder
from fedmosaic.models.fusion import GVFModel
from fedmosaic.models.params import load_arrays, to_arrays
from fedmosaic.models.train import evaluate_subsets, make_optimizer

SHARED = ("adapters.", "fusion.", "gate.", "classifier.")  # the global-update part; encoders stay local
ENCODERS = "encoders."  # uploaded only by the share_encoders diagnostic, which breaks the design's promise
VEC, PRIV, BANK, PROXY = "vec/", "priv/", "gv/", "proxy/"
# What a client uploads by default: the shared part and proxy vectors (GVF.declared_uploads adds the
# encoders and private vectors when the two switches that break the design are on).
UPLOADS = Uploads(
    fit_arrays=("adapters.{m}.*", "fusion.*", "gate.*", "classifier.*", "vec/{m}"),
    fit_meta=("n_train", "train_loss", "delta", "val_loss_global", "val_loss_local"),
    evaluate_meta=SELF_EVALUATION,
)
PSEUDO = "pseudo/"  # the federation's label for each proxy sample holding the modality (-1 = unsure)
ANCHOR = "anchor/"  # the federation's mean vector of each proxy sample holding the modality


K_CHOICES = ("classes", "silhouette")  # algorithm.k besides a number of clusters


class GVFConfig(AlgorithmConfig):
    """``[algorithm]`` block of gvf; every switch of the ablations is here."""

    name: str = "gvf"
    dim: int = Field(64, ge=2, description="shared space dimension d")
    heads: int = Field(2, ge=1, description="attention heads of the cross-attention block (must divide dim)")
    k: int | Literal["classes", "silhouette"] = Field(
        "classes", description="clusters per modality: a number, the task's class count, or by silhouette"
    )
    k_min: int = Field(2, ge=2, description="smallest k tried by silhouette")
    k_max: int = Field(24, ge=2, description="largest k tried by silhouette")
    kmeans_init: int = Field(3, ge=1, description="K-Means restarts (n_init)")
    alignment: bool = Field(
        False,
        description="symmetric InfoNCE between a complete client's projections (off: it cost complete "
        "clients 9 points on the synthetic task, docs/gvf.md)",
    )
    align_weight: float = Field(1.0, ge=0)
    align_temperature: float = Field(0.1, gt=0)
    pairing: Literal["hungarian", "random"] = "hungarian"
    gating: bool = Field(True, description="forget gate between h and Z; false = plain concatenation")
    global_vectors: bool = Field(True, description="false: no bank, a missing modality stays missing")
    fill: Literal["attention", "nearest"] = "attention"
    fill_temperature: float = Field(0.1, gt=0)
    fill_training: float = Field(
        0.5,
        ge=0,
        description="weight of complete clients' extra loss with each modality replaced by its fill",
    )
    proxy_weight: float = Field(
        0.0,
        ge=0,
        description="weight of the cross-entropy on proxy samples labelled by the federation (0 = off: "
        "on fsdd-digits they cost image-holding clients 8 points, docs/gvf.md)",
    )
    pseudo_threshold: float = Field(
        0.8,
        ge=0,
        le=1,
        description="a proxy label is sent only when the teachers' mean probability reaches it",
    )
    anchor_weight: float = Field(
        1.0,
        ge=0,
        description="weight of the loss pulling a client's proxy vectors towards the federation's mean "
        "vector of each proxy sample (0 = off)",
    )
    shared_classifier: bool = Field(
        True,
        description="aggregate the FusionClassifier too; false = it stays on its client (personal), only "
        "the adapters, the cross-attention block and the gate are aggregated",
    )
    weighting: Literal["contribution", "samples"] = "contribution"
    contribution_temperature: float = Field(0.1, gt=0, description="tau in w_k ∝ n_k exp(delta_k / tau)")
    allow_private_vectors: bool = Field(
        False, description="also upload vectors of private training samples (off: proxy vectors only)"
    )
    update_clients: bool = Field(
        True,
        description="the design's update step: before evaluation a client takes in the aggregated shared "
        "part and the new global vectors (false: it keeps the shared part as it fine-tuned it)",
    )
    federate: bool = Field(
        True,
        description="false: the like-for-like local-only control; every client trains gvf's model on its "
        "own data and nothing is exchanged (no shared part, vectors, global vectors or anchor)",
    )
    share_encoders: bool = Field(
        False,
        description="DIAGNOSTIC, breaks the design: aggregate the encoders too (over their holders), to "
        "measure how much of the gap to fedavg is the private encoders (docs/gvf.md)",
    )

    @field_validator("k", mode="before")
    @classmethod
    def _k_choice(cls, value: object) -> object:
        # Checked here, not by the union: pydantic would name the failing union member
        # ("algorithm.k.int: ..."), a key that does not exist.
        if (isinstance(value, int) and not isinstance(value, bool) and value >= 1) or value in K_CHOICES:
            return value
        raise ValueError(f"algorithm.k: must be >= 1, 'classes' or 'silhouette' (got {value!r})")

    @model_validator(mode="after")
    def _consistent(self) -> GVFConfig:
        if self.dim % self.heads:
            raise ValueError(f"algorithm.heads: {self.heads} must divide algorithm.dim ({self.dim})")
        if self.k_min > self.k_max:
            raise ValueError(f"algorithm.k_min: {self.k_min} exceeds algorithm.k_max ({self.k_max})")
        if self.proxy_weight > 0 and not self.shared_classifier:
            raise ValueError(
                "algorithm.proxy_weight: proxy labels come from the teachers' uploaded classifiers; "
                "with shared_classifier = false none is uploaded"
            )
        return self


# ----------------------------------------------------------------------------- the model


def build_model(settings: Settings[GVFConfig]) -> GVFModel:
    """The run's initial gvf model: the same weights for every party, from ``(seed, 0, server, init)``."""
    cfg = settings.algorithm
    info = settings.info
    with torch_seeded(torch_seed(settings.seed, 0, SERVER, "init")):
        encoders = {m.name: build_encoder(m, settings.model) for m in info.modalities}
        return GVFModel(  # built on the CPU generator, then moved: the same weights on every device
            encoders,
            settings.model.embed_dim,
            cfg.dim,
            info.num_classes,
            heads=cfg.heads,
            gated=cfg.gating,
            fill=cfg.fill,
            fill_temperature=cfg.fill_temperature,
        ).to(settings.device)


def shared_names(
    model: nn.Module,
    modalities: frozenset[str] | set[str],
    classifier: bool = True,
    encoders: bool = False,
) -> tuple[str, ...]:
    """Prefixes of the shared part a holder of ``modalities`` trains: its adapters and the fusion
    (cross-attention, gate), and the classifier unless it stays on the client (``classifier=False``);
    with ``encoders`` (the share_encoders diagnostic) its encoders too."""
    held = sorted(modalities)
    own_encoders = tuple(f"{ENCODERS}{m}." for m in held) if encoders else ()
    return own_encoders + tuple(f"adapters.{m}." for m in held) + SHARED[1 : 4 if classifier else 3]


def bank_arrays(message: Message) -> dict[str, torch.Tensor]:
    """The global vectors in a message, by modality."""
    return {
        k[len(BANK) :]: torch.from_numpy(v.copy()) for k, v in message.arrays.items() if k.startswith(BANK)
    }


# ----------------------------------------------------------------------------- server-side maths


def contribution_weights(
    n_train: np.ndarray, delta: np.ndarray, temperature: float, mode: str = "contribution"
) -> np.ndarray:
    """Normalised aggregation weights: ``n_k exp(delta_k / tau)`` (contribution) or ``n_k`` (samples).

    Computed in log space so a large ``delta / tau`` cannot overflow.
    """
    n_train = np.asarray(n_train, dtype=np.float64)
    logits = np.log(np.maximum(n_train, 1e-12))
    if mode == "contribution":
        logits = logits + np.asarray(delta, dtype=np.float64) / temperature
    logits -= logits.max()
    w = np.exp(logits)
    return w / w.sum()


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (cosine similarity as a dot product)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pair_clusters(
    reference: np.ndarray,
    other: np.ndarray,
    method: str = "hungarian",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """For each reference centre i, the index of its partner among ``other``'s centres.

    Hungarian: the one-to-one assignment maximising the summed cosine similarity. Random: a random
    permutation (the ablation's control).
    """
    if method == "random":
        return (rng or np.random.default_rng(0)).permutation(len(other))
    rows, cols = linear_sum_assignment(_unit(reference) @ _unit(other).T, maximize=True)
    partner = np.empty(len(reference), dtype=np.int64)
    partner[rows] = cols
    return partner


def choose_k(vectors: dict[str, np.ndarray], k_min: int, k_max: int, seed: int, n_init: int) -> int:
    """The k in ``[k_min, k_max]`` with the best silhouette, averaged over modalities (one k for all,
    so the clusters can be paired one-to-one)."""
    n = min(len(v) for v in vectors.values())
    best, best_score = k_min, -np.inf
    for k in range(k_min, min(k_max, n - 1) + 1):
        scores = []
        for v in vectors.values():
            labels = KMeans(k, n_init=n_init, random_state=seed).fit_predict(v)
            scores.append(silhouette_score(v, labels, sample_size=min(len(v), 1000), random_state=seed))
        if np.mean(scores) > best_score:
            best, best_score = k, float(np.mean(scores))
    return best


def global_vectors(
    vectors: dict[str, np.ndarray],
    order: tuple[str, ...],
    k: int,
    pairing: str,
    rng: np.random.Generator,
    n_init: int = 3,
) -> tuple[dict[str, np.ndarray], float]:
    """K-Means per modality, then pair every modality's clusters with the first modality's.

    Returns the paired centres (row i of each is pair i) and the mean (centred) cosine similarity of
    the pairs.
    """
    names = [m for m in order if m in vectors]
    k = max(1, min([k, *(len(vectors[m]) for m in names)]))
    seed = int(rng.integers(2**31 - 1))
    centres = {
        m: KMeans(k, n_init=n_init, random_state=seed).fit(vectors[m]).cluster_centers_.astype(np.float32)
        for m in names
    }
    # Similarity is measured on centres minus their modality's mean vector: InfoNCE aligns pairs
    # *relative* to each other and leaves each modality free to sit at its own offset, which would
    # make every raw cosine alike.
    centred = {m: centres[m] - vectors[m].mean(0) for m in names}
    ref = names[0]
    out = {ref: centres[ref]}
    sims = []
    for m in names[1:]:
        partner = pair_clusters(centred[ref], centred[m], pairing, rng)
        out[m] = centres[m][partner]
        sims.append(float((_unit(centred[ref]) * _unit(centred[m][partner])).sum(1).mean()))
    return out, float(np.mean(sims)) if sims else float("nan")


# ----------------------------------------------------------------------------- client half


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between paired rows of ``a`` and ``b`` (CLIP's loss)."""
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def _known_anchor(target: np.ndarray) -> np.ndarray:
    return np.isfinite(target).all(1)


def _is_labelled(target: np.ndarray) -> np.ndarray:
    return target >= 0


def _descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimiser step on ``loss``."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


class GVFClient:
    """Train encoders + shared part locally, measure the update's contribution, upload proxy vectors."""

    def __init__(self, settings: Settings[GVFConfig]) -> None:
        self.settings = settings
        self.cfg = settings.algorithm
        self._model: GVFModel | None = None
        self._initial: dict[str, np.ndarray] = {}

    def _fresh(self) -> GVFModel:
        # Built once per process (encoders are the costly part), reset to the run's initial weights.
        if self._model is None:
            self._model = build_model(self.settings)
            self._initial = to_arrays(self._model)
        load_arrays(self._model, self._initial)
        self._model.set_bank({})
        return self._model

    def _own_model(self, state: Message) -> GVFModel:
        model = self._fresh()
        load_arrays(model, {k: v for k, v in state.arrays.items() if not k.startswith((BANK, PROXY))})
        model.set_bank(bank_arrays(state))
        return model

    def fit(self, message: Message, state: Message, data: ClientData, rng: Rng) -> tuple[Message, Message]:
        cfg = self.cfg
        held = data.spec.modalities
        model = self._own_model(state)
        received = {k: v for k, v in message.arrays.items() if k.startswith((*SHARED, ENCODERS))}
        load_arrays(model, received)
        model.set_bank(bank_arrays(message))
        proxy = {k: v for k, v in {**state.arrays, **message.arrays}.items() if k.startswith(PROXY)}
        pseudo = {k[len(PSEUDO) :]: v for k, v in message.arrays.items() if k.startswith(PSEUDO)}
        anchor = {k[len(ANCHOR) :]: v for k, v in message.arrays.items() if k.startswith(ANCHOR)}
        loss = self._train(model, data.train, rng, proxy, pseudo, anchor)

        # Contribution: the trained shared part against the received one, both on my trained encoders.
        trained = to_arrays(model, shared_names(model, held, cfg.shared_classifier, cfg.share_encoders))
        val_local = self._val_loss(model, data.val)
        load_arrays(model, received)
        val_global = self._val_loss(model, data.val)
        load_arrays(model, trained)
        delta = val_global - val_local if math.isfinite(val_global + val_local) else 0.0

        arrays = dict(trained) if cfg.federate else {}
        for key, x in proxy.items():
            arrays[VEC + key[len(PROXY) :]] = self._vectors(model, key[len(PROXY) :], x)
        if cfg.allow_private_vectors:
            for m in held:
                rows = data.train.mask[:, data.train.info.modality_names.index(m)]
                x = data.train.store[m][data.train.indices[rows]]
                arrays[PRIV + m] = self._vectors(model, m, x)
        reply = Message(
            arrays,
            {
                "n_train": len(data.train),
                "train_loss": loss,
                "delta": float(delta),
                "val_loss_local": float(val_local),
                "val_loss_global": float(val_global),
            },
        )
        own = to_arrays(model, tuple(f"encoders.{m}." for m in sorted(held)) + shared_names(model, held))
        # (shared_names with the classifier: a personal classifier is part of the client's own state)
        bank = {BANK + m: model.bank(m).cpu().numpy() for m in model.order if len(model.bank(m))}
        new_state = Message({**own, **proxy, **bank})
        return reply, new_state

    def _train(
        self,
        model: GVFModel,
        view: View,
        rng: Rng,
        proxy: dict[str, np.ndarray],
        pseudo: dict[str, np.ndarray],
        anchor: dict[str, np.ndarray] | None = None,
    ) -> float:
        """Local epochs: cross-entropy, alignment, fill training, the proxy anchor and proxy-label losses."""
        cfg, tcfg = self.cfg, self.settings.training
        optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], tcfg)
        has_bank = all(len(model.bank(m)) for m in model.order)
        losses: list[float] = []
        model.train()
        with rng.seeded("dropout"):
            for epoch in range(tcfg.local_epochs):
                order = rng.numpy(f"batches-{epoch}")
                for inputs, labels in view.batches(tcfg.batch_size, order, drop_singletons=True):
                    inputs, labels = (
                        to_device(inputs, self.settings.device),
                        to_device(labels, self.settings.device),
                    )
                    projected = model.project(inputs)
                    loss = F.cross_entropy(model.fuse(projected), labels)
                    names = [m for m in model.order if m in projected]
                    if len(names) > 1:
                        if cfg.alignment and cfg.align_weight > 0:
                            for m in names[1:]:
                                align = info_nce(projected[names[0]], projected[m], cfg.align_temperature)
                                loss = loss + cfg.align_weight * align
                        if has_bank and cfg.fill_training > 0:
                            # Teach the shared fusion what a filled slot looks like: drop each modality.
                            dropped = [
                                F.cross_entropy(
                                    model.fuse({n: projected[n] for n in names if n != m}), labels
                                )
                                for m in names
                            ]
                            loss = loss + cfg.fill_training * torch.stack(dropped).mean()
                    _descend(optimizer, loss)
                    losses.append(float(loss.detach()))
                if anchor and cfg.anchor_weight > 0:
                    self._anchor_epoch(model, optimizer, proxy, anchor, rng.numpy(f"anchor-{epoch}"))
                if pseudo and cfg.proxy_weight > 0:
                    self._proxy_epoch(model, optimizer, proxy, pseudo, rng.numpy(f"proxy-{epoch}"))
        return float(np.mean(losses)) if losses else float("nan")

    def _anchor_epoch(
        self,
        model: GVFModel,
        optimizer: torch.optim.Optimizer,
        proxy: dict[str, np.ndarray],
        anchor: dict[str, np.ndarray],
        order: np.random.Generator,
    ) -> None:
        """Pull the client's vector of every proxy sample towards the federation's mean vector of it.

        ``loss = anchor_weight * InfoNCE(h_m(x_i), a_i)`` over batches of the proxy samples of each
        held modality m (one-sided, ``align_temperature``): a client's vector of sample i must be
        closer to the federation's vector of i than to those of the other samples in the batch (a
        plain distance to the mean would let every vector collapse onto one point). The mean is over
        every client and modality, so it also aligns a single-modality client's projection with the
        others': it keeps all private encoders' projections in one shared space, where the aggregated
        fusion and the global vectors mean the same thing to every client, and it carries what the
        other clients' encoders learnt into this one's.
        """
        cfg = self.cfg
        known = _known_anchor  # a proxy sample no client sent a vector of is NaN
        for m, x, target in self._proxy_batches(proxy, anchor, known, order):
            h = model.project({m: x})[m]
            a = torch.from_numpy(target).float().to(h.device)
            logits = F.normalize(h, dim=1) @ F.normalize(a, dim=1).T / cfg.align_temperature
            _descend(
                optimizer, cfg.anchor_weight * F.cross_entropy(logits, torch.arange(len(a), device=h.device))
            )

    def _proxy_epoch(
        self,
        model: GVFModel,
        optimizer: torch.optim.Optimizer,
        proxy: dict[str, np.ndarray],
        pseudo: dict[str, np.ndarray],
        order: np.random.Generator,
    ) -> None:
        """Cross-entropy on the proxy samples the federation labelled confidently, one held modality at
        a time (a missing partner is filled from the global vectors, as at test time).

        This is how an encoder that never leaves its client still learns from the others: the
        common set carries the federation's knowledge, sample by sample.
        """
        labelled = _is_labelled  # -1: the federation was unsure
        for m, x, target in self._proxy_batches(proxy, pseudo, labelled, order):
            loss = self.cfg.proxy_weight * F.cross_entropy(
                model({m: x}), torch.from_numpy(target).to(x.device)
            )
            _descend(optimizer, loss)

    def _proxy_batches(
        self,
        proxy: dict[str, np.ndarray],
        targets: dict[str, np.ndarray],
        usable: Callable[[np.ndarray], np.ndarray],
        order: np.random.Generator,
    ) -> Iterator[tuple[str, torch.Tensor, np.ndarray]]:
        """Shuffled ``(modality, inputs, targets)`` batches of the proxy samples, per held modality with
        targets, keeping the samples whose target is ``usable`` (a boolean mask of the target rows)."""
        bs = self.settings.training.batch_size
        for key in sorted(proxy):
            m = key[len(PROXY) :]
            if m not in targets:
                continue
            x, target = proxy[key], targets[m]
            kept = order.permutation(np.flatnonzero(usable(target)))
            for start in range(0, len(kept), bs):
                rows = np.sort(kept[start : start + bs])
                if len(rows) < 2:  # batch norm cannot train on one sample
                    continue
                yield m, to_device(to_tensor(np.asarray(x[rows])), self.settings.device), target[rows]

    @torch.no_grad()
    def _val_loss(self, model: GVFModel, view: View) -> float:
        model.eval()
        total, count = 0.0, 0
        for inputs, labels in view.batches(256):
            inputs, labels = to_device(inputs, self.settings.device), to_device(labels, self.settings.device)
            total += float(F.cross_entropy(model(inputs), labels, reduction="sum"))
            count += len(labels)
        return total / count if count else float("nan")

    @torch.no_grad()
    def _vectors(self, model: GVFModel, modality: str, x: np.ndarray) -> np.ndarray:
        model.eval()
        out = [
            model.project({modality: to_device(to_tensor(np.asarray(x[s : s + 256])), self.settings.device)})[
                modality
            ]
            for s in range(0, len(x), 256)
        ]
        return (
            torch.cat(out).cpu().numpy().astype(np.float32)
            if out
            else np.zeros((0, self.cfg.dim), np.float32)
        )

    def evaluated_model(self, message: Message, state: Message) -> GVFModel:
        """The model a client is evaluated with: its own, under what the update step sent (if anything)."""
        model = self._own_model(state)
        load_arrays(model, {k: v for k, v in message.arrays.items() if not k.startswith(BANK)})
        if any(k.startswith(BANK) for k in message.arrays):
            model.set_bank(bank_arrays(message))
        return model

    def evaluate(self, message: Message, state: Message, data: ClientData) -> Message:
        model = self.evaluated_model(message, state)
        results = evaluate_subsets(model, data.test, self.settings.info, data.spec.modalities)
        return Message(meta=flatten_eval(results))


# ----------------------------------------------------------------------------- server half


class GVFServer:
    """Distributes the proxy set, aggregates the shared part by contribution, builds the global vectors."""

    def __init__(self, settings: Settings[GVFConfig], data: ServerData) -> None:
        self.settings = settings
        self.cfg = settings.algorithm
        self.proxy = data.proxy
        self.model = build_model(settings)
        self.bank: dict[str, np.ndarray] = {}
        self.delivery = ProxyDelivery()  # clients that hold the proxy inputs
        self.pseudo: np.ndarray | None = None  # the federation's label of every proxy sample (-1: unsure)
        self.anchor: np.ndarray | None = None  # the federation's mean vector of every proxy sample
        self._uploaded = (*SHARED, ENCODERS) if self.cfg.share_encoders else SHARED

    def _proxy_rows(self, modality: str) -> np.ndarray:
        """Positions of the proxy samples that hold ``modality`` (the rows of its proxy arrays)."""
        return np.flatnonzero(self.proxy.mask[:, self.proxy.info.modality_names.index(modality)])

    def _proxy_inputs(self, modality: str) -> np.ndarray:
        return np.asarray(self.proxy.store[modality][self.proxy.indices[self._proxy_rows(modality)]])

    def configure(self, round: int, clients: list[ClientSpec], rng: Rng) -> dict[str, Message]:
        plan = {}
        picked = sample_clients(clients, self.settings.clients_per_round, rng)
        if not self.cfg.federate:  # the local-only control: nothing goes down
            return {c.id: Message({}, {"round": round}) for c in picked}
        self.delivery.planned(c.id for c in picked)
        for c in picked:
            arrays = self._update(c)
            if self.pseudo is not None and self.cfg.proxy_weight > 0:
                arrays.update({PSEUDO + m: self.pseudo[self._proxy_rows(m)] for m in sorted(c.modalities)})
            if self.anchor is not None and self.cfg.anchor_weight > 0:
                arrays.update({ANCHOR + m: self.anchor[self._proxy_rows(m)] for m in sorted(c.modalities)})
            if self.delivery.needs(c.id):
                arrays.update({PROXY + m: self._proxy_inputs(m) for m in sorted(c.modalities)})
            plan[c.id] = Message(arrays, {"round": round})
        return plan

    def aggregate(self, round: int, replies: dict[str, Message], rng: Rng) -> dict[str, float]:
        cfg = self.cfg
        # A reply without proxy vectors (accepted when validation is off) shows its client lacks the proxy.
        self.delivery.replied(c for c, r in replies.items() if any(k.startswith(VEC) for k in r.arrays))
        trained_with = self.bank  # the bank this round's clients trained with (the teachers' too)
        ids = sorted(replies)
        n = np.array([float(replies[c].meta["n_train"]) for c in ids])
        delta = np.array([float(replies[c].meta["delta"]) for c in ids])
        names = sorted({k for c in ids for k in replies[c].arrays if k.startswith(self._uploaded)})
        averaged = {}
        for name in names:
            holders = [i for i, c in enumerate(ids) if name in replies[ids[i]].arrays]
            w = contribution_weights(n[holders], delta[holders], cfg.contribution_temperature, cfg.weighting)
            rule = aggregation_of(self.settings)  # a robust rule ignores the (client-reported) weights
            averaged[name] = (
                sum(
                    wi * replies[ids[i]].arrays[name].astype(np.float64)
                    for wi, i in zip(w, holders, strict=True)
                )
                if rule.is_mean
                else rule.combine([replies[ids[i]].arrays[name] for i in holders])
            )
        load_arrays(self.model, averaged)

        stats = weighted_train_loss(replies)
        stats["delta_mean"] = float(delta.mean())
        if cfg.global_vectors:
            vectors: dict[str, list[np.ndarray]] = {}
            for c in ids:
                # Each client's proxy vectors, then its private ones: in an order of names, not the
                # message's, which transports do not keep (safetensors sorts names) and which decides
                # the rows K-Means sees, so its clusters (the file pipeline gave other numbers).
                for key in sorted(replies[c].arrays, key=lambda k: (not k.startswith(VEC), k)):
                    private = key.startswith(PRIV) and cfg.allow_private_vectors
                    if key.startswith(VEC) or private:
                        vectors.setdefault(key.split("/", 1)[1], []).append(replies[c].arrays[key])
            stacked = {m: np.concatenate(v) for m, v in vectors.items()}
            if len(stacked) == len(self.settings.info.modalities):  # pairs need every modality
                k = self._k(stacked, rng)
                self.bank, similarity = global_vectors(
                    stacked,
                    self.settings.info.modality_names,
                    k,
                    cfg.pairing,
                    rng.numpy("kmeans"),
                    cfg.kmeans_init,
                )
                stats["k"] = float(len(next(iter(self.bank.values()))))
                stats["pair_similarity"] = similarity
        if cfg.anchor_weight > 0 and cfg.federate:
            self.anchor = self._anchor_vectors(replies)
        if cfg.proxy_weight > 0:
            self.pseudo = self._pseudo_labels(replies, trained_with)
            stats["pseudo_labelled"] = float((self.pseudo >= 0).mean())
        return stats

    def reply_spec(self, round: int, client_id: str, sent: Message) -> ReplySpec:
        """The shared part sent, back; a vector per proxy sample of each held modality (private: optional)."""
        held = sorted({k.split(".")[1] for k in sent.arrays if k.startswith("adapters.")})
        f32, dim = np.dtype(np.float32), self.cfg.dim
        arrays = {k: ArraySpec.like(v) for k, v in sent.arrays.items() if k.startswith(self._uploaded)}
        if self.cfg.federate:
            arrays.update({VEC + m: ArraySpec((len(self._proxy_rows(m)), dim), f32) for m in held})
        if self.cfg.allow_private_vectors:
            arrays.update({PRIV + m: ArraySpec((None, dim), f32, required=False) for m in held})
        meta = ("n_train", "train_loss", "delta", "val_loss_local", "val_loss_global")
        return ReplySpec(arrays, meta=meta, finite_meta=("n_train", "delta"))

    def _anchor_vectors(self, replies: dict[str, Message]) -> np.ndarray:
        """The mean of every uploaded vector of each proxy sample (all clients, all modalities).

        A proxy sample no client sent a vector of is NaN (clients skip it).
        """
        total = np.zeros((len(self.proxy), self.cfg.dim))
        count = np.zeros(len(self.proxy))
        for reply in replies.values():
            for key in sorted(reply.arrays):  # by name: the sum's order must not depend on the transport
                if key.startswith(VEC):
                    rows = self._proxy_rows(key[len(VEC) :])
                    total[rows] += reply.arrays[key]
                    count[rows] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return (total / count[:, None]).astype(np.float32)

    @torch.no_grad()
    def _pseudo_labels(self, replies: dict[str, Message], bank: dict[str, np.ndarray]) -> np.ndarray:
        """Label each proxy sample with the aggregated fusion model applied to the uploaded vectors.

        Teachers are the clients holding the most modalities (their vectors of a proxy sample are a
        real pair); their class probabilities are averaged, and a sample keeps its label only when
        that mean reaches ``pseudo_threshold``. Only vectors and the shared part are used: the server
        never sees a client's data or encoder.
        """
        teacher = build_model(self.settings)
        teacher.eval()
        teacher.set_bank({m: torch.from_numpy(v) for m, v in bank.items()})  # fills as in training
        aggregate = to_arrays(self.model, SHARED)  # for any shared array a teacher did not upload
        n_classes = self.settings.info.num_classes
        held = {c: {k[len(VEC) :] for k in r.arrays if k.startswith(VEC)} for c, r in replies.items()}
        most = max((len(h) for h in held.values()), default=0)
        probs, votes = np.zeros((len(self.proxy), n_classes)), np.zeros(len(self.proxy))
        for c, reply in sorted(replies.items()):
            if not held[c] or len(held[c]) < most:
                continue
            rows = np.arange(len(self.proxy))
            for m in held[c]:  # samples holding every one of the teacher's modalities
                rows = np.intersect1d(rows, self._proxy_rows(m))
            projected = {
                m: torch.from_numpy(reply.arrays[VEC + m][np.searchsorted(self._proxy_rows(m), rows)]).to(
                    self.settings.device
                )
                for m in sorted(held[c])
            }
            if len(rows):
                # The teacher's own shared part, as it trained it: its vectors were projected by its
                # adapters, and the aggregate fits them worse (33-74 % of labels right on fsdd-digits).
                own = {k: v for k, v in reply.arrays.items() if k.startswith(SHARED)}
                load_arrays(teacher, {**aggregate, **own})
                probs[rows] += torch.softmax(teacher.fuse(projected), 1).cpu().numpy()
                votes[rows] += 1
        probs /= np.maximum(votes, 1)[:, None]
        labels = probs.argmax(1)
        labels[(probs.max(1) < self.cfg.pseudo_threshold) | (votes == 0)] = -1
        return labels.astype(np.int64)

    def _k(self, vectors: dict[str, np.ndarray], rng: Rng) -> int:
        cfg = self.cfg
        if cfg.k == "classes":
            return self.settings.info.num_classes
        if cfg.k == "silhouette":
            seed = int(rng.numpy("silhouette").integers(2**31 - 1))
            return choose_k(vectors, cfg.k_min, cfg.k_max, seed, cfg.kmeans_init)
        return int(cfg.k)

    def _update(self, client: ClientSpec) -> dict[str, np.ndarray]:
        """What a client takes in: the aggregated shared part for its modalities and the global vectors."""
        cfg = self.cfg
        names = shared_names(self.model, client.modalities, cfg.shared_classifier, cfg.share_encoders)
        return {**to_arrays(self.model, names), **{BANK + m: v for m, v in self.bank.items()}}

    def configure_evaluate(self, round: int, clients: list[ClientSpec]) -> dict[str, Message]:
        # The design's update-clients step: a client evaluates its own encoders under the aggregated
        # shared part and the new global vectors (docs/gvf.md measured this better than its own
        # fine-tuned shared part). update_clients=false: the personal model in its state, no arrays.
        if not (self.cfg.update_clients and self.cfg.federate):
            return {c.id: Message() for c in clients}
        return {c.id: Message(self._update(c)) for c in clients}

    def evaluate(
        self, round: int, clients: list[ClientSpec], replies: dict[str, Message]
    ) -> dict[str, dict[str, float]]:
        return aggregate_client_evaluations(replies, {c.id: c for c in clients})

    def state(self) -> Message:
        arrays = to_arrays(self.model, self._uploaded)
        arrays.update({BANK + m: v for m, v in self.bank.items()})
        if self.pseudo is not None:
            arrays["pseudo"] = self.pseudo
        if self.anchor is not None:
            arrays["anchor"] = self.anchor
        return Message(arrays, self.delivery.to_meta("delivered"))

    def load_state(self, state: Message) -> None:
        load_arrays(self.model, {k: v for k, v in state.arrays.items() if k.startswith(self._uploaded)})
        self.bank = {k[len(BANK) :]: v for k, v in state.arrays.items() if k.startswith(BANK)}
        self.pseudo = state.arrays.get("pseudo")
        self.anchor = state.arrays.get("anchor")
        self.delivery.load_meta(state, "delivered")


@register
class GVF(EncoderAlgorithm):
    name = "gvf"
    Config = GVFConfig
    Server = GVFServer
    Client = GVFClient
    personalised = True
    uploads = UPLOADS
    summary = (
        "global-vector fusion: proxy vectors -> K-Means + Hungarian global vectors, gated cross-attention"
    )

    @classmethod
    def declared_uploads(cls, config: AlgorithmConfig) -> Uploads | None:
        """The default uploads, plus the encoders under ``share_encoders`` and vectors of private
        samples under ``allow_private_vectors`` (both off by default; docs/algorithms.md)."""
        if not isinstance(config, GVFConfig):
            raise TypeError(f"config: expected a GVFConfig, got {type(config).__name__}")
        extra = (f"{ENCODERS}{{m}}.*",) if config.share_encoders else ()
        extra += (f"{PRIV}{{m}}",) if config.allow_private_vectors else ()
        return replace(UPLOADS, fit_arrays=(*UPLOADS.fit_arrays, *extra))
