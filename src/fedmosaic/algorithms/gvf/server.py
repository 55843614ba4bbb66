"""gvf's server half: distribute the proxy set, aggregate by contribution, build the global vectors.

:meth:`GVFServer.configure` sends each sampled client a
:class:`~fedmosaic.algorithms.gvf.wire.FitInstruction`. :meth:`GVFServer.aggregate` runs the round's
steps on the clients' :class:`~fedmosaic.algorithms.gvf.wire.FitReply`:

1. :meth:`~GVFServer.average_shared_part`: θ averaged by contribution weight, each array over the
   clients that hold it (an adapter over the holders of its modality);
2. :meth:`~GVFServer.build_global_vectors`: K-Means per modality on the uploaded proxy vectors, the
   clusters paired by the Hungarian algorithm;
3. :meth:`~GVFServer.build_anchor`: the mean uploaded vector of every proxy sample;
4. :meth:`~GVFServer.build_proxy_labels` (an extension, off by default): proxy labels from the
   complete clients' own uploaded θ applied to their vectors.

:meth:`GVFServer.configure_evaluate` is the update step: the aggregated θ and the global vectors.
:class:`GVFLocalServer` (``gvf-local``) sends nothing; :class:`SharedEncodersServer`
(``gvf-shared-encoders``) also averages the encoders.
"""

from __future__ import annotations

import numpy as np
import torch

from fedmosaic.algorithms.base import weighted_train_loss
from fedmosaic.algorithms.gvf.config import GVFConfig
from fedmosaic.algorithms.gvf.maths import choose_k as silhouette_k
from fedmosaic.algorithms.gvf.maths import contribution_weights, global_vectors, sample_means, weighted_sum
from fedmosaic.algorithms.gvf.model import ENCODERS, SHARED, build_model, shared_names
from fedmosaic.algorithms.gvf.wire import (
    BANK,
    PRIV,
    VEC,
    FitInstruction,
    FitReply,
    Update,
    named,
    split_names,
)
from fedmosaic.algorithms.proxy_delivery import ProxyDelivery
from fedmosaic.algorithms.robust import aggregation_of
from fedmosaic.core.algorithm import ServerData, Settings, sample_clients
from fedmosaic.core.message import Message
from fedmosaic.core.metrics import aggregate_client_evaluations
from fedmosaic.core.modality import ClientSpec
from fedmosaic.core.seeding import Rng
from fedmosaic.core.validation import ArraySpec, ReplySpec
from fedmosaic.models.params import load_arrays, to_arrays

# Server state names besides the model's parameters (the global vectors use the wire's ``gv/<m>``).
PSEUDO_STATE, ANCHOR_STATE, DELIVERED = "pseudo", "anchor", "delivered"


