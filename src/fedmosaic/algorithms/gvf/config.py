"""``[algorithm]`` block of gvf and its variants: the method's hyperparameters and ablation switches.

What crosses the wire is decided by the variant (``algorithm.name``: ``gvf``, ``gvf-local``,
``gvf-shared-encoders``), not by a switch here; the switches below change a loss, a weight, the
clustering or what a client is evaluated with. Measurements of each switch: docs/gvf.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from fedmosaic.core.algorithm import AlgorithmConfig

K_CHOICES = ("classes", "silhouette")  # algorithm.k besides a number of clusters

# Switches that changed the protocol and became registered variants: key -> the line that says so.
REMOVED_SWITCHES = {
    "federate": "no longer a switch: gvf always federates; its local-only control is the variant "
    'algorithm.name = "gvf-local"',
    "share_encoders": "no longer a switch: the diagnostic that aggregates the encoders too is the "
    'variant algorithm.name = "gvf-shared-encoders"',
}


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
        description="symmetric InfoNCE between a complete client's projections (off by default: it "
        "measured worse for complete clients, docs/gvf.md)",
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
        description="weight of the cross-entropy on proxy samples labelled by the federation (0 = off "
        "by default: it measured worse for image-holding clients on fsdd-digits, docs/gvf.md)",
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

    @model_validator(mode="before")
    @classmethod
    def _removed_switch(cls, data: Any) -> Any:
        # Before the fields: "unknown key" would not say where the switch went.
        if isinstance(data, dict):
            for key, line in REMOVED_SWITCHES.items():
                if key in data:
                    raise ValueError(f"algorithm.{key}: {line}")
        return data

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


class GVFLocalConfig(GVFConfig):
    """``[algorithm]`` block of ``gvf-local``: gvf's keys; nothing is uploaded, so no private vectors."""

    name: str = "gvf-local"

    @model_validator(mode="after")
    def _uploads_nothing(self) -> GVFLocalConfig:
        if self.allow_private_vectors:
            raise ValueError(
                "algorithm.allow_private_vectors: gvf-local exchanges nothing, so it uploads no vectors"
            )
        return self
