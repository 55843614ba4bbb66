"""Algorithms by name. Entry points (``fedmosaic.algorithms``) load on first lookup; a built-in's
module is imported when its name is looked up.

A plug-in registers with :func:`register` when its module is imported (see :mod:`fedmosaic.core.plugins`).
Listing the names (``fedmosaic algorithms``) and checking a config's names import no algorithm
module, and so not torch: the built-ins are declared below by name, module and one-line summary
(``tests/test_registry_lazy.py`` checks the table against the classes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedmosaic.core.plugins import Registry

if TYPE_CHECKING:
    from fedmosaic.core.algorithm import Algorithm

# name -> (the module whose import registers it, the class's ``summary``)
BUILTINS: dict[str, tuple[str, str]] = {
    "centralized": (
        "fedmosaic.algorithms.centralized",
        "all client training data pooled on one machine (upper bound)",
    ),
    "fedavg": (
        "fedmosaic.algorithms.fedavg",
        "modality-aware FedAvg: each encoder averaged over its holders, the head over all",
    ),
    "fedcmi": (
        "fedmosaic.algorithms.fedcmi",
        "FedCMI: the weak modality learns from the global model's dominant one (cross-modal infiltration)",
    ),
    "fedmekt": (
        "fedmosaic.algorithms.fedmekt",
        "FedMEKT (-C joint / -S separate): proxy-batch embeddings distilled both ways, linear evaluation",
    ),
    "fedopt": (
        "fedmosaic.algorithms.fedopt",
        "FedAvg clients, adaptive server optimiser (Reddi et al. 2021): adam | yogi | adagrad",
    ),
    "fedprox": ("fedmosaic.algorithms.fedprox", "FedAvg with a proximal term mu/2 ||w - w_global||^2"),
    "gvf": (
        "fedmosaic.algorithms.gvf",
        "global-vector fusion: proxy vectors -> K-Means + Hungarian global vectors, gated cross-attention",
    ),
    "gvf-local": (
        "fedmosaic.algorithms.gvf",
        "control: gvf's model trained on each client's own data, nothing exchanged",
    ),
    "gvf-shared-encoders": (
        "fedmosaic.algorithms.gvf",
        "DIAGNOSTIC, breaks gvf's design: gvf with the encoders aggregated too (what private ones cost)",
    ),
    "local": ("fedmosaic.algorithms.local", "each client trains alone (lower bound)"),
    "mmfedavg": (
        "fedmosaic.algorithms.mmfedavg",
        "mmFedAvg: split LSTM autoencoder weights averaged per modality, linear evaluation",
    ),
    "mmfedprox": (
        "fedmosaic.algorithms.mmfedavg",
        "mmFedProx: mmFedAvg with a proximal term toward the global weights",
    ),
    "moon": (
        "fedmosaic.algorithms.moon",
        "MOON (Li et al. 2021): FedAvg + model-contrastive loss on each modality's embedding (mu, tau)",
    ),
    "scaffold": (
        "fedmosaic.algorithms.scaffold",
        "SCAFFOLD (Karimireddy et al. 2020): control variates c (server) and c_i (client), option II",
    ),
}


def _load_builtins() -> None:
    # Importing a module runs its @register decorator; nothing else is used from these modules.
    import importlib

    for module in dict.fromkeys(module for module, _ in BUILTINS.values()):
        importlib.import_module(module)


ALGORITHMS: Registry[type[Algorithm]] = Registry(
    "algorithm",
    "fedmosaic.algorithms",
    _load_builtins,
    declared={name: module for name, (module, _) in BUILTINS.items()},
)


def register(cls: type[Algorithm]) -> type[Algorithm]:
    """Class decorator: make an Algorithm available under ``cls.name``.

    Another class under a taken name is a one-line :class:`~fedmosaic.core.errors.PluginError`.
    """
    from fedmosaic.core.algorithm import Algorithm  # here, not at the top: listing names needs no torch

    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise TypeError(f"@register takes an Algorithm subclass, got {cls!r}")
    ALGORITHMS.add(cls.name, cls, by=cls)
    return cls


def get_algorithm(name: str) -> type[Algorithm]:
    """The algorithm called ``name``; ``KeyError`` lists the known ones."""
    return ALGORITHMS.get(name)


def algorithm_names() -> list[str]:
    """Every registered algorithm's name."""
    return ALGORITHMS.names()


def algorithm_summary(name: str) -> str:
    """The one-line summary of ``name`` (a built-in's from the table above, without importing it)."""
    if name in BUILTINS:
        return BUILTINS[name][1]
    return get_algorithm(name).summary


def ensure_loaded() -> None:
    """Load the built-ins and the ``fedmosaic.algorithms`` entry points now (normally on first lookup)."""
    ALGORITHMS.ensure_loaded()
