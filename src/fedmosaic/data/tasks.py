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
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from fedmosaic.core.errors import TaskSplitError
from fedmosaic.core.modality import ClientSpec, Modality, group_name
from fedmosaic.core.seeding import numpy_rng
from fedmosaic.core.task import ClientData, Task, TaskInfo, View
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
    LoadContext,
    LoadedData,
    get_dataset,
)
from fedmosaic.data.scenarios import Scenario, apply_scenarios
from fedmosaic.data.streams import streams_from_recordings

if TYPE_CHECKING:
    from fedmosaic.config import RunConfig

# Called with the task's description before the heavy work (see build_task); raises to stop the build.
InfoCheck = Callable[[TaskInfo], None]

# Per-channel standardisation applies to these kinds (images are bytes, text ids, embeddings as given).
STANDARDISED_KINDS = ("timeseries", "audio")

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

    server, pool = _server_parts(cfg, role, blocks, rng)
    owners, parts, lost = _client_parts(cfg, loaded, role, pool, rng)
    holdings, lost_clients = _lost_holdings(cfg, loaded, names, owners, len(parts), lost, rng)
    if lost_clients and cfg.clients.mix is not None and not cfg.clients.allow_lost:
        raise TaskSplitError(_lost_message(lost_clients, len(parts) + len(lost), cfg))

    modalities, store = _prepare_store(cfg, loaded, np.concatenate(parts))
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
        train_idx, val_idx = _train_val(idx, role, cfg.task.val_fraction, rng)
        train, val = view(train_idx, keep), view(val_idx, keep)
        client_id = _client_id(loaded, owners[k]) if owners else f"client_{k}"
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


def _server_parts(
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


def _client_parts(
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
        lost = _lost_owners(cfg, loaded, role, owners)
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


def _lost_owners(
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


def _lost_holdings(
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
        holdings = _holdings(cfg, names, n_parts, rng)
        return holdings, [{"id": _client_id(loaded, k), "group": "", "reason": why} for k, why in lost]
    everyone = sorted([*owners, *(k for k, _ in lost)])
    by_owner = dict(zip(everyone, _holdings(cfg, names, len(everyone), rng), strict=True))
    records = [
        {"id": _client_id(loaded, k), "group": group_name(by_owner[k], names), "reason": why}
        for k, why in lost
    ]
    return [by_owner[k] for k in owners], records


def _lost_message(lost: list[dict[str, str]], expected: int, cfg: RunConfig) -> str:
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


def _holdings(
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


def _train_val(
    idx: np.ndarray, role: np.ndarray, val_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A client's own validation samples: those the data marks ``val``, else a random fraction."""
    fixed = role[idx] == ROLE_VAL
    if fixed.any():
        return np.sort(idx[~fixed]), np.sort(idx[fixed])
    idx = rng.permutation(idx)
    n_val = round(val_fraction * len(idx))
    return np.sort(idx[n_val:]), np.sort(idx[:n_val])


def _client_id(loaded: LoadedData, owner: int) -> str:
    name = loaded.group_names[owner] if owner < len(loaded.group_names) else f"client_{owner}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _prepare_store(
    cfg: RunConfig, loaded: LoadedData, client_idx: np.ndarray
) -> tuple[tuple[Modality, ...], dict[str, np.ndarray]]:
    """Tokenise text, standardise sensor/audio channels (client statistics only), freeze if asked."""
    modalities = list(loaded.modalities)
    store = dict(loaded.store)
    stats: dict[str, dict[str, list[float]]] = {}
    for j, mod in enumerate(modalities):
        if mod.name in loaded.texts:
            store[mod.name], vocab = _tokenise(cfg, loaded.texts[mod.name], client_idx, mod.shape[0])
            modalities[j] = Modality(mod.name, mod.kind, mod.shape, vocab_size=vocab)
        elif mod.kind in STANDARDISED_KINDS:
            store[mod.name], stats[mod.name] = _standardise(store[mod.name], client_idx)
    loaded.extras["normalisation"] = stats
    if cfg.model.freeze_encoders:
        from fedmosaic.models.frozen import freeze_store

        frozen, store, report = freeze_store(tuple(modalities), store, cfg.model, cfg.seed)
        loaded.extras["frozen_encoders"] = report
        return tuple(frozen), store
    return tuple(modalities), store


def _tokenise(
    cfg: RunConfig, texts: list[str], client_idx: np.ndarray, max_tokens: int
) -> tuple[np.ndarray, int]:
    from fedmosaic.data.text import load_tokenizer, tokenize_texts, train_wordpiece
    from fedmosaic.models.encoders import has_encoder

    if has_encoder("text", cfg.model.text_encoder):
        # tiny or a plug-in's encoder: no tokenizer of its own, so the task learns a vocabulary,
        # from client texts only: test captions must not shape it.
        tokenizer = train_wordpiece([texts[i] for i in client_idx])
    else:
        tokenizer = load_tokenizer(cfg.model.text_encoder)
    return tokenize_texts(tokenizer, texts, max_tokens), len(tokenizer)


def _standardise(array: np.ndarray, client_idx: np.ndarray) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Per-channel (axis 1) mean/std over the clients' samples, applied to every sample."""
    sample = array[client_idx]
    axes = tuple(i for i in range(sample.ndim) if i != 1)
    mean = sample.mean(axis=axes, dtype=np.float64)
    std = sample.std(axis=axes, dtype=np.float64)
    std = np.where(std > 1e-8, std, 1.0)  # a constant channel carries no information; keep it at 0
    shape = (1, -1) + (1,) * (array.ndim - 2)
    out = ((array - mean.reshape(shape)) / std.reshape(shape)).astype(np.float32)
    return out, {"mean": mean.tolist(), "std": std.tolist()}
