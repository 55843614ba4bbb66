"""gvf's model (:class:`~fedmosaic.models.fusion.GVFModel`) for a run, and which of its parts are shared.

A parameter's top-level module says whose it is: ``encoders.<m>`` stay on the client; the shared part
θ is ``adapters.<m>``, ``fusion`` (cross-attention), ``gate`` and ``classifier``.
"""

from __future__ import annotations

from collections.abc import Iterable

from fedmosaic.algorithms.gvf.config import GVFConfig
from fedmosaic.core.algorithm import Settings
from fedmosaic.core.seeding import SERVER, torch_seed, torch_seeded
from fedmosaic.models.build import build_encoder
from fedmosaic.models.fusion import GVFModel

SHARED = ("adapters.", "fusion.", "gate.", "classifier.")  # θ, the global-update part
ENCODERS = "encoders."  # private: uploaded only by the gvf-shared-encoders diagnostic


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
    modalities: Iterable[str], classifier: bool = True, encoders: bool = False
) -> tuple[str, ...]:
    """Prefixes of the shared part a holder of ``modalities`` trains: its adapters and the fusion
    (cross-attention, gate), and the classifier unless it stays on the client (``classifier=False``);
    with ``encoders`` (the gvf-shared-encoders diagnostic) its encoders too."""
    held = sorted(modalities)
    own_encoders = tuple(f"{ENCODERS}{m}." for m in held) if encoders else ()
    return own_encoders + tuple(f"adapters.{m}." for m in held) + SHARED[1 : 4 if classifier else 3]


def own_names(modalities: Iterable[str]) -> tuple[str, ...]:
    """Prefixes of everything a holder of ``modalities`` keeps in its state: its encoders and its
    whole shared part (a personal classifier included)."""
    held = sorted(modalities)
    return tuple(f"{ENCODERS}{m}." for m in held) + shared_names(held)
