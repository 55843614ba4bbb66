"""The Algorithm protocol: a server half and a client half that share nothing but Messages.

That contract is what lets one algorithm run in the local engine, on Flower and as files on disk.
An algorithm never imports an engine; an engine never imports a specific algorithm.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Generic, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict

from fedmosaic.core.message import Message
from fedmosaic.core.modality import ClientSpec
from fedmosaic.core.seeding import Rng
from fedmosaic.core.settings import ModelConfig, RobustnessConfig, TrainingConfig
from fedmosaic.core.stream import ServerStreams
from fedmosaic.core.task import ClientData, TaskInfo, View
from fedmosaic.core.validation import ReplySpec


class AlgorithmConfig(BaseModel):
    """Base of every algorithm's own config block (``[algorithm]`` in TOML); subclasses add fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str


C = TypeVar("C", bound=AlgorithmConfig)


@dataclass(frozen=True)
class Settings(Generic[C]):
    """Everything either half may know besides data: the task's description and the run's settings.

    Typed throughout: an algorithm's halves take ``Settings[TheirConfig]`` and read their own
    hyperparameters as fields, never through ``getattr`` with a default. ``robustness`` is the run's
    ``[robustness]`` block (the aggregation rule lives there); ``None`` (a hand-built Settings)
    means the weighted mean. ``device`` is the torch device (already resolved,
    :func:`fedmosaic.core.device.resolve_device`) a half keeps its models on and moves its batches to;
    what it puts in a Message is numpy on the CPU whatever the device.
    """

    info: TaskInfo
    algorithm: C
    training: TrainingConfig
    model: ModelConfig
    seed: int
    rounds: int
    clients_per_round: int
    robustness: RobustnessConfig | None = None
    device: str = "cpu"


@dataclass
class ServerData:
    """What the server holds: the proxy (unlabelled), labelled and test sets.

    ``pooled_train`` is only filled for algorithms that declare ``needs_pooled_data`` (the
    centralized upper bound); federated algorithms never see client data. ``streams`` holds the
    continuous recordings of the reference evaluation protocol when the data set has them.
    """

    proxy: View
    labelled: View
    test: View
    pooled_train: View | None = None
    # the labelled share and test stream as continuous recordings (data sets that have them)
    streams: ServerStreams | None = None


@runtime_checkable
class ServerSide(Protocol):
    """The server half. It plans rounds, aggregates replies and evaluates."""

    def configure(self, round: int, clients: list[ClientSpec], rng: Rng) -> dict[str, Message]:
        """Pick this round's clients and the message each receives."""
        ...

    def aggregate(self, round: int, replies: dict[str, Message], rng: Rng) -> dict[str, float]:
        """Fold the clients' replies into the global state; return scalar training statistics."""
        ...

    def reply_spec(self, round: int, client_id: str, sent: Message) -> ReplySpec:
        """What a well-formed reply of ``client_id`` to ``sent`` holds (the engine checks it first)."""
        ...

    def configure_evaluate(self, round: int, clients: list[ClientSpec]) -> dict[str, Message]:
        """Clients asked to evaluate their own models (empty for algorithms with one global model)."""
        ...

    def evaluate(
        self, round: int, clients: list[ClientSpec], replies: dict[str, Message]
    ) -> dict[str, dict[str, float]]:
        """Metrics by name (``test/image+text``, ``group/image``, ``overall`` ...) for this round."""
        ...

    def state(self) -> Message:
        """The server's persistent state, for checkpoints."""
        ...

    def load_state(self, state: Message) -> None:
        """Restore what :meth:`state` returned."""
        ...


@runtime_checkable
class ClientSide(Protocol):
    """The client half. It never keeps anything between calls: its persistent state is passed in."""

    def fit(self, message: Message, state: Message, data: ClientData, rng: Rng) -> tuple[Message, Message]:
        """Train on the client's own data; return ``(reply, new_state)``."""
        ...

    def evaluate(self, message: Message, state: Message, data: ClientData) -> Message:
        """Evaluate the client's model; metrics go into the reply's ``meta``."""
        ...


Call = Literal["fit", "evaluate"]


