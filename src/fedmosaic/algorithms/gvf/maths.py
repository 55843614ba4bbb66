"""gvf's formulas, each a plain function of arrays: no model, no message, no config.

- :func:`contribution_weights`: ``w_k ∝ n_k · exp(Δ_k / τ)``, the global update's weights;
- :func:`weighted_sum`: ``Σ_k w_k θ_k`` in float64;
- :func:`global_vectors`: K-Means per modality, each modality's clusters paired with the first
  modality's by :func:`pair_clusters` (Hungarian assignment on cosine similarity);
- :func:`choose_k`: the number of clusters with the best silhouette;
- :func:`sample_means`: the proxy anchor, the mean of every vector uploaded for each proxy sample;
- :func:`info_nce`: the contrastive loss behind the alignment and the anchor.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from torch.nn import functional as F


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


def weighted_sum(arrays: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """``Σ_k w_k a_k`` in float64 (the weights are already normalised), summed in the given order."""
    return sum(w * a.astype(np.float64) for w, a in zip(weights, arrays, strict=True))  # type: ignore[return-value]


def unit_rows(x: np.ndarray) -> np.ndarray:
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
    rows, cols = linear_sum_assignment(unit_rows(reference) @ unit_rows(other).T, maximize=True)
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
        sims.append(float((unit_rows(centred[ref]) * unit_rows(centred[m][partner])).sum(1).mean()))
    return out, float(np.mean(sims)) if sims else float("nan")


def sample_means(n_samples: int, dim: int, uploads: Iterable[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The mean of every vector uploaded for each sample: ``uploads`` yields ``(rows, vectors)``,
    row ``rows[j]`` of the result receiving ``vectors[j]``; added in the order given.

    A sample no vector was uploaded for is NaN (clients skip it).
    """
    total = np.zeros((n_samples, dim))
    count = np.zeros(n_samples)
    for rows, vectors in uploads:
        total[rows] += vectors
        count[rows] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / count[:, None]).astype(np.float32)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float, symmetric: bool = True) -> torch.Tensor:
    """InfoNCE between paired rows of ``a`` and ``b``: row i of ``a`` must be closer (cosine) to row
    i of ``b`` than to the batch's other rows. Symmetric (CLIP's loss) averages both directions;
    one-sided scores ``a`` against ``b`` only (the proxy anchor, where ``b`` is a fixed target)."""
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature
    target = torch.arange(len(a), device=a.device)
    if not symmetric:
        return F.cross_entropy(logits, target)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
