"""Partitioning: which modalities each client holds, and which samples (IID or Dirichlet over labels)."""

from __future__ import annotations

import numpy as np


def parse_mix(mix: dict[str, int], modality_names: tuple[str, ...]) -> list[tuple[frozenset[str], int]]:
    """Validate a modality mix (``{"image": 2, "text": 2, "image+text": 6}``) against a task.

    Raises ``ValueError`` naming the offending group; the order of groups is kept.
    """
    out: list[tuple[frozenset[str], int]] = []
    seen: set[frozenset[str]] = set()
    for group, count in mix.items():
        parts = [p.strip() for p in group.split("+")]
        unknown = [p for p in parts if p not in modality_names]
        if unknown or not all(parts):
            raise ValueError(
                f"group {group!r} names modality {unknown[0] if unknown else ''!r}, "
                f"but the data set has {', '.join(modality_names)}"
            )
        held = frozenset(parts)
        if held in seen:
            raise ValueError(f"group {group!r} is listed twice")
        if count < 0:
            raise ValueError(f"group {group!r} has a negative count ({count})")
        seen.add(held)
        out.append((held, count))
    return out


def client_modalities(mix: list[tuple[frozenset[str], int]]) -> list[frozenset[str]]:
    """One modality set per client, groups in the mix's order."""
    return [held for held, count in mix for _ in range(count)]


def split_iid(indices: np.ndarray, n_parts: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle and deal ``indices`` into ``n_parts`` near-equal parts."""
    return [np.sort(p) for p in np.array_split(rng.permutation(indices), n_parts)]


def split_dirichlet(
    indices: np.ndarray,
    labels: np.ndarray,
    n_parts: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = 2,
) -> list[np.ndarray]:
    """Label-skewed split: each class's samples are divided by proportions drawn from Dir(alpha).

    Redraws (bounded) until every part has ``min_size`` samples, then falls back to moving samples
    from the largest parts so that no client is left empty.
    """
    classes = np.unique(labels[indices])
    parts: list[list[int]] = [[] for _ in range(n_parts)]
    for _attempt in range(20):
        parts = [[] for _ in range(n_parts)]
        for c in classes:
            members = rng.permutation(indices[labels[indices] == c])
            cuts = (np.cumsum(rng.dirichlet(np.full(n_parts, alpha))) * len(members)).astype(int)[:-1]
            for k, chunk in enumerate(np.split(members, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            break
    for k in range(n_parts):
        while len(parts[k]) < min_size:
            donor = max(range(n_parts), key=lambda j: len(parts[j]))
            parts[k].append(parts[donor].pop())
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
