"""Which samples go where: the server's sets, the clients' parts, what each client holds, who is lost.

The split is by index and seeded (``numpy_rng(seed, 0, "task", "split")``), in the order
:func:`fedmosaic.data.tasks.build_task` calls these functions, so the same seed gives the same
parts. The server's test, proxy and labelled sets are whole blocks (windows of one recording,
captions of one photo never straddle two parts) unless the data fixes a sample's role; clients come
from what is left. A natural owner left without a client is a *lost client*, recorded with why.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from fedmosaic.core.errors import TaskSplitError
from fedmosaic.core.modality import group_name
from fedmosaic.data.partition import (
    client_modalities,
    drop_modalities,
    parse_mix,
    split_dirichlet,
    split_iid,
    split_natural,
    take_blocks,
)
from fedmosaic.data.registry import (
    ROLE_FREE,
    ROLE_LABELLED,
    ROLE_PROXY,
    ROLE_TEST,
    ROLE_VAL,
    LoadedData,
    get_dataset,
)

if TYPE_CHECKING:
    from fedmosaic.config import RunConfig


def server_parts(
    cfg: RunConfig, role: np.ndarray, blocks: np.ndarray, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Test, proxy and labelled index sets (whole blocks, or as the data fixes them) and the rest."""
    n = len(role)
    free = np.flatnonzero(role == ROLE_FREE)
    default = min(200, round(0.1 * n))
    wanted = {
        "test": (ROLE_TEST, max(1, round(cfg.task.test_fraction * n))),
        "proxy": (ROLE_PROXY, default if cfg.task.proxy_size is None else cfg.task.proxy_size),
        "labelled": (ROLE_LABELLED, default if cfg.task.labelled_size is None else cfg.task.labelled_size),
    }
    parts: dict[str, np.ndarray] = {}
    for name, (fixed_role, size) in wanted.items():
        fixed = np.flatnonzero(role == fixed_role)
        if len(fixed):
            parts[name] = fixed
        else:
            parts[name], free = take_blocks(free, blocks, size, rng)
    pool = np.sort(np.concatenate([free, np.flatnonzero(role == ROLE_VAL)]))
    if len(pool) == 0:
        taken = sum(len(p) for p in parts.values())
        raise TaskSplitError(
            f"task.proxy_size/labelled_size/test_fraction: the server sets take {taken} of {n} samples, "
            "leaving none for clients"
        )
    return parts, pool


def client_parts(
    cfg: RunConfig, loaded: LoadedData, role: np.ndarray, pool: np.ndarray, rng: np.random.Generator
) -> tuple[list[int], list[np.ndarray], list[tuple[int, str]]]:
    """The samples of each client: ``(natural owner ids or [], parts, lost owners)``.

    Lost owners (natural split only) are ``(owner id, why)``; a lost owner still counts for the mix,
    which is written for every owner the data has.
    """
    names = tuple(m.name for m in loaded.modalities)
    if cfg.task.partition == "natural":
        if loaded.groups is None:
            raise TaskSplitError(
                f"task.partition: data set {cfg.task.dataset!r} has no natural clients; use iid or dirichlet"
            )
        owners, parts = split_natural(pool, loaded.groups)
        lost = lost_owners(cfg, loaded, role, owners)
        wanted, expected = _configured_count(cfg, names), len(parts) + len(lost)
        if wanted is not None and wanted != expected:
            unit = get_dataset(cfg.task.dataset).natural_unit or "owner"
            raise TaskSplitError(
                f"clients.mix: the natural split of {cfg.task.dataset!r} gives {expected} clients (one per "
                f"{unit} outside the server's sets), but the config asks for {wanted}; give a mix that sums "
                f'to {expected}, or clients.mix="" for every modality at every client'
            )
        return owners, parts, lost
    n_clients = _configured_count(cfg, names) or 10
    per_client_min = 2 if cfg.task.val_fraction == 0 else 3
    if len(pool) < per_client_min * n_clients:
        raise TaskSplitError(
            f"clients.count: {n_clients} clients need at least {per_client_min * n_clients} "
            f"samples, but only {len(pool)} are left for clients"
        )
    if cfg.task.partition == "dirichlet":
        return [], split_dirichlet(pool, loaded.labels, n_clients, cfg.task.alpha, rng, per_client_min), []
    return [], split_iid(pool, n_clients, rng), []


