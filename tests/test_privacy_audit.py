"""Privacy audit: record every message each client sends in a short run of every algorithm and check
that (1) none carries a copy of that client's private inputs and (2) every array name and metadata
key it uploads is one docs/algorithms.md says the algorithm shares.

``centralized`` is not audited: by definition it pools every client's training data on the server
(it is the upper bound, not a federated algorithm); :func:`test_every_federated_algorithm_is_audited`
pins that it is the only one left out.

The detector searches every uploaded array for contiguous runs of ``K[kind]`` values that equal,
within a float tolerance, a contiguous run of one of the client's private samples (train and
validation, every modality it holds): sensor windows, image pixel blocks and token-id sequences.
Samples are read both as stored (uint8 pixels, int token ids) and as the model sees them (pixels
/ 255), each flattened in C order and transposed (so a (time, channel) window leaked as (channel,
time) is found); uploads are searched flattened in C order and along their first axis (their
transpose). Runs with too few distinct values (padding, blank background) are not probes: a run of
zero biases must not count as a leaked blank pixel row. Positive controls (deliberately leaking
clients) show the detector catches leaks; a negative control shows it does not flag non-private
samples.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from conftest import TINY_OVERRIDES
from fedmosaic.algorithms.registry import algorithm_names, get_algorithm
from fedmosaic.config import RunConfig, apply_override, load_config
from fedmosaic.core.message import Message
from fedmosaic.core.task import ClientData, Task, View
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.federation import Federation
from mhealth_files import mhealth_overrides, write_mhealth

DOC = Path(__file__).resolve().parents[1] / "docs" / "algorithms.md"
# Probe length per modality kind: long enough that weights cannot match by chance, shorter than a
# caption (12 tokens, padded) or a sensor row block, a fraction of one image row of 24 pixels x 3.
# Text: the whole padded sequence (captions built from templates share shorter runs with other
# people's captions, so a shorter run is not private).
K = {"image": 16, "text": None, "timeseries": 8}
MIN_DISTINCT = {"image": 6, "text": 3, "timeseries": 6}
REL_TOL = 1e-3  # float noise, float16 casts: |difference| <= REL_TOL * max(1, max |value|)

# (setting name in the docs table, algorithm, sensor task?, extra overrides)
SETTINGS = [
    ("fedavg", "fedavg", False, []),
    ("fedavg", "fedavg", True, []),
    ("fedprox", "fedprox", False, []),
    ("fedopt", "fedopt", False, []),
    ("scaffold", "scaffold", False, []),
    ("moon", "moon", False, []),
    ("local", "local", False, []),
    ("fedcmi", "fedcmi", False, []),
    ("gvf", "gvf", False, ["algorithm.proxy_weight=1"]),
    ("gvf allow_private_vectors=true", "gvf", False, ["algorithm.allow_private_vectors=true"]),
    ("gvf-local", "gvf-local", False, []),
    ("gvf-shared-encoders", "gvf-shared-encoders", False, []),
    ("fedmekt", "fedmekt", True, ["algorithm.proxy_batch=12", "algorithm.server_epochs=2"]),
    (
        "fedmekt",
        "fedmekt",
        True,
        ["algorithm.proxy_batch=12", "algorithm.server_epochs=2", 'algorithm.variant="S"'],
    ),
    ("mmfedavg", "mmfedavg", True, []),
    ("mmfedprox", "mmfedprox", True, []),
]
NOT_AUDITED = {"centralized": "pools every client's training data on the server by definition"}


# --------------------------------------------------------------------------- recording a run


@dataclass
class Sent:
    """One message a client sent: who, which call (``fit``/``evaluate``), which round, the message."""

    client: str
    call: str
    round: int
    message: Message


@dataclass
class RecordingClient:
    """Wraps an algorithm's client half and keeps every reply it sends (it changes nothing)."""

    inner: object
    log: list[Sent] = field(default_factory=list)
    round: int = 0

    def fit(self, message, state, data, rng):
        self.round = rng.round  # evaluate calls carry no Rng: they belong to the last fit's round
        reply, new_state = self.inner.fit(message, state, data, rng)
        self.log.append(Sent(data.spec.id, "fit", self.round, reply))
        return reply, new_state

    def evaluate(self, message, state, data):
        reply = self.inner.evaluate(message, state, data)
        self.log.append(Sent(data.spec.id, "evaluate", self.round, reply))
        return reply


