"""gvf's client half: train locally, measure the update's contribution, upload proxy vectors.

One round of :meth:`GVFClient.fit`, in the order of the method:

1. take in what the server sent (:class:`~fedmosaic.algorithms.gvf.wire.FitInstruction`): the
   aggregated shared part θ, the global vectors, the proxy anchor and labels, the proxy inputs;
2. train the encoders and θ on the private samples (cross-entropy, the alignment and fill terms),
   then per epoch pull the proxy vectors towards the anchor and learn the proxy labels;
3. the contribution Δ: validation loss under the received θ minus that under the trained θ, both on
   the client's trained encoders;
4. reply (:class:`~fedmosaic.algorithms.gvf.wire.FitReply`): the trained θ and the vectors of the
   proxy samples; keep the encoders, θ, the proxy inputs and the global vectors as state.

:meth:`GVFClient.evaluate` tests the client's own encoders under what the update step sent.
:class:`GVFLocalClient` (``gvf-local``) uploads nothing; :class:`SharedEncodersClient`
(``gvf-shared-encoders``) uploads its encoders with θ.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.nn import functional as F

from fedmosaic.algorithms.gvf.config import GVFConfig
from fedmosaic.algorithms.gvf.maths import info_nce
from fedmosaic.algorithms.gvf.model import build_model, own_names, shared_names
from fedmosaic.algorithms.gvf.wire import Arrays, ClientState, FitInstruction, FitReply, Update
from fedmosaic.core.algorithm import Settings
from fedmosaic.core.device import to_device
from fedmosaic.core.message import Message
from fedmosaic.core.metrics import flatten_eval
from fedmosaic.core.seeding import Rng
from fedmosaic.core.task import ClientData, View, to_tensor
from fedmosaic.models.flat_optimizer import FlatOptimizer
from fedmosaic.models.fusion import GVFModel
from fedmosaic.models.params import load_arrays, to_arrays
from fedmosaic.models.train import evaluate_subsets, make_optimizer


def _tensors(bank: Arrays) -> dict[str, torch.Tensor]:
    """Global vectors as tensors (copies: the message's arrays may be read-only)."""
    return {m: torch.from_numpy(v.copy()) for m, v in bank.items()}


def _known_anchor(target: np.ndarray) -> np.ndarray:
    return np.isfinite(target).all(1)


def _is_labelled(target: np.ndarray) -> np.ndarray:
    return target >= 0


def _descend(optimizer: FlatOptimizer, loss: torch.Tensor) -> None:
    """One optimiser step on ``loss``."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


class GVFClient:
    """Train encoders + shared part locally, measure the update's contribution, upload proxy vectors."""

    shares_encoders = False  # the gvf-shared-encoders diagnostic: θ includes the client's encoders

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

    def _own_model(self, state: ClientState) -> GVFModel:
        model = self._fresh()
        load_arrays(model, state.params)
        model.set_bank(_tensors(state.bank))
        return model

    def fit(self, message: Message, state: Message, data: ClientData, rng: Rng) -> tuple[Message, Message]:
        held = data.spec.modalities
        sent = FitInstruction.from_message(message)
        kept = ClientState.from_message(state)
        # 1. take in the server's part
        model = self._own_model(kept)
        load_arrays(model, sent.shared)
        model.set_bank(_tensors(sent.bank))
        proxy = {**kept.proxy, **sent.proxy}
        # 2. local training
        loss = self._train(model, data.train, rng, proxy, sent.pseudo, sent.anchor)
        # 3. contribution: the trained shared part against the received one, both on my trained encoders
        trained = to_arrays(model, shared_names(held, self.cfg.shared_classifier, self.shares_encoders))
        val_local = self._val_loss(model, data.val)
        load_arrays(model, sent.shared)
        val_global = self._val_loss(model, data.val)
        load_arrays(model, trained)
        delta = val_global - val_local if math.isfinite(val_global + val_local) else 0.0
        # 4. reply and state
        reply = FitReply(
            n_train=len(data.train),
            train_loss=loss,
            delta=float(delta),
            val_loss_local=float(val_local),
            val_loss_global=float(val_global),
        )
        self._fill_uploads(reply, model, trained, proxy, data)
        bank = {m: model.bank(m).cpu().numpy() for m in model.order if len(model.bank(m))}
        new_state = ClientState(to_arrays(model, own_names(held)), proxy, bank)
        return reply.to_message(), new_state.to_message()

    def _fill_uploads(
        self, reply: FitReply, model: GVFModel, trained: Arrays, proxy: Arrays, data: ClientData
    ) -> None:
        """What leaves the client: the trained θ, its vectors of the proxy samples (and, when
        allowed, of its private training samples)."""
        reply.shared = dict(trained)
        reply.vectors = {m: self._vectors(model, m, x) for m, x in proxy.items()}
        if self.cfg.allow_private_vectors:
            for m in data.spec.modalities:
                rows = data.train.mask[:, data.train.info.modality_names.index(m)]
                reply.private[m] = self._vectors(model, m, data.train.store[m][data.train.indices[rows]])

    def _train(
        self,
        model: GVFModel,
        view: View,
        rng: Rng,
        proxy: Arrays,
        pseudo: Arrays,
        anchor: Arrays | None = None,
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
        optimizer: FlatOptimizer,
        proxy: Arrays,
        anchor: Arrays,
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
            pull = info_nce(h, a, cfg.align_temperature, symmetric=False)
            _descend(optimizer, cfg.anchor_weight * pull)

    def _proxy_epoch(
        self,
        model: GVFModel,
        optimizer: FlatOptimizer,
        proxy: Arrays,
        pseudo: Arrays,
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
        proxy: Arrays,
        targets: Arrays,
        usable: Callable[[np.ndarray], np.ndarray],
        order: np.random.Generator,
    ) -> Iterator[tuple[str, torch.Tensor, np.ndarray]]:
        """Shuffled ``(modality, inputs, targets)`` batches of the proxy samples, per held modality with
        targets, keeping the samples whose target is ``usable`` (a boolean mask of the target rows)."""
        bs = self.settings.training.batch_size
        for m in sorted(proxy):
            if m not in targets:
                continue
            x, target = proxy[m], targets[m]
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
        """The projections ``h_m`` of inputs ``x`` of ``modality`` (eval mode, batches of 256)."""
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
        model = self._own_model(ClientState.from_message(state))
        update = Update.from_message(message)
        load_arrays(model, update.shared)
        if update.bank:
            model.set_bank(_tensors(update.bank))
        return model

    def evaluate(self, message: Message, state: Message, data: ClientData) -> Message:
        model = self.evaluated_model(message, state)
        results = evaluate_subsets(model, data.test, self.settings.info, data.spec.modalities)
        return Message(meta=flatten_eval(results))


class GVFLocalClient(GVFClient):
    """``gvf-local``: the same training on the client's own data; nothing is uploaded but the scalars."""

    def _fill_uploads(
        self, reply: FitReply, model: GVFModel, trained: Arrays, proxy: Arrays, data: ClientData
    ) -> None:
        return None  # the local-only control exchanges nothing


class SharedEncodersClient(GVFClient):
    """``gvf-shared-encoders`` (a diagnostic that breaks the design): θ includes the held encoders."""

    shares_encoders = True
