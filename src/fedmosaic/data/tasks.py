"""Assemble a Task from a run config: load the data set once, then split it by index.

Order of work, and why:
1. load (the loader validates its files; bad samples raise or are skipped and counted);
2. the server's test, proxy and labelled sets, as *whole blocks* (overlapping windows of one
   recording segment, the captions of one photo, the pairs of one image never straddle two parts),
   unless the data fixes a sample's role (official test users, a ``server/test`` folder);
3. clients from what is left: natural owners, IID or Dirichlet over labels; which modalities each
   holds (a mix of counts or a drop rate), intersected with what each sample really has. A natural
   owner that ends up with no client (every sample bad and skipped, or all taken by the server's sets)
   is a *lost client*: recorded in the task (``data_summary()["lost_clients"]``), and an error when
   ``clients.mix`` gave it a group, unless ``clients.allow_lost``;
4. text tokenised with the model's tokenizer (a WordPiece trained on client data only for the
   small random BERT); sensor and audio channels standardised with client-training statistics only;
5. optionally the frozen-encoder mode replaces pretrained modalities by cached embeddings;
6. the scenarios (missing or noisy labels, per-sample missing modalities: data/scenarios.py) change
   the clients' training views only, after everything above, so the split itself is the same.

Once the parts exist, test classes that no client has a single training sample of are named: no
federated model can learn them, so their test accuracy can only be 0 and they lower every overall
score. The run says so (a ``fedmosaic.data`` logging warning, shown on the terminal) and records
them in ``Task.extras["test_classes_without_clients"]`` (``summary.json``: ``data``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from fedmosaic.core.errors import TaskSplitError
from fedmosaic.core.modality import ClientSpec, Modality
from fedmosaic.core.seeding import numpy_rng
from fedmosaic.core.task import ClientData, Task, TaskInfo, View
from fedmosaic.data.preprocess import prepare_store
from fedmosaic.data.registry import LoadContext, LoadedData, get_dataset
from fedmosaic.data.scenarios import Scenario, apply_scenarios
from fedmosaic.data.splitting import (
    client_parts,
    lost_holdings,
    lost_message,
    owner_client_id,
    server_parts,
    train_val,
)
from fedmosaic.data.streams import streams_from_recordings

if TYPE_CHECKING:
    from fedmosaic.config import RunConfig

# Called with the task's description before the heavy work (see build_task); raises to stop the build.
InfoCheck = Callable[[TaskInfo], None]

log = logging.getLogger("fedmosaic.data")


def load_data(cfg: RunConfig) -> LoadedData:
    """Run the configured data set's loader (its bad samples raise or are recorded as skipped)."""
    entry = get_dataset(cfg.task.dataset)
    ctx = LoadContext(cfg.task.data_dir, cfg.seed, cfg.task.on_bad_sample)
    loaded = entry.load(cfg.dataset_options(), ctx)
    loaded.skipped = list(dict.fromkeys([*loaded.skipped, *ctx.skipped]))
    if len(loaded) == 0:
        raise TaskSplitError(f"task.dataset: {cfg.task.dataset!r} loaded no samples")
    return loaded


def task_outline(cfg: RunConfig) -> TaskInfo | None:
    """The task's description from the config alone, before any data is read; ``None`` when the data
    set does not declare its modalities (``DatasetEntry.modalities``).

    Modalities as the loader will return them (frozen encoders already applied); the classes are not
    known yet (``num_classes`` 0).
    """
    entry = get_dataset(cfg.task.dataset)
    if entry.modalities is None:
        return None
    return _outline(cfg, entry.modalities(cfg.dataset_options()), ())


def _outline(cfg: RunConfig, modalities: tuple[Modality, ...], class_names: tuple[str, ...]) -> TaskInfo:
    if cfg.model.freeze_encoders:
        from fedmosaic.models.frozen import freezable, frozen_modality

        model = cfg.model
        modalities = tuple(frozen_modality(m, model) if freezable(m, model) else m for m in modalities)
    return TaskInfo(cfg.task.dataset, modalities, len(class_names), class_names)