@pytest.fixture(scope="module")
def mhealth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mhealth(tmp_path_factory.mktemp("mhealth"))


def make_cfg(algorithm: str, sensor: bool, extra: list[str], data_dir: Path) -> RunConfig:
    base = (
        [*mhealth_overrides(data_dir), "clients.per_round=4"]
        if sensor
        else [*TINY_OVERRIDES, "output.plots=false"]
    )
    return load_config(None, [*base, f"algorithm.name={algorithm}", *extra])


def recorded_run(
    cfg: RunConfig, folder: Path, wrap: Callable[[object, Task], object] | None = None
) -> tuple[Task, list[Sent]]:
    """Run ``cfg`` in the local engine with every client reply recorded (``wrap`` may first wrap the
    client half, e.g. in a leaking fake; the recorder is the outermost client wrapper)."""
    task = build_task(cfg)
    wrappers = [lambda inner: wrap(inner, task)] if wrap is not None else []
    fed = Federation.from_config(cfg, task, folder=folder, client_wrappers=[*wrappers, RecordingClient])
    fed.run()
    return task, fed.client.log


# --------------------------------------------------------------------------- the leak detector


def _representations(values: np.ndarray) -> list[np.ndarray]:
    """A modality's samples (n, ...) as stored and as the model sees them (uint8 pixels / 255)."""
    stored = values.astype(np.float64)
    return [stored, stored / 255.0] if values.dtype == np.uint8 else [stored]


def private_samples(client: ClientData, modality: str) -> np.ndarray:
    """The store rows of ``modality`` for the client's own (train + validation) samples that hold it."""
    j = client.train.info.modality_names.index(modality)
    rows = [v.indices[v.mask[:, j]] for v in (client.train, client.val)]
    return client.train.store[modality][np.concatenate(rows)]


def _runs(flat: np.ndarray, k: int) -> np.ndarray:
    """Every contiguous run of ``k`` values of each row of ``flat`` (rows, n) -> (m, k)."""
    if flat.shape[1] < k:
        return np.empty((0, k))
    return np.lib.stride_tricks.sliding_window_view(flat, k, axis=1).reshape(-1, k)


@dataclass
class Probes:
    """Every informative length-``k`` run of one modality's private samples, in a KD-tree."""

    modality: str
    k: int
    tol: float
    tree: cKDTree
    count: int


def build_probes(samples: np.ndarray, modality: str, kind: str) -> list[Probes]:
    """Probes for each representation of ``samples``: runs along C order and along the transpose."""
    k = K[kind] or int(np.prod(samples.shape[1:]))
    out = []
    for values in _representations(samples):
        n = len(values)
        orders = [values.reshape(n, -1)]
        if values.ndim > 2:  # the sample's own axes reversed: time-major <-> channel-major
            orders.append(np.transpose(values, (0, *range(values.ndim - 1, 0, -1))).reshape(n, -1))
        runs = np.concatenate([_runs(o, k) for o in orders])
        ordered = np.sort(runs, axis=1)
        distinct = 1 + (np.diff(ordered, axis=1) != 0).sum(axis=1)
        runs = runs[distinct >= min(MIN_DISTINCT[kind], runs.shape[1])]
        tol = REL_TOL * max(1.0, float(np.abs(values).max(initial=0.0)))
        out.append(Probes(modality, runs.shape[1], tol, cKDTree(runs), len(runs)))
    return out


_PROBES: dict[tuple[str, str], list[Probes]] = {}


def client_probes(task: Task, client_id: str) -> list[Probes]:
    """Probes for every modality the client holds private samples of (cached by content: the
    synthetic settings all split the same task the same way)."""
    client = task.client(client_id)
    probes = []
    for m in task.info.modalities:
        samples = private_samples(client, m.name)
        if len(samples):
            key = (m.name, hashlib.sha1(np.ascontiguousarray(samples).tobytes()).hexdigest())
            if key not in _PROBES:
                _PROBES[key] = build_probes(samples, m.name, m.kind)
            probes += _PROBES[key]
    return probes


