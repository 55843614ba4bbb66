"""Global-vector fusion (gvf): single-modality clients borrow the missing modality from global vectors.

The method, part by part (docs/gvf.md has the formulas and the measurements):

1. **Clients** keep their own encoders (never uploaded). Each held modality m is projected by an
   adapter into one shared d-dimensional space, ``h_m = A_m(E_m(x_m))`` (:mod:`.model`). Every
   client's encoders start from the same seeded weights. Clients holding several modalities can
   *align* the projections with a symmetric InfoNCE loss on their pairs (``alignment``, off by
   default; :func:`.maths.info_nce`).
2. **Common data set**: the server sends its proxy set (each client receives only the modalities it
   holds, once). After local training a client uploads the vectors ``h_m`` of the *proxy* samples,
   never of its private samples unless ``allow_private_vectors = true`` (:class:`.wire.FitReply`).
   The server sends back the *proxy anchor*, the mean of all uploaded vectors of each proxy sample
   (:func:`.maths.sample_means`); clients pull their own vector of that sample towards it (one-sided
   InfoNCE against the batch's other samples, ``anchor_weight``), which keeps all private encoders'
   projections in one shared space, sample by sample.
3. **Server, global area**: K-Means per modality on all uploaded vectors (``k`` fixed, the number of
   classes, or by silhouette: :func:`.maths.choose_k`); the Hungarian algorithm pairs the clusters
   of every modality with those of the first modality by cosine similarity of their centres
   (:func:`.maths.pair_clusters`); row i of every modality's paired centres is global-vector pair i
   (:func:`.maths.global_vectors`).
4. **Fusion** (:mod:`fedmosaic.models.fusion`): cross-attention between the modality tokens gives Z,
   a forget gate mixes the client's own representation with Z into R, a classifier on R. A missing
   modality's token is filled from the global vectors. Complete clients also train with each
   modality replaced by its fill, so the shared classifier knows filled inputs.
5. **Global update**: the adapters, the cross-attention block, the gate and the classifier (θ) are
   averaged over the clients that hold them, weighted by contribution
   (:func:`.maths.contribution_weights`): ``w_k ∝ n_k · exp(Δ_k / τ)`` where
   ``Δ_k = L_val(θ_global, φ_k) − L_val(θ_k, φ_k)`` is how much client k's own update of θ lowered
   the cross-entropy on its own validation set (φ_k: its trained encoders, held fixed).
6. **Update step**: before evaluation every client takes in the aggregated θ and the new global
   vectors, and is evaluated with its own encoders under them (``update_clients``).

The halves: :class:`.client.GVFClient` (1, 2, Δ of 5) and :class:`.server.GVFServer` (2, 3, 5, 6);
their messages are the records of :mod:`.wire`. Three registered variants change what crosses the
wire; switches that only change a loss, a weight or the clustering are config keys (:mod:`.config`):

- ``gvf``: the method;
- ``gvf-local``: the like-for-like local-only control, gvf's model trained on each client's own
  data, nothing exchanged;
- ``gvf-shared-encoders``: a DIAGNOSTIC that breaks the design, the encoders aggregated too.
"""

from __future__ import annotations

from dataclasses import replace

from fedmosaic.algorithms.base import SELF_EVALUATION, EncoderAlgorithm
from fedmosaic.algorithms.gvf.client import GVFClient, GVFLocalClient, SharedEncodersClient
from fedmosaic.algorithms.gvf.config import GVFConfig, GVFLocalConfig
from fedmosaic.algorithms.gvf.maths import (
    choose_k,
    contribution_weights,
    global_vectors,
    info_nce,
    pair_clusters,
    sample_means,
    unit_rows,
    weighted_sum,
)
from fedmosaic.algorithms.gvf.model import ENCODERS, SHARED, build_model, shared_names
from fedmosaic.algorithms.gvf.server import GVFLocalServer, GVFServer, SharedEncodersServer
from fedmosaic.algorithms.gvf.wire import (
    ANCHOR,
    BANK,
    PRIV,
    PROXY,
    PSEUDO,
    VEC,
    ClientState,
    FitInstruction,
    FitReply,
    Update,
)
from fedmosaic.algorithms.registry import register
from fedmosaic.core.algorithm import AlgorithmConfig, Uploads

__all__ = [
    "ANCHOR",
    "BANK",
    "ENCODERS",
    "GVF",
    "PRIV",
    "PROXY",
    "PSEUDO",
    "SHARED",
    "UPLOADS",
    "VEC",
    "ClientState",
    "FitInstruction",
    "FitReply",
    "GVFClient",
    "GVFConfig",
    "GVFLocal",
    "GVFLocalConfig",
    "GVFServer",
    "GVFSharedEncoders",
    "Update",
    "build_model",
    "choose_k",
    "contribution_weights",
    "global_vectors",
    "info_nce",
    "pair_clusters",
    "sample_means",
    "shared_names",
    "unit_rows",
    "weighted_sum",
]

# What a gvf client uploads: θ of its modalities, its proxy vectors and the contribution's scalars.
UPLOADS = Uploads(
    fit_arrays=("adapters.{m}.*", "fusion.*", "gate.*", "classifier.*", "vec/{m}"),
    fit_meta=("n_train", "train_loss", "delta", "val_loss_global", "val_loss_local"),
    evaluate_meta=SELF_EVALUATION,
)


def _with_private_vectors(uploads: Uploads, config: AlgorithmConfig) -> Uploads:
    """``uploads`` plus the vectors of private samples under ``allow_private_vectors`` (off by default)."""
    if not isinstance(config, GVFConfig):
        raise TypeError(f"config: expected a GVFConfig, got {type(config).__name__}")
    if not config.allow_private_vectors:
        return uploads
    return replace(uploads, fit_arrays=(*uploads.fit_arrays, f"{PRIV}{{m}}"))


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
        """The default uploads, plus vectors of private samples under ``allow_private_vectors``."""
        return _with_private_vectors(cls.uploads, config)


@register
class GVFLocal(EncoderAlgorithm):
    name = "gvf-local"
    Config = GVFLocalConfig
    Server = GVFLocalServer
    Client = GVFLocalClient
    personalised = True
    uploads = Uploads(fit_meta=UPLOADS.fit_meta, evaluate_meta=SELF_EVALUATION)
    summary = "control: gvf's model trained on each client's own data, nothing exchanged"


@register
class GVFSharedEncoders(EncoderAlgorithm):
    name = "gvf-shared-encoders"
    Config = GVFConfig
    Server = SharedEncodersServer
    Client = SharedEncodersClient
    personalised = True
    uploads = replace(UPLOADS, fit_arrays=(f"{ENCODERS}{{m}}.*", *UPLOADS.fit_arrays))
    summary = "DIAGNOSTIC, breaks gvf's design: gvf with the encoders aggregated too (what private ones cost)"

    @classmethod
    def declared_uploads(cls, config: AlgorithmConfig) -> Uploads | None:
        """The encoders and the default uploads, plus vectors of private samples when allowed."""
        return _with_private_vectors(cls.uploads, config)