def lost_owners(
    cfg: RunConfig, loaded: LoadedData, role: np.ndarray, kept: list[int]
) -> list[tuple[int, str]]:
    """Natural owners the data names (``group_names``) that got no client, and why.

    An owner whose every sample has a server role fixed by the data (official test users) is the
    server's by design, not lost. The others had samples meant for training, or none at all: every
    one bad and skipped, or an empty samples file.
    """
    assert loaded.groups is not None
    n_owners = max(len(loaded.group_names), int(loaded.groups.max(initial=-1)) + 1)
    owned = loaded.groups >= 0
    total = np.bincount(loaded.groups[owned], minlength=n_owners)
    server_role = np.isin(role, (ROLE_TEST, ROLE_PROXY, ROLE_LABELLED))
    fixed = np.bincount(loaded.groups[owned & server_role], minlength=n_owners)
    skip = cfg.task.on_bad_sample == "skip"
    lost = []
    for owner in sorted(set(range(n_owners)) - set(kept)):
        if total[owner] == 0:
            why = (
                'no sample of it loaded (every one was bad and skipped: task.on_bad_sample = "skip")'
                if skip
                else "no sample of it loaded (its data holds none)"
            )
            lost.append((owner, why))
        elif fixed[owner] < total[owner]:
            lost.append(
                (owner, f"all {total[owner]} of its samples went to the server's test/proxy/labelled sets")
            )
    return lost


def lost_holdings(
    cfg: RunConfig,
    loaded: LoadedData,
    names: tuple[str, ...],
    owners: list[int],
    n_parts: int,
    lost: list[tuple[int, str]],
    rng: np.random.Generator,
) -> tuple[list[frozenset[str]], list[dict[str, str]]]:
    """What each kept client holds, and the lost clients as records ``{id, group, reason}``.

    With a mix, the modalities are dealt over every owner the data has, lost ones included (the mix
    counts them), so a lost client takes its own group with it. Without a mix they are dealt over the
    kept clients only, exactly as before lost clients were recorded (the same numbers as before).
    """
    if not lost or cfg.clients.mix is None:
        holdings = deal_modalities(cfg, names, n_parts, rng)
        return holdings, [{"id": owner_client_id(loaded, k), "group": "", "reason": why} for k, why in lost]
    everyone = sorted([*owners, *(k for k, _ in lost)])
    by_owner = dict(zip(everyone, deal_modalities(cfg, names, len(everyone), rng), strict=True))
    records = [
        {"id": owner_client_id(loaded, k), "group": group_name(by_owner[k], names), "reason": why}
        for k, why in lost
    ]
    return [by_owner[k] for k in owners], records


def lost_message(lost: list[dict[str, str]], expected: int, cfg: RunConfig) -> str:
    """The one-line error for lost clients under a ``clients.mix``: who, which group, why, the way out."""
    which = "; ".join(f"{c['id']} (group {c['group']}): {c['reason']}" for c in lost)
    verb, pronoun = ("was", "it") if len(lost) == 1 else ("were", "them")
    return (
        f"clients.mix: {len(lost)} of the {expected} clients {verb} lost, {which}; fix the data, or set "
        f"clients.allow_lost = true to run without {pronoun}"
    )


def _configured_count(cfg: RunConfig, names: tuple[str, ...]) -> int | None:
    if cfg.clients.mix is not None:
        return cfg.clients.total_for(names)
    return cfg.clients.count


def deal_modalities(
    cfg: RunConfig, names: tuple[str, ...], n_clients: int, rng: np.random.Generator
) -> list[frozenset[str]]:
    """Which modalities each client holds: the mix (shuffled over natural owners), a drop rate, or all."""
    if cfg.clients.drop_rate is not None:
        return drop_modalities(n_clients, names, cfg.clients.drop_rate, rng)
    if cfg.clients.mix is None:
        return [frozenset(names)] * n_clients
    held = client_modalities(parse_mix(cfg.clients.mix, names))
    if cfg.task.partition == "natural":  # which user gets which sensors must not follow user ids
        held = [held[i] for i in rng.permutation(len(held))]
    return held


def train_val(
    idx: np.ndarray, role: np.ndarray, val_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A client's own validation samples: those the data marks ``val``, else a random fraction."""
    fixed = role[idx] == ROLE_VAL
    if fixed.any():
        return np.sort(idx[~fixed]), np.sort(idx[fixed])
    idx = rng.permutation(idx)
    n_val = round(val_fraction * len(idx))
    return np.sort(idx[n_val:]), np.sort(idx[:n_val])


def owner_client_id(loaded: LoadedData, owner: int) -> str:
    """A natural owner's client id: its name from the data, made safe for folder and record names."""
    name = loaded.group_names[owner] if owner < len(loaded.group_names) else f"client_{owner}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