def build_task(cfg: RunConfig, check: InfoCheck | None = None) -> Task:
    """Load ``cfg.task.dataset`` and split it from ``cfg.seed`` into test, proxy, labelled, clients.

    Every part is a disjoint index array into one store; each client's mask holds the modalities its
    group names and its samples have.

    ``check`` (the engines pass their algorithms' ``check_task``) is called with the task's
    description before the heavy work: with its outline before loading when the data set declares its
    modalities, and with the loaded data's description before splitting, tokenising and encoding.
    """
    if check is not None and (outline := task_outline(cfg)) is not None:
        check(outline)  # nothing read yet: a misfit costs no loading
    loaded = load_data(cfg)
    if check is not None:
        check(_outline(cfg, loaded.modalities, loaded.class_names))
    names = tuple(m.name for m in loaded.modalities)
    n, m = len(loaded), len(names)
    rng = numpy_rng(cfg.seed, 0, "task", "split")
    role = loaded.role if loaded.role is not None else np.zeros(n, dtype=np.int8)
    blocks = loaded.blocks if loaded.blocks is not None else np.arange(n)
    present = loaded.present if loaded.present is not None else np.ones((n, m), dtype=bool)

    server, pool = server_parts(cfg, role, blocks, rng)
    owners, parts, lost = client_parts(cfg, loaded, role, pool, rng)
    holdings, lost_clients = lost_holdings(cfg, loaded, names, owners, len(parts), lost, rng)
    if lost_clients and cfg.clients.mix is not None and not cfg.clients.allow_lost:
        raise TaskSplitError(lost_message(lost_clients, len(parts) + len(lost), cfg))

    modalities, store = prepare_store(cfg, loaded, np.concatenate(parts))
    info = TaskInfo(cfg.task.dataset, modalities, len(loaded.class_names), loaded.class_names)

    def view(idx: np.ndarray, keep: np.ndarray | None = None) -> View:
        mask = present[idx] if keep is None else present[idx] & keep[None, :]
        rows = mask.any(axis=1)
        return View(info, store, loaded.labels, idx[rows], mask[rows])

    test = view(server["test"])
    # Clients of one modality group see the test set through the same view: one copy per group,
    # not per client (with 1,000 clients and a 6,100-sample test set, per-client copies were 61 MB).
    test_through: dict[frozenset[str], View] = {}
    clients = []
    for k, (held, idx) in enumerate(zip(holdings, parts, strict=True)):
        keep = np.array([name in held for name in names])
        train_idx, val_idx = train_val(idx, role, cfg.task.val_fraction, rng)
        train, val = view(train_idx, keep), view(val_idx, keep)
        client_id = owner_client_id(loaded, owners[k]) if owners else f"client_{k}"
        if len(train) == 0:
            raise TaskSplitError(
                f"clients.mix: client {client_id} holds {info.group(held) or 'nothing'} but none of its "
                "samples has those modalities"
            )
        held = frozenset(held) & train.modalities  # a folder client without captions holds no text
        spec = ClientSpec(client_id, held, len(train), info.group(held))
        if held not in test_through:
            test_through[held] = test.restrict(held)
        clients.append(ClientData(spec, train, val.restrict(held), test_through[held]))
    if cfg.clients.per_round is not None and cfg.clients.per_round > len(clients):
        raise TaskSplitError(f"clients.per_round: {cfg.clients.per_round} exceeds the {len(clients)} clients")
    unheld = unheld_test_classes(loaded.labels, loaded.class_names, test.indices, clients)
    if unheld:
        in_labelled = np.bincount(loaded.labels[server["labelled"]], minlength=len(loaded.class_names))
        labelled = {name: int(in_labelled[loaded.class_names.index(name)]) for name in unheld}
        log.warning(_unheld_message(unheld, labelled))
    extras: dict[str, Any] = {
        **loaded.extras,
        "skipped": loaded.skipped,
        "test_classes_without_clients": unheld,
        "lost_clients": lost_clients,
    }
    scenario = Scenario(cfg.task.label_missing_rate, cfg.task.label_noise_rate, cfg.clients.sample_drop_rate)
    if scenario.active:  # after the split, on client training views only (data/scenarios.py)
        clients, extras["scenarios"] = apply_scenarios(
            clients, loaded.labels, info.num_classes, scenario, cfg.seed
        )
    streams = None
    if loaded.recordings:
        stats = loaded.extras.get("normalisation", {})
        streams = streams_from_recordings(loaded.recordings, stats, numpy_rng(cfg.seed, 0, "task", "streams"))
    task = Task(
        info,
        store,
        loaded.labels,
        clients,
        view(server["proxy"]),
        view(server["labelled"]),
        test,
        extras,
        streams,
    )
    task.check_disjoint()
    return task


def unheld_test_classes(
    labels: np.ndarray, class_names: tuple[str, ...], test_idx: np.ndarray, clients: list[ClientData]
) -> dict[str, int]:
    """``{class name: test samples}`` of every class in the test set that no client trains on.

    Only client *training* samples count: a class a client holds only in its validation set is
    still never learnt from.
    """
    held = np.zeros(len(class_names), dtype=bool)
    for client in clients:
        held[labels[client.train.indices]] = True
    counts = np.bincount(labels[test_idx], minlength=len(class_names))
    return {class_names[c]: int(counts[c]) for c in np.flatnonzero((counts > 0) & ~held)}


def _unheld_message(unheld: dict[str, int], labelled: dict[str, int]) -> str:
    """One line naming the test classes no client trains on, and why that matters.

    ``labelled`` counts their samples in the server's labelled set: the semi-supervised algorithms
    (fedmekt, mmfedavg, mmfedprox) fit their classifier there, so for them such a class is learnable.
    """
    names = ", ".join(f"{name!r} ({n} test sample{'s' if n != 1 else ''})" for name, n in unheld.items())
    text = (
        f"no client has a training sample of test class {names}: a model trained on client data "
        "can only score 0 on it"
        if len(unheld) == 1
        else f"no client has a training sample of {len(unheld)} test classes, {names}: a model trained "
        "on client data can only score 0 on them"
    )
    on_server = ", ".join(f"{name!r} ({n})" for name, n in labelled.items() if n)
    if on_server:
        text += (
            f" (the server's labelled set, which only semi-supervised algorithms train on, has {on_server})"
        )
    return text
