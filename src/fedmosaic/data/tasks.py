"""Assemble a Task from a run config: load the data set once, then split it by index."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fedmosaic.core.modality import ClientSpec
from fedmosaic.core.seeding import numpy_rng
from fedmosaic.core.task import ClientData, Task, TaskInfo, View
from fedmosaic.data.partition import client_modalities, parse_mix, split_dirichlet, split_iid
from fedmosaic.data.registry import get_dataset

if TYPE_CHECKING:
    from fedmosaic.config import RunConfig


class TaskSplitError(ValueError):
    """The data set cannot be split as configured (message names the config key)."""


def _full_mask(n: int, m: int) -> np.ndarray:
    return np.ones((n, m), dtype=bool)


def build_task(cfg: RunConfig) -> Task:
    """Load ``cfg.task.dataset`` and split it from ``cfg.seed``: test, proxy, labelled, then clients.

    Every part is a disjoint index array into one store. Each client's mask holds exactly the
    modalities its group names.
    """
    entry = get_dataset(cfg.task.dataset)
    loaded = entry.load(cfg.dataset_options(), cfg.task.data_dir, cfg.seed)
    names = tuple(m.name for m in loaded.modalities)
    info = TaskInfo(cfg.task.dataset, loaded.modalities, len(loaded.class_names), loaded.class_names)
    n, m = len(loaded.labels), len(names)
    mix = cfg.clients.mix or {"+".join(names): cfg.clients.total}
    holdings = client_modalities(parse_mix(mix, names))

    rng = numpy_rng(cfg.seed, 0, "task", "split")
    order = rng.permutation(n)
    n_test = max(1, round(cfg.task.test_fraction * n))
    sizes = {"test": n_test, "proxy": cfg.task.proxy_size, "labelled": cfg.task.labelled_size}
    if sum(sizes.values()) >= n:
        raise TaskSplitError(
            f"task.proxy_size/labelled_size/test_fraction: the server sets take {sum(sizes.values())} of "
            f"{n} samples, leaving none for clients"
        )
    cuts = np.cumsum(list(sizes.values()))
    test_idx, proxy_idx, labelled_idx, client_pool = np.split(order, cuts)
    per_client_min = 2 if cfg.task.val_fraction == 0 else 3
    if len(client_pool) < per_client_min * len(holdings):
        raise TaskSplitError(
            f"clients.count: {len(holdings)} clients need at least {per_client_min * len(holdings)} "
            f"samples, but only {len(client_pool)} are left for clients"
        )
    if cfg.task.partition == "dirichlet":
        parts = split_dirichlet(
            client_pool, loaded.labels, len(holdings), cfg.task.alpha, rng, per_client_min
        )
    else:
        parts = split_iid(client_pool, len(holdings), rng)

    def view(idx: np.ndarray, mask: np.ndarray | None = None) -> View:
        return View(info, loaded.store, loaded.labels, idx, _full_mask(len(idx), m) if mask is None else mask)

    test = view(np.sort(test_idx))
    clients = []
    for k, (held, idx) in enumerate(zip(holdings, parts, strict=True)):
        idx = rng.permutation(idx)
        n_val = round(cfg.task.val_fraction * len(idx))
        train_idx, val_idx = np.sort(idx[n_val:]), np.sort(idx[:n_val])
        keep = np.array([name in held for name in names])
        spec = ClientSpec(f"client_{k}", frozenset(held), len(train_idx), info.group(held))
        clients.append(
            ClientData(
                spec,
                view(train_idx, np.tile(keep, (len(train_idx), 1))),
                view(val_idx, np.tile(keep, (len(val_idx), 1))),
                test.restrict(frozenset(held)),
            )
        )
    task = Task(
        info,
        loaded.store,
        loaded.labels,
        clients,
        view(np.sort(proxy_idx)),
        view(np.sort(labelled_idx)),
        test,
        dict(loaded.extras),
    )
    task.check_disjoint()
    return task