@dataclass(frozen=True)
class Uploads:
    """What a client of an algorithm may upload: shell-glob patterns of array names and meta keys.

    One tuple per call and part, like the columns of the upload-names table in
    ``docs/algorithms.md`` (``tests/test_privacy_audit.py`` keeps the two equal for the built-ins).
    Patterns use :func:`fnmatch.fnmatchcase` (``*`` also matches dots); ``{m}`` stands for a modality
    the client holds and ``{g}`` for a group of them (``image``, ``image+text``), so a client may
    only upload names of its own modalities. Declared on the class, a plug-in carries its own
    audit: :func:`fedmosaic.testing.check_algorithm` fails on any upload no pattern matches.
    """

    fit_arrays: tuple[str, ...] = ()
    fit_meta: tuple[str, ...] = ()
    evaluate_arrays: tuple[str, ...] = ()
    evaluate_meta: tuple[str, ...] = ()

    def patterns(self, call: Call, part: Literal["arrays", "meta"]) -> tuple[str, ...]:
        """The patterns of one column (``call`` = ``fit``/``evaluate``, ``part`` = ``arrays``/``meta``)."""
        return getattr(self, f"{call}_{part}")

    def undeclared(
        self, call: Call, message: Message, modalities: Iterable[str], groups: Iterable[str]
    ) -> list[str]:
        """One line per array name or meta key of ``message`` (a client's ``call`` reply) that no
        pattern allows, and per meta value that is a string (free text could carry anything).

        ``modalities``: what the sending client holds; ``groups``: the names of its modality groups.
        """
        held, grouped = sorted(modalities), sorted(groups)

        def expand(pattern: str) -> list[str]:
            out = [pattern.replace("{m}", m) for m in held] if "{m}" in pattern else [pattern]
            return [o.replace("{g}", g) for o in out for g in grouped] if "{g}" in pattern else out

        problems = []
        parts: dict[Literal["arrays", "meta"], Iterable[str]] = {
            "arrays": message.arrays,
            "meta": message.meta,
        }
        for part, names in parts.items():
            allowed = [e for p in self.patterns(call, part) for e in expand(p)]
            problems += [
                f"{call} {part} {name!r} is not declared"
                for name in names
                if not any(fnmatch.fnmatchcase(name, p) for p in allowed)
            ]
        problems += [f"{call} meta {k!r} is a string" for k, v in message.meta.items() if isinstance(v, str)]
        return problems


class Algorithm:
    """A plug-in algorithm: its config class and its two halves.

    ``personalised``: clients keep models of their own, so they evaluate themselves.
    ``needs_pooled_data``: the server trains on pooled client data (only the centralized baseline).
    ``per_sample_masks``: its clients train correctly when samples of one client hold different
    modalities (``clients.sample_drop_rate``); the config refuses the option for the others.
    ``uploads``: the names its clients may upload (:class:`Uploads`); ``None`` declares nothing,
    which only an algorithm without client messages (``needs_pooled_data``) may do. When switches of
    the config change what is uploaded, override :meth:`declared_uploads`.
    """

    name: ClassVar[str]
    Config: ClassVar[type[AlgorithmConfig]]
    Server: ClassVar[type]
    Client: ClassVar[type]
    personalised: ClassVar[bool] = False
    needs_pooled_data: ClassVar[bool] = False
    per_sample_masks: ClassVar[bool] = False
    summary: ClassVar[str] = ""
    uploads: ClassVar[Uploads | None] = None

    @classmethod
    def declared_uploads(cls, config: AlgorithmConfig) -> Uploads | None:
        """What a client may upload under ``config`` (default: :attr:`uploads`, whatever the config)."""
        return cls.uploads

    @classmethod
    def check_task(cls, info: TaskInfo) -> list[str]:
        """What keeps this algorithm from running on a task described by ``info``: one line each.

        Engines and the runner call it before any work (before the data is split, tokenised or encoded,
        and before a run folder is written), for the main algorithm and every ``compare`` baseline, so
        a mismatch is one line per problem instead of a failure deep inside the first round. A line
        names the algorithm and the modality at fault, e.g. ``fedmekt needs (channels, time) sensor
        windows; modality 'image' is image of shape (3, 24, 24)``; the caller prefixes the config key.

        ``info`` may be an outline taken before loading: modalities as the data set declares them
        (kind and shape; a text modality's ``vocab_size`` may still be ``None``) and ``num_classes``
        0 when the classes are not known yet. The check runs again on the loaded data's description,
        so it must be cheap and must not depend on the data itself. Default: no problems.
        """
        return []


def sample_clients(clients: list[ClientSpec], k: int, rng: Rng) -> list[ClientSpec]:
    """``k`` clients drawn without replacement from a generator derived from the round (in list order)."""
    if k >= len(clients):
        return list(clients)
    picked = rng.numpy("sample-clients").choice(len(clients), size=k, replace=False)
    return [clients[i] for i in np.sort(picked)]
