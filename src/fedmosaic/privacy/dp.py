"""Clipping + Gaussian noise on every client upload, for any algorithm (client-level local DP).

:class:`PrivateClient` wraps an algorithm's client half. After the inner ``fit`` it privatises the
reply's floating-point arrays:

* an array whose name and shape match an array the client *received* in the round's message is an
  update: ``reply - sent`` (weights under FedAvg-style algorithms, global embeddings sent back);
* an array with no counterpart (embeddings of a proxy batch, representation vectors) is a value.

All of them are clipped *jointly* to L2 norm ``clip`` (one client, one bound: user-level), then
``N(0, (noise_multiplier * clip)^2)`` is added to every coordinate and updates are added back onto
what was sent. Noise is drawn from the round's :class:`~fedmosaic.core.seeding.Rng` (purpose
``privacy-noise``): the same seed gives the same noise, whatever the engine or a resume.

Not covered (and documented in docs/privacy.md): integer arrays (e.g. proxy-batch indices, which
the server chose), the reply's ``meta`` scalars (``n_train``, ``train_loss`` ...), evaluation
replies, and the client's own state, which never leaves it.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fedmosaic.core.message import Message
from fedmosaic.core.seeding import Rng
from fedmosaic.core.task import ClientData

NOISE_PURPOSE = "privacy-noise"


class PrivacyConfig(BaseModel):
    """``[privacy]``: client-level DP on uploads (off by default)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    clip: float = Field(1.0, gt=0, allow_inf_nan=False, description="L2 bound C of one client's upload")
    noise_multiplier: float = Field(
        1.0, gt=0, allow_inf_nan=False, description="z: noise std per coordinate is z * C"
    )
    delta: float = Field(1e-5, gt=0, lt=1, description="the delta epsilon is reported at")


def _is_float(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.floating)


def clip_upload(reply: Message, sent: Message, clip: float) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The reply's private part clipped jointly to L2 norm ``clip`` (float64, before noise).

    Returns ``(clipped, base)``: ``clipped[name]`` is the update (reply - sent) or the value, and
    ``base[name]`` says what it is added back onto (1.0 = the sent array, 0.0 = nothing).
    """
    deltas: dict[str, np.ndarray] = {}
    base: dict[str, float] = {}
    for name in sorted(reply.arrays):  # sorted: noise draws must not depend on dict order
        value = reply.arrays[name]
        if not _is_float(value):
            continue
        ref = sent.arrays.get(name)
        if ref is not None and ref.shape == value.shape and _is_float(ref):
            deltas[name] = value.astype(np.float64) - ref.astype(np.float64)
            base[name] = 1.0
        else:
            deltas[name] = value.astype(np.float64)
            base[name] = 0.0
    norm = math.sqrt(sum(float(np.vdot(d, d)) for d in deltas.values()))
    # A non-finite upload is passed on unchanged (NaN stays NaN) so the server's validation sees it.
    scale = clip / norm if math.isfinite(norm) and norm > clip else 1.0
    return {name: d * scale for name, d in deltas.items()}, base


def privatise(
    reply: Message, sent: Message, clip: float, noise_multiplier: float, noise: np.random.Generator
) -> Message:
    """``reply`` with its floating-point arrays clipped jointly to ``clip`` and Gaussian noise added.

    ``sent`` is what the client received this round. Arrays keep their names, shapes and dtypes;
    non-float arrays and ``meta`` are passed through unchanged.
    """
    clipped, base = clip_upload(reply, sent, clip)
    arrays = dict(reply.arrays)
    std = noise_multiplier * clip
    for name, value in clipped.items():  # clip_upload's order is sorted
        noisy = value + noise.normal(0.0, std, size=value.shape)
        if base[name]:
            noisy = noisy + sent.arrays[name].astype(np.float64)
        arrays[name] = noisy.astype(reply.arrays[name].dtype)
    return Message(arrays, dict(reply.meta))


class PrivateClient:
    """An algorithm's client half whose uploads are privatised (see the module docstring).

    The inner client must not modify the message it is given in place (the Algorithm contract):
    ``reply - sent`` is taken against the message as received.
    """

    def __init__(self, inner: object, config: PrivacyConfig) -> None:
        self.inner = inner
        self.config = config

    def fit(self, message: Message, state: Message, data: ClientData, rng: Rng) -> tuple[Message, Message]:
        """The inner ``fit``; the reply is clipped and noised, the state (which stays here) is not."""
        reply, new_state = self.inner.fit(message, state, data, rng)  # type: ignore[attr-defined]
        noise = rng.numpy(NOISE_PURPOSE)
        return privatise(reply, message, self.config.clip, self.config.noise_multiplier, noise), new_state

    def evaluate(self, message: Message, state: Message, data: ClientData) -> Message:
        """The inner ``evaluate`` unchanged (its metrics are not covered by the guarantee)."""
        return self.inner.evaluate(message, state, data)  # type: ignore[attr-defined]


def private_client(inner: object, config: PrivacyConfig) -> object:
    """``inner`` wrapped in :class:`PrivateClient` when privacy is enabled, else ``inner`` itself.

    Returning the bare client when off keeps runs without DP bit-identical to runs before DP existed.
    """
    return PrivateClient(inner, config) if config.enabled else inner
