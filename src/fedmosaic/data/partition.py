"""Partitioning: which modalities each client holds (a mix of counts or a drop rate), and which
samples (natural owners, IID, or Dirichlet over labels), with whole blocks kept together."""

from __future__ import annotations

import numpy as np


def parse_mix(mix: dict[str, int], modality_names: tuple[str, ...]) -> list[tuple[frozenset[str], int]]:
    """Validate a modality mix (``{"image": 2, "text": 2, "image+text": 6}``) against a task.

    Two keys spell a mix for any data set: ``each`` (that many clients per single modality) and
    ``all`` (clients holding every modality); ``{"each": 2, "all": 6}`` is ``acc:2, gyro:2,
    acc+gyro:6`` on a sensor task. Raises ``ValueError`` naming the offending group; the order of
    groups is kept.
    """
    out: list[tuple[frozenset[str], int]] = []
    seen: set[frozenset[str]] = set()
    expanded: list[tuple[str, int]] = []
    for group, count in mix.items():
        if group.strip() == "each":
            expanded.extend((name, count) for name in modality_names)
        elif group.strip() == "all":
            expanded.append(("+".join(modality_names), count))
        else:
            expanded.append((group, count))
    for group, count in expanded:
        parts = [p.strip() for p in group.split("+")]
        unknown = [p for p in parts if p not in modality_names]
        if unknown or not all(parts):
            raise ValueError(
                f"group {group!r} names modality {unknown[0] if unknown else ''!r}, "
                f"but the data set has {', '.join(modality_names)}"
            )
        held = frozenset(parts)
        if count < 0:
            raise ValueError(f"group {group!r} has a negative count ({count})")
        if held in seen:
            if len(modality_names) == 1 and group == modality_names[0]:  # 'each' and 'all' coincide
                out = [(h, c + count) if h == held else (h, c) for h, c in out]
                continue
            raise ValueError(f"group {group!r} is listed twice")
        seen.add(held)
        out.append((held, count))
    return out


def drop_modalities(
    n_clients: int, modality_names: tuple[str, ...], rate: float, rng: np.random.Generator
) -> list[frozenset[str]]:
    """Each client drops each modality with probability ``rate``; a client that would drop all of
    them keeps one, chosen uniformly (every client must hold something)."""
    out = []
    for _ in range(n_clients):
        keep = rng.random(len(modality_names)) >= rate
        if not keep.any():
            keep[rng.integers(len(modality_names))] = True
        out.append(frozenset(n for n, k in zip(modality_names, keep, strict=True) if k))
    return out


def take_blocks(
    candidates: np.ndarray, blocks: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw whole blocks from ``candidates`` (sample indices) in random order until at least ``size``
    samples are taken (overshoot: less than one block). Returns ``(taken, rest)``, both sorted."""
    if size <= 0 or len(candidates) == 0:
        return np.empty(0, dtype=np.int64), np.sort(candidates)
    ids, inverse = np.unique(blocks[candidates], return_inverse=True)
    counts = np.bincount(inverse, minlength=len(ids))
    order = rng.permutation(len(ids))
    needed = np.searchsorted(np.cumsum(counts[order]), size) + 1
    chosen = np.zeros(len(ids), dtype=bool)
    chosen[order[:needed]] = True
    pick = chosen[inverse]
    return np.sort(candidates[pick]), np.sort(candidates[~pick])


def split_natural(indices: np.ndarray, groups: np.ndarray) -> tuple[list[int], list[np.ndarray]]:
    """One part per natural owner present among ``indices``: ``(owner ids, parts)``, owners sorted."""
    owners = np.unique(groups[indices])
    return owners.tolist(), [np.sort(indices[groups[indices] == g]) for g in owners]


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