class GVFServer:
    """Distributes the proxy set, aggregates the shared part by contribution, builds the global vectors."""

    aggregated: tuple[str, ...] = SHARED  # the parts of the model clients upload and the server averages

    def __init__(self, settings: Settings[GVFConfig], data: ServerData) -> None:
        self.settings = settings
        self.cfg = settings.algorithm
        self.proxy = data.proxy
        self.model = build_model(settings)
        self.bank: dict[str, np.ndarray] = {}
        self.delivery = ProxyDelivery()  # clients that hold the proxy inputs
        self.pseudo: np.ndarray | None = None  # the federation's label of every proxy sample (-1: unsure)
        self.anchor: np.ndarray | None = None  # the federation's mean vector of every proxy sample

    def _proxy_rows(self, modality: str) -> np.ndarray:
        """Positions of the proxy samples that hold ``modality`` (the rows of its proxy arrays)."""
        return np.flatnonzero(self.proxy.mask[:, self.proxy.info.modality_names.index(modality)])

    def _proxy_inputs(self, modality: str) -> np.ndarray:
        return np.asarray(self.proxy.store[modality][self.proxy.indices[self._proxy_rows(modality)]])

    # ------------------------------------------------------------------------- what goes down

    def configure(self, round: int, clients: list[ClientSpec], rng: Rng) -> dict[str, Message]:
        picked = sample_clients(clients, self.settings.clients_per_round, rng)
        self.delivery.planned(c.id for c in picked)
        return {c.id: self.instruction(round, c).to_message() for c in picked}

    def instruction(self, round: int, client: ClientSpec) -> FitInstruction:
        """What a sampled client trains with: the update, the proxy labels and anchor of its
        modalities' proxy samples, and the proxy inputs unless it holds them."""
        update = self._update(client)
        held = sorted(client.modalities)
        sent = FitInstruction(round, update.shared, update.bank)
        if self.pseudo is not None and self.cfg.proxy_weight > 0:
            sent.pseudo = {m: self.pseudo[self._proxy_rows(m)] for m in held}
        if self.anchor is not None and self.cfg.anchor_weight > 0:
            sent.anchor = {m: self.anchor[self._proxy_rows(m)] for m in held}
        if self.delivery.needs(client.id):
            sent.proxy = {m: self._proxy_inputs(m) for m in held}
        return sent

    def _update(self, client: ClientSpec) -> Update:
        """What a client takes in: the aggregated shared part for its modalities and the global vectors."""
        names = shared_names(client.modalities, self.cfg.shared_classifier, ENCODERS in self.aggregated)
        return Update(to_arrays(self.model, names), dict(self.bank))

    def configure_evaluate(self, round: int, clients: list[ClientSpec]) -> dict[str, Message]:
        # The design's update-clients step: a client evaluates its own encoders under the aggregated
        # shared part and the new global vectors (docs/gvf.md measured this better than its own
        # fine-tuned shared part). update_clients=false: the personal model in its state, no arrays.
        if not self.cfg.update_clients:
            return {c.id: Message() for c in clients}
        return {c.id: self._update(c).to_message() for c in clients}

    # ------------------------------------------------------------------------- what comes back

    def reply_spec(self, round: int, client_id: str, sent: Message) -> ReplySpec:
        """The shared part sent, back; a vector per proxy sample of each held modality (private: optional)."""
        shared = FitInstruction.from_message(sent).shared
        held = sorted({k.split(".")[1] for k in shared if k.split(".")[0] == "adapters"})
        f32, dim = np.dtype(np.float32), self.cfg.dim
        arrays = {k: ArraySpec.like(v) for k, v in shared.items() if k.startswith(self.aggregated)}
        arrays.update({VEC + m: ArraySpec((len(self._proxy_rows(m)), dim), f32) for m in held})
        if self.cfg.allow_private_vectors:
            arrays.update({PRIV + m: ArraySpec((None, dim), f32, required=False) for m in held})
        return ReplySpec(arrays, meta=FitReply.META, finite_meta=("n_train", "delta"))

    def aggregate(self, round: int, replies: dict[str, Message], rng: Rng) -> dict[str, float]:
        parsed = {c: FitReply.from_message(replies[c]) for c in sorted(replies)}
        # A reply without proxy vectors (accepted when validation is off) shows its client lacks the proxy.
        self.delivery.replied(c for c, r in parsed.items() if r.vectors)
        trained_with = self.bank  # the bank this round's clients trained with (the teachers' too)
        self.average_shared_part(parsed)
        stats = weighted_train_loss(replies)
        stats["delta_mean"] = float(np.mean([r.delta for r in parsed.values()]))
        if self.cfg.global_vectors:
            stats.update(self.build_global_vectors(parsed, rng))
        if self.cfg.anchor_weight > 0:
            self.anchor = self.build_anchor([parsed[c] for c in replies])  # in the replies' order
        if self.cfg.proxy_weight > 0:
            self.pseudo = self.build_proxy_labels(parsed, trained_with)
            stats["pseudo_labelled"] = float((self.pseudo >= 0).mean())
        return stats

    # ------------------------------------------------------------------------- the round's steps

    def average_shared_part(self, replies: dict[str, FitReply]) -> None:
        """θ ← Σ_k w_k θ_k per array, over the clients that uploaded it, ``w`` the contribution weights
        (a robust rule, ``robustness.aggregator``, ignores the client-reported weights)."""
        cfg, ids = self.cfg, list(replies)
        n = np.array([replies[c].n_train for c in ids])
        delta = np.array([replies[c].delta for c in ids])
        names = sorted({k for c in ids for k in replies[c].shared if k.startswith(self.aggregated)})
        rule = aggregation_of(self.settings)
        averaged = {}
        for name in names:
            holders = [c for c in ids if name in replies[c].shared]
            arrays = [replies[c].shared[name] for c in holders]
            if rule.is_mean:
                at = [ids.index(c) for c in holders]
                w = contribution_weights(n[at], delta[at], cfg.contribution_temperature, cfg.weighting)
                averaged[name] = weighted_sum(arrays, w)
            else:
                averaged[name] = rule.combine(arrays)
        load_arrays(self.model, averaged)

    def build_global_vectors(self, replies: dict[str, FitReply], rng: Rng) -> dict[str, float]:
        """The new global vectors from every uploaded vector; ``k`` and the pairs' mean similarity.

        Nothing changes unless every modality has vectors (a pair needs a centre of each)."""
        vectors: dict[str, list[np.ndarray]] = {}
        for reply in replies.values():
            # Each client's proxy vectors, then its private ones, each by modality name: not in the
            # message's order, which transports do not keep (safetensors sorts names) and which decides
            # the rows K-Means sees, so its clusters (the file pipeline gave other numbers).
            uploads = sorted(reply.vectors.items())
            if self.cfg.allow_private_vectors:
                uploads += sorted(reply.private.items())
            for m, v in uploads:
                vectors.setdefault(m, []).append(v)
        stacked = {m: np.concatenate(v) for m, v in vectors.items()}
        if len(stacked) != len(self.settings.info.modalities):
            return {}
        info, cfg = self.settings.info, self.cfg
        k = self._k(stacked, rng)
        self.bank, similarity = global_vectors(
            stacked, info.modality_names, k, cfg.pairing, rng.numpy("kmeans"), cfg.kmeans_init
        )
        return {"k": float(len(next(iter(self.bank.values())))), "pair_similarity": similarity}

    def _k(self, vectors: dict[str, np.ndarray], rng: Rng) -> int:
        """The number of clusters: fixed, the task's class count, or chosen by silhouette."""
        cfg = self.cfg
        if cfg.k == "classes":
            return self.settings.info.num_classes
        if cfg.k == "silhouette":
            seed = int(rng.numpy("silhouette").integers(2**31 - 1))
            return silhouette_k(vectors, cfg.k_min, cfg.k_max, seed, cfg.kmeans_init)
        return int(cfg.k)

    def build_anchor(self, replies: list[FitReply]) -> np.ndarray:
        """The proxy anchor: the mean of every vector uploaded for each proxy sample (all clients, all
        modalities; NaN where none was). Summed in the replies' order, each reply's modalities by name
        (the sum's order must not depend on the transport)."""
        uploads = ((self._proxy_rows(m), v) for reply in replies for m, v in sorted(reply.vectors.items()))
        return sample_means(len(self.proxy), self.cfg.dim, uploads)

    @torch.no_grad()
    def build_proxy_labels(self, replies: dict[str, FitReply], bank: dict[str, np.ndarray]) -> np.ndarray:
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
        most = max((len(r.vectors) for r in replies.values()), default=0)
        probs, votes = np.zeros((len(self.proxy), n_classes)), np.zeros(len(self.proxy))
        for _, reply in sorted(replies.items()):
            held = set(reply.vectors)
            if not held or len(held) < most:
                continue
            rows = np.arange(len(self.proxy))
            for m in held:  # samples holding every one of the teacher's modalities
                rows = np.intersect1d(rows, self._proxy_rows(m))
            projected = {
                m: torch.from_numpy(reply.vectors[m][np.searchsorted(self._proxy_rows(m), rows)]).to(
                    self.settings.device
                )
                for m in sorted(held)
            }
            if len(rows):
                # The teacher's own shared part, as it trained it: its vectors were projected by its
                # adapters, which the aggregate fits worse (docs/gvf.md, Diagnosis 8).
                own = {k: v for k, v in reply.shared.items() if k.startswith(SHARED)}
                load_arrays(teacher, {**aggregate, **own})
                probs[rows] += torch.softmax(teacher.fuse(projected), 1).cpu().numpy()
                votes[rows] += 1
        probs /= np.maximum(votes, 1)[:, None]
        labels = probs.argmax(1)
        labels[(probs.max(1) < self.cfg.pseudo_threshold) | (votes == 0)] = -1
        return labels.astype(np.int64)

    # ------------------------------------------------------------------------- evaluation and state

    def evaluate(
        self, round: int, clients: list[ClientSpec], replies: dict[str, Message]
    ) -> dict[str, dict[str, float]]:
        return aggregate_client_evaluations(replies, {c.id: c for c in clients})

    def state(self) -> Message:
        arrays = to_arrays(self.model, self.aggregated)
        arrays.update(named(BANK, self.bank))
        if self.pseudo is not None:
            arrays[PSEUDO_STATE] = self.pseudo
        if self.anchor is not None:
            arrays[ANCHOR_STATE] = self.anchor
        return Message(arrays, self.delivery.to_meta(DELIVERED))

    def load_state(self, state: Message) -> None:
        parameters, kinds = split_names(state.arrays, (BANK,))
        self.pseudo = parameters.pop(PSEUDO_STATE, None)
        self.anchor = parameters.pop(ANCHOR_STATE, None)
        load_arrays(self.model, parameters)
        self.bank = kinds[BANK]
        self.delivery.load_meta(state, DELIVERED)


class GVFLocalServer(GVFServer):
    """``gvf-local``, the like-for-like local-only control: gvf's model trained on each client's data
    alone. Nothing goes down (no shared part, vectors, global vectors, anchor or proxy inputs), so
    nothing but the training scalars comes back, and a client is evaluated with what it trained."""

    def configure(self, round: int, clients: list[ClientSpec], rng: Rng) -> dict[str, Message]:
        picked = sample_clients(clients, self.settings.clients_per_round, rng)
        return {c.id: FitInstruction(round).to_message() for c in picked}

    def configure_evaluate(self, round: int, clients: list[ClientSpec]) -> dict[str, Message]:
        return {c.id: Message() for c in clients}

    def aggregate(self, round: int, replies: dict[str, Message], rng: Rng) -> dict[str, float]:
        stats = weighted_train_loss(replies)
        stats["delta_mean"] = float(np.mean([FitReply.from_message(r).delta for r in replies.values()]))
        return stats


class SharedEncodersServer(GVFServer):
    """``gvf-shared-encoders``, a DIAGNOSTIC that breaks the design: the encoders are averaged too
    (each over its modality's holders), to measure how much of gvf's gap to fedavg is the private
    encoders."""

    aggregated = (*SHARED, ENCODERS)