def leaks_in(array: np.ndarray, probes: list[Probes]) -> list[str]:
    """The modalities whose private runs occur (within tolerance) in ``array`` flattened in C order
    or along its first axis."""
    if array.dtype.kind not in "biuf" or array.size == 0:
        return []
    values = array.astype(np.float64)
    haystacks = [values.reshape(1, -1)]
    if values.ndim > 1:
        haystacks.append(values.T.reshape(1, -1))
    found = []
    for p in probes:
        for h in haystacks:
            windows = _runs(h, p.k)
            if len(windows) == 0:
                continue
            dist, _ = p.tree.query(windows, k=1, p=np.inf, distance_upper_bound=p.tol)
            if np.isfinite(dist).any():
                found.append(p.modality)
                break
    return sorted(set(found))


def audit_leaks(task: Task, log: list[Sent]) -> list[str]:
    """One line per (client, call, round, array) that holds a private run of that client."""
    cache: dict[str, list[Probes]] = {}
    problems = []
    for sent in log:
        if sent.client not in cache:
            cache[sent.client] = client_probes(task, sent.client)
        probes = cache[sent.client]
        assert probes and all(p.count > 0 for p in probes), f"{sent.client}: no probes"
        for name, array in sent.message.arrays.items():
            for modality in leaks_in(array, probes):
                problems.append(f"{sent.client} {sent.call} r{sent.round} {name!r}: private {modality}")
    return problems


# --------------------------------------------------------------------------- the documented names


