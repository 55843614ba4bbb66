"""Derived determinism: every random draw comes from (run seed, round, client, purpose).

Nothing reads a global seed. The same key gives the same numbers whatever the engine, the order
clients run in, or a resume in the middle of a run.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

SERVER = "server"


def _word(text: str) -> int:
    # Stable across processes (Python's hash() is salted per process).
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "little")


def seed_sequence(seed: int, round: int, client: str, purpose: str) -> np.random.SeedSequence:
    """The SeedSequence for one (seed, round, client, purpose) key."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.SeedSequence([seed, round, _word(client), _word(purpose)])


def numpy_rng(seed: int, round: int, client: str, purpose: str) -> np.random.Generator:
    """A numpy Generator for one key."""
    return np.random.default_rng(seed_sequence(seed, round, client, purpose))


def torch_seed(seed: int, round: int, client: str, purpose: str) -> int:
    """A 63-bit integer seed for torch, derived from one key."""
    return int(
        seed_sequence(seed, round, client, purpose).generate_state(2, np.uint32).view(np.uint64)[0] >> 1
    )


@contextlib.contextmanager
def torch_seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's default generator seeded, restoring the previous state afterwards.

    Modules such as dropout draw from torch's default generator; forking it keeps those draws a
    function of the derived seed without leaking into whatever runs next.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@dataclass(frozen=True)
class Rng:
    """The random source handed to one half of an algorithm for one round.

    ``numpy("batches")`` and ``torch_seed("init")`` give independent, reproducible streams per purpose.
    """

    seed: int
    round: int
    client: str

    def numpy(self, purpose: str) -> np.random.Generator:
        """A numpy Generator for ``purpose``."""
        return numpy_rng(self.seed, self.round, self.client, purpose)

    def torch_seed(self, purpose: str) -> int:
        """An integer torch seed for ``purpose``."""
        return torch_seed(self.seed, self.round, self.client, purpose)

    def seeded(self, purpose: str) -> contextlib.AbstractContextManager[None]:
        """Context manager: torch's default generator seeded for ``purpose`` (see :func:`torch_seeded`)."""
        return torch_seeded(self.torch_seed(purpose))