def documented_names() -> dict[str, dict[str, list[str]]]:
    """docs/algorithms.md's machine-checkable table: setting -> column -> glob patterns."""
    text = DOC.read_text()
    block = text.split("<!-- upload-names:start -->")[1].split("<!-- upload-names:end -->")[0]
    rows = [line for line in block.strip().splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    table = {}
    for line in rows[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        setting = " ".join(re.findall(r"`([^`]*)`", cells[0]))
        table[setting] = {h: re.findall(r"`([^`]*)`", c) for h, c in zip(header[1:], cells[1:], strict=True)}
    return table


def undocumented(log: list[Sent], task: Task, allowed: dict[str, list[str]]) -> list[str]:
    """One line per uploaded array name or metadata key no pattern of the setting's row matches.

    ``{m}`` in a pattern stands for a modality the client holds, ``{g}`` for a group of them.
    """
    problems = []
    for sent in log:
        spec = task.client(sent.client).spec
        groups = [task.info.group(s) for s in task.info.subsets(frozenset(spec.modalities))]

        def expand(pattern: str, groups=groups, spec=spec) -> list[str]:
            out = [pattern.replace("{m}", m) for m in spec.modalities] if "{m}" in pattern else [pattern]
            return [o.replace("{g}", g) for o in out for g in groups] if "{g}" in pattern else out

        columns = {f"{sent.call} arrays": sent.message.arrays, f"{sent.call} meta": sent.message.meta}
        for column, names in columns.items():
            patterns = [e for p in allowed[column] for e in expand(p)]
            for name in names:
                if not any(fnmatch.fnmatchcase(name, p) for p in patterns):
                    problems.append(f"{sent.client} {sent.call}: {column} {name!r} is not documented")
        for key, value in sent.message.meta.items():
            if isinstance(value, str):
                problems.append(f"{sent.client} {sent.call}: meta {key!r} is a string")
    return problems


# --------------------------------------------------------------------------- tests


def test_every_federated_algorithm_is_audited() -> None:
    audited = {algorithm for _, algorithm, _, _ in SETTINGS}
    # fedmosaic's own: a plug-in installed in the environment (the example, tests/test_plugins.py) is not
    builtin = {a for a in algorithm_names() if get_algorithm(a).__module__.startswith("fedmosaic.")}
    assert audited | set(NOT_AUDITED) == builtin
    assert get_algorithm("centralized").needs_pooled_data  # the one left out pools data by definition
    assert not any(get_algorithm(a).needs_pooled_data for a in audited)
    assert {s for s, *_ in SETTINGS} <= set(documented_names())


def test_gvf_private_vectors_are_off_by_default() -> None:
    cfg = load_config(None, [*TINY_OVERRIDES, "algorithm.name=gvf"])
    assert cfg.algorithm.allow_private_vectors is False
    table = documented_names()
    assert not any(p.startswith("priv/") for p in table["gvf"]["fit arrays"])
    assert any(p.startswith("priv/") for p in table["gvf allow_private_vectors=true"]["fit arrays"])


@pytest.mark.parametrize(
    ("setting", "algorithm", "extra"), sorted({(s, a, tuple(e)) for s, a, _, e in SETTINGS})
)
def test_declared_uploads_are_the_documented_row(
    setting: str, algorithm: str, extra: tuple[str, ...]
) -> None:
    """Each algorithm's own ``uploads`` declaration (what fedmosaic.testing.check_algorithm audits, and
    all a plug-in has) equals its row of the docs table, column by column: the two cannot drift."""
    cls = get_algorithm(algorithm)
    tree: dict = {"algorithm": {"name": algorithm}}
    for assignment in extra:
        apply_override(tree, assignment)
    declared = cls.declared_uploads(cls.Config.model_validate(tree["algorithm"]))
    assert declared is not None, f"{algorithm} declares no uploads"
    row = documented_names()[setting]
    assert {column: sorted(declared.patterns(*column.split())) for column in row} == {
        column: sorted(patterns) for column, patterns in row.items()
    }


def test_only_the_unaudited_algorithm_declares_no_uploads() -> None:
    for name in algorithm_names():
        cls = get_algorithm(name)
        assert (cls.declared_uploads(cls.Config(name=name)) is None) == (name in NOT_AUDITED), name


@pytest.mark.parametrize(
    ("setting", "algorithm", "sensor", "extra"),
    SETTINGS,
    ids=[f"{s}-{'mhealth' if sensor else 'synthetic'}-{i}" for i, (s, _, sensor, _) in enumerate(SETTINGS)],
)
def test_no_private_sample_and_nothing_undocumented_leaves_a_client(
    setting: str, algorithm: str, sensor: bool, extra: list[str], mhealth_dir: Path, tmp_path: Path
) -> None:
    cfg = make_cfg(algorithm, sensor, extra, mhealth_dir)
    task, log = recorded_run(cfg, tmp_path)
    fits = [s for s in log if s.call == "fit"]
    assert {s.client for s in fits} and len(fits) >= cfg.rounds  # the recorder saw every round
    assert audit_leaks(task, log) == []
    assert undocumented(log, task, documented_names()[setting]) == []
    if setting.startswith("gvf"):  # the switch decides whether private-sample vectors leave (any variant)
        sent_priv = any(n.startswith("priv/") for s in fits for n in s.message.arrays)
        assert sent_priv == cfg.algorithm.allow_private_vectors


# ----- the detector's own controls


def _first_sample(task: Task, client_id: str, modality: str) -> np.ndarray:
    return private_samples(task.client(client_id), modality)[0]


LEAKS: dict[str, Callable[[Task, str, Message, np.random.Generator], None]] = {}


def leak(name: str):
    def register(fn):
        LEAKS[name] = fn
        return fn

    return register


def _holder(task: Task, client_id: str, modality: str) -> bool:
    return modality in task.client(client_id).spec.modalities


def _embed(reply: Message, values: np.ndarray, offset: int) -> None:
    """Overwrite part of the reply's largest array (a documented weight name, so only the content
    detector can see the leak) with ``values``, cast to the array's dtype."""
    name = max(reply.arrays, key=lambda n: reply.arrays[n].size)
    flat = reply.arrays[name].copy().reshape(-1)
    flat[offset : offset + values.size] = values.reshape(-1)
    reply.arrays[name] = flat.reshape(reply.arrays[name].shape)


@leak("image pixels / 255 inside a weight array")
def _image_in_weights(task: Task, cid: str, reply: Message, rng: np.random.Generator) -> str | None:
    if not _holder(task, cid, "image"):
        return None
    pixels = _first_sample(task, cid, "image").astype(np.float32) / 255.0
    _embed(reply, pixels[1, 4:8, :], 100)  # a 4-row block of the green channel (96 values)
    return "image"


@leak("token ids through float16 inside a weight array")
def _tokens(task: Task, cid: str, reply: Message, rng: np.random.Generator) -> str | None:
    if not _holder(task, cid, "text"):
        return None
    _embed(reply, _first_sample(task, cid, "text").astype(np.float16), 200)
    return "text"


@leak("sensor window transposed, with float noise, inside a weight array")
def _sensor(task: Task, cid: str, reply: Message, rng: np.random.Generator) -> str | None:
    modality = sorted(task.client(cid).spec.modalities)[0]
    window = _first_sample(task, cid, modality).astype(np.float64)
    _embed(reply, window.T + rng.normal(0, 1e-5, window.T.shape), 300)
    return modality


@dataclass
class LeakyClient:
    """A fake client half: the real one's reply plus one deliberate leak of a private sample."""

    inner: object
    task: Task
    plant: Callable
    planted: dict[str, str] = field(default_factory=dict)

    def fit(self, message, state, data, rng):
        reply, new_state = self.inner.fit(message, state, data, rng)
        reply = Message(dict(reply.arrays), dict(reply.meta))
        modality = self.plant(self.task, data.spec.id, reply, np.random.default_rng(0))
        if modality:
            self.planted[data.spec.id] = modality
        return reply, new_state

    def evaluate(self, message, state, data):
        return self.inner.evaluate(message, state, data)


@pytest.mark.parametrize("kind", list(LEAKS))
def test_detector_catches_a_deliberately_leaking_client(kind: str, mhealth_dir: Path, tmp_path: Path) -> None:
    sensor = kind.startswith("sensor")
    cfg = make_cfg("fedavg", sensor, ["rounds=1"], mhealth_dir)
    fakes: list[LeakyClient] = []

    def wrap(inner, task):
        fakes.append(LeakyClient(inner, task, LEAKS[kind]))
        return fakes[0]

    task, log = recorded_run(cfg, tmp_path, wrap)
    planted = fakes[0].planted
    assert planted  # some client did leak
    found = audit_leaks(task, log)
    flagged = {line.split()[0] for line in found}
    assert flagged == set(planted), (found, planted)
    assert all(f"private {planted[line.split()[0]]}" in line for line in found)


def test_detector_does_not_flag_samples_that_are_not_the_clients(tmp_path: Path) -> None:
    cfg = load_config(None, [*TINY_OVERRIDES, "rounds=1"])
    task = build_task(cfg)
    cid = next(c.spec.id for c in task.clients if c.spec.modalities == frozenset({"image", "text"}))
    probes = client_probes(task, cid)
    outsider: View = task.proxy  # disjoint from every client's samples by construction
    for m in ("image", "text"):
        other = outsider.store[m][outsider.indices[:5]]
        assert leaks_in(other, probes) == []
        own = private_samples(task.client(cid), m)[:5]
        assert leaks_in(own, probes) == [m]
    assert leaks_in(np.zeros(4096, dtype=np.float32), probes) == []  # blank runs are not probes


def test_name_check_catches_an_undocumented_array(tmp_path: Path, mhealth_dir: Path) -> None:
    cfg = make_cfg("fedavg", False, ["rounds=1"], mhealth_dir)

    def wrap(inner, task):
        def plant(task, cid, reply, rng):
            reply.arrays["stolen"] = np.zeros(3, dtype=np.float32)
            reply.meta["caption"] = "a red wooden circle"

        return LeakyClient(inner, task, plant)

    task, log = recorded_run(cfg, tmp_path, wrap)
    problems = undocumented(log, task, documented_names()["fedavg"])
    assert any("'stolen' is not documented" in p for p in problems)
    assert any("'caption' is not documented" in p for p in problems)
    assert any("'caption' is a string" in p for p in problems)
