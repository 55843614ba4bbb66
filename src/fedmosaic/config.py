"""One pydantic tree for a run, loaded from TOML with ``--set key.sub=value`` overrides.

Every problem is one line naming the key and what was expected (:class:`ConfigError`); a config
with several problems reports all that can be checked together, one line each.
"""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from fedmosaic.core.algorithm import AlgorithmConfig
from fedmosaic.core.device import check_device_name
from fedmosaic.core.errors import ConfigError
from fedmosaic.core.settings import ModelConfig, RobustnessConfig, Strict, TrainingConfig, resolve_path
from fedmosaic.privacy.dp import PrivacyConfig

_Strict = Strict


def parse_mix(value: Any) -> Any:
    """Accept ``"image:2,text:2,image+text:6"`` (CLI-friendly) as well as a TOML table; ``""`` = no mix."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    out: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in value.split(","))):
        group, sep, count = item.partition(":") if ":" in item else item.partition("=")
        if not sep or not count.strip().lstrip("-").isdigit():
            raise ValueError(f"expected 'group:count' items like 'image:2,text:2,image+text:6', got {item!r}")
        out[group.strip()] = int(count)
    return out


class TaskConfig(_Strict):
    """Which data set, where it lives, its own options and how it is split."""

    dataset: str = "synthetic"
    data_dir: Path | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    proxy_size: int | None = Field(
        None, ge=0, description="server's unlabelled proxy set; default min(200, 10% of the samples)"
    )
    labelled_size: int | None = Field(
        None, ge=0, description="server's labelled set; default min(200, 10% of the samples)"
    )
    val_fraction: float = Field(0.1, ge=0, lt=1)
    partition: Literal["iid", "dirichlet", "natural"] = Field(
        "iid", description="natural = one client per user/speaker/subject/folder, as the data set defines"
    )
    alpha: float = Field(0.5, gt=0)
    on_bad_sample: Literal["error", "skip"] = Field(
        "error", description="a bad sample stops the run with a one-line error, or is skipped and counted"
    )
    label_missing_rate: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="scenario: this share of each client's training samples is unlabelled and not trained "
        "on (docs/scenarios.md)",
    )
    label_noise_rate: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="scenario: this share of each client's labelled training samples gets a wrong label "
        "through a sparse seeded confusion rule; test and server sets stay clean (docs/scenarios.md)",
    )

    @field_validator("data_dir")
    @classmethod
    def _resolve_data_dir(cls, value: Path | None) -> Path | None:
        return resolve_path(value)  # stored absolute (core/settings.py says why)


class ClientsConfig(_Strict):
    """How many clients, which modalities each group holds, how many train per round.

    ``mix`` gives counts per modality group (``"image:2,text:2,image+text:6"``); the keys ``each``
    (that many clients per single modality) and ``all`` (clients holding every modality) spell the
    same mix for any data set. ``drop_rate`` instead lets each client drop each modality with that
    probability (never all of them).
    """

    count: int | None = Field(None, ge=1)
    mix: dict[str, Annotated[int, Field(ge=0)]] | None = None
    drop_rate: float | None = Field(None, ge=0, lt=1)
    per_round: int | None = Field(None, ge=1)
    sample_drop_rate: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="scenario: each training sample of a client holding several modalities loses each "
        "with this probability, never all of them (docs/scenarios.md)",
    )
    allow_lost: bool = Field(
        False,
        description="run on when a natural client is lost (every sample bad and skipped, or all taken by "
        "the server's sets); without it a run whose clients.mix gives the lost client a group fails",
    )

    _parse_mix = field_validator("mix", mode="before")(parse_mix)

    @model_validator(mode="after")
    def _count_matches_mix(self) -> ClientsConfig:
        if self.mix is not None:
            if self.drop_rate is not None:
                raise ValueError(
                    "clients.drop_rate: give either clients.mix or clients.drop_rate, not both "
                    '(--set clients.mix="" clears the default mix)'
                )
            if sum(self.mix.values()) < 1:
                raise ValueError("clients.mix: at least one client is needed")
        return self

    def total_for(self, modality_names: tuple[str, ...]) -> int:
        """The number of clients for a data set with these modalities (mix sum, else count, else 10)."""
        if self.mix is not None:
            each = self.mix.get("each", 0) * (len(modality_names) - 1)
            return sum(self.mix.values()) + each
        return self.count or 10


class EngineConfig(_Strict):
    """Which engine runs the federation and how often it evaluates."""

    name: Literal["local"] = "local"
    eval_every: int = Field(1, ge=1)
    eval_clients: int | None = Field(
        None,
        ge=1,
        description="personalised algorithms (local, gvf): evaluate a sample of this many clients per "
        "evaluated round, drawn from the run's seed and the round (default: every client)",
    )
    state_cache: int = Field(64, ge=0, description="client states kept in memory; the rest live on disk")
    progress: bool = True
    threads: int = Field(
        1,
        ge=0,
        description="torch intra-op threads (0 = torch's default). 1 by default: clients train small models "
        "on small batches, where thread synchronisation costs more than it gains (BENCHMARKS.md, "
        "'Torch threads')",
    )
    workers: int | Literal["auto"] = Field(
        1,
        description="local engine: processes that train and evaluate a round's clients in parallel "
        "(forked, one torch thread each); the replies, and so every metric, equal those of 1 worker. "
        "auto: one per usable CPU core, at most one per client, and 1 on a GPU or without fork",
    )
    dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="local engine: each planned client's reply is lost with this probability per round "
        "(drawn from the run's seed, round and client, so a resumed run drops the same ones)",
    )
    device: str = Field(
        "cpu",
        description="where models, batches and aggregation run: cpu (the default: the same bytes on every "
        "machine), auto (cuda, else mps, else cpu), cuda, cuda:N or mps. Flower nodes take theirs from "
        "their own --node-config device=...",
    )

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> Any:
        # One message for both spellings (pydantic would give one line per union member).
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f"expected a whole number >= 1 or 'auto', got {value!r}")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        # Only the spelling here (no torch import at validation); whether the machine has the device
        # is checked at run start (fedmosaic.core.device.resolve_device), before anything is written.
        return check_device_name(value)


class OutputConfig(_Strict):
    """Where run folders go, and what is written beside the files every run has."""

    dir: Path = Path("runs")
    plots: bool = True
    tensorboard: bool = Field(
        False, description="TensorBoard event log in <run folder>/tensorboard/ (needs the tracking extra)"
    )

    @field_validator("dir")
    @classmethod
    def _resolve_dir(cls, value: Path) -> Path:
        return Path(str(resolve_path(value)))


def load_plugins(modules: list[str] | tuple[str, ...] = ()) -> None:
    """Load every registry's entry points, then import the plug-in ``modules``.

    Built-in modules are not imported here: each registry declares its built-ins' names, so a
    plug-in reusing one is reported as the second registration (naming the plug-in) whenever it
    registers, and a run imports only the algorithms, data sets and encoders it looks up.
    One-line :class:`~fedmosaic.core.errors.PluginError` on failure.
    """
    from fedmosaic.algorithms.registry import ALGORITHMS
    from fedmosaic.core.plugins import import_plugins
    from fedmosaic.data.registry import DATASETS
    from fedmosaic.models.encoders import ENCODERS

    for registry in (ALGORITHMS, DATASETS, ENCODERS):
        registry.load_plugins()
    import_plugins(modules)


class RunConfig(_Strict):
    """A whole run."""

    plugins: list[str] = Field(
        default_factory=list,
        description="modules imported before the rest is validated; each registers algorithms, data sets "
        "or encoders (DEVELOPERS.md, 'Writing a plug-in')",
    )
    seed: int = Field(0, ge=0)
    rounds: int = Field(10, ge=1)
    compare: list[str] = Field(
        default_factory=list, description="baseline algorithms run beside the main one"
    )
    task: TaskConfig = Field(default_factory=TaskConfig)
    clients: ClientsConfig = Field(default_factory=ClientsConfig)
    algorithm: SerializeAsAny[AlgorithmConfig] = Field(default_factory=lambda: AlgorithmConfig(name="fedavg"))
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    robustness: RobustnessConfig = Field(default_factory=RobustnessConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    privacy: PrivacyConfig = Field(
        default_factory=PrivacyConfig, description="client-level DP on uploads (docs/privacy.md)"
    )

    @model_validator(mode="before")
    @classmethod
    def _load_plugins(cls, data: Any) -> Any:
        # Before any field: the algorithm, data set and encoder names below may be a plug-in's.
        # Every process that validates a run's config (run folders, file pipeline steps, Flower
        # nodes) so loads the same plug-ins. A malformed list is left to the field's own check.
        if isinstance(data, dict):
            modules = data.get("plugins", [])
            if isinstance(modules, list) and all(isinstance(m, str) for m in modules):
                load_plugins(modules)
        return data

    @field_validator("algorithm", mode="before")
    @classmethod
    def _algorithm_block(cls, value: Any) -> AlgorithmConfig:
        from fedmosaic.algorithms.registry import get_algorithm

        if isinstance(value, AlgorithmConfig):
            value = value.model_dump()
        if not isinstance(value, dict) or "name" not in value:
            raise ValueError("algorithm.name: expected an [algorithm] table with a 'name' key")
        try:
            config_cls = get_algorithm(str(value["name"])).Config
        except KeyError as exc:
            raise ValueError(f"algorithm.name: {exc.args[0]}") from None
        try:
            return config_cls.model_validate(value)
        except ValidationError as exc:
            raise ValueError(_format_error(exc, prefix="algorithm")) from None

    @field_validator("compare")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        from fedmosaic.algorithms.registry import get_algorithm

        for name in value:
            try:
                get_algorithm(name)
            except KeyError as exc:
                raise ValueError(f"compare: {exc.args[0]}") from None
        return value

    @field_validator("model")
    @classmethod
    def _known_encoders(cls, value: ModelConfig) -> ModelConfig:
        from fedmosaic.models.encoders import ENCODER_FIELDS, get_encoder

        for kind, key in ENCODER_FIELDS.items():
            if kind == "text":
                continue  # a name that is not registered is a hub id or a model folder
            try:
                get_encoder(kind, getattr(value, key))
            except KeyError as exc:
                raise ValueError(f"model.{key}: {exc.args[0]}") from None
        return value

    @model_validator(mode="after")
    def _masks_honoured(self) -> RunConfig:
        # Per-sample masks change what a client's batches hold; an algorithm that has not declared
        # it trains on them correctly must refuse rather than silently ignore or misuse them.
        from fedmosaic.algorithms.registry import get_algorithm

        if self.clients.sample_drop_rate > 0:
            names = dict.fromkeys([self.algorithm.name, *self.compare])
            refused = [name for name in names if not get_algorithm(name).per_sample_masks]
            if refused:
                raise ValueError(
                    f"clients.sample_drop_rate: {', '.join(map(repr, refused))} cannot train on per-sample "
                    "modality masks (fedavg, fedprox, fedopt, scaffold, moon, local and centralized can)"
                )
        return self

    @model_validator(mode="after")
    def _fits_dataset(self) -> RunConfig:
        from fedmosaic.data.partition import parse_mix as check_mix
        from fedmosaic.data.registry import get_dataset

        try:
            entry = get_dataset(self.task.dataset)
        except KeyError as exc:
            raise ValueError(f"task.dataset: {exc.args[0]}") from None  # nothing below can be checked
        # The checks below are independent: collect them so a user fixes every one in a single pass
        # (one line each, every line naming its key). Those needing the modality names wait for valid
        # options.
        problems: list[str] = []
        names: tuple[str, ...] | None = None
        try:
            names = entry.modality_names(entry.options.model_validate(self.task.options))
        except ValidationError as exc:
            problems.append(_format_error(exc, prefix="task.options"))
        if entry.needs_data_dir and self.task.data_dir is None:
            problems.append(f"task.data_dir: data set {self.task.dataset!r} needs a data folder")
        if self.task.partition == "natural" and not entry.natural_unit:
            problems.append(
                f"task.partition: data set {self.task.dataset!r} has no natural clients; use iid or dirichlet"
            )
        if names is not None:
            mix_ok = True
            if self.clients.mix is not None:
                try:
                    check_mix(self.clients.mix, names)
                except ValueError as exc:
                    problems.append(f"clients.mix: {exc}")
                    mix_ok = False
            total = self.clients.total_for(names)
            if (
                mix_ok
                and self.clients.mix is not None
                and self.clients.count is not None
                and self.clients.count != total
            ):
                problems.append(
                    f"clients.count: {self.clients.count} does not match clients.mix, which sums to {total}"
                )
            natural_count_unknown = self.task.partition == "natural" and self.clients.mix is None
            if (
                mix_ok
                and self.clients.per_round is not None
                and not natural_count_unknown
                and self.clients.per_round > total
            ):
                problems.append(f"clients.per_round: {self.clients.per_round} exceeds the {total} clients")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def dataset_options(self) -> BaseModel:
        """This run's validated data set options."""
        from fedmosaic.data.registry import get_dataset

        return get_dataset(self.task.dataset).options.model_validate(self.task.options)

    def to_toml_dict(self) -> dict[str, Any]:
        """The resolved config as TOML-serialisable data (no ``None`` values, paths as strings)."""
        return _drop_none(self.model_dump(mode="json"))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


_NAMES_KEY = re.compile(r"^[a-z_]+(\.[A-Za-z0-9_+]+)*: ")


def _format_error(exc: ValidationError, prefix: str = "") -> str:
    """Every problem pydantic found, one ``key: what was expected`` line each, in pydantic's order.

    Reporting all of them at once spares a fix-and-rerun cycle per bad key; a single problem reads
    exactly as it always did. Repeated lines (the same key failing the same way twice) are dropped.
    """
    lines: list[str] = []
    for err in _one_per_union(exc.errors(include_url=False)):
        for line in _error_lines(err, prefix):
            if line not in lines:
                lines.append(line)
    return "\n".join(lines)


# The last loc part pydantic adds per branch of a union field: a type name ("int") or a schema
# description ("literal['classes','silhouette']", a model's class name). Field names and the
# user's own dict keys are lower case without brackets.
_BRANCH_TAG = re.compile(r"[\[A-Z]")
_TYPE_TAGS = frozenset({"int", "float", "str", "bool", "bytes", "none", "list", "dict", "set", "tuple"})


def _is_branch_tag(part: Any) -> bool:
    return isinstance(part, str) and (part in _TYPE_TAGS or bool(_BRANCH_TAG.search(part)))


def _loc(err: Any) -> list[Any]:
    """An error's location without pydantic's ``function-...`` validator steps."""
    return [p for p in err["loc"] if not str(p).startswith("function-")]


def _same_union(a: Any, b: Any) -> bool:
    """Whether two errors are two branches of one union-typed value failing on the same input."""
    loc_a, loc_b = _loc(a), _loc(b)
    return (
        bool(loc_a and loc_b)
        and loc_a[:-1] == loc_b[:-1]
        and _is_branch_tag(loc_a[-1])
        and _is_branch_tag(loc_b[-1])
        and a.get("input") == b.get("input")
    )


def _one_per_union(errors: list[Any]) -> list[Any]:
    """Keep the first of the errors pydantic reports for each branch of one union-typed value.

    ``k = "auto"`` against ``int | Literal["classes", "silhouette"]`` is one problem but two errors
    (locs ``k.int`` and ``k.literal[...]``); the first is what a single error always printed.
    """
    kept: list[Any] = []
    for err in errors:
        if not any(_same_union(k, err) for k in kept):
            kept.append(err)
    return kept


def _error_lines(err: Any, prefix: str) -> list[str]:
    """The line(s) for one pydantic error (several when a validator reported several problems)."""
    key = ".".join(str(p) for p in _loc(err))
    if prefix and key:
        key = f"{prefix}.{key}"
    elif prefix:
        key = prefix
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return [f"{key}: unknown key"]
    if "\n" in msg:
        # A validator that collected several problems (a nested block, _fits_dataset): each line
        # normally names its own key already; name ours on any that does not.
        return [
            line if _NAMES_KEY.match(line) or not key else f"{key}: {line}"
            for line in msg.splitlines()
            if line.strip()
        ]
    if _NAMES_KEY.match(msg):
        return [msg]  # the validator already named the key
    got = err.get("input")
    shows_input = err["type"] == "missing" or isinstance(got, dict | list) or "got " in msg
    tail = "" if shows_input else f" (got {got!r})"
    return [f"{key}: {msg}{tail}" if key else f"{msg}{tail}"]


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal if it parses (``3``, ``0.1``, ``true``, ``[..]``), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.sub=value`` override to a raw config dict."""
    key, sep, value = assignment.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set: expected KEY=VALUE such as rounds=5, got {assignment!r}")
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is a value, not a table")
        node = child
    node[parts[-1]] = parse_value(value.strip())


def default_config_path() -> Path:
    """The embedded default config (``fedmosaic/configs/default.toml``)."""
    return Path(str(resources.files("fedmosaic") / "configs" / "default.toml"))


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; any problem becomes one :class:`ConfigError` line."""
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"--config: no such file {str(path)!r}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None


def validate(tree: dict[str, Any]) -> RunConfig:
    """Validate a raw config dict into a :class:`RunConfig` (one-line :class:`ConfigError` on failure)."""
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None


def with_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """``cfg`` with ``key=value`` overrides applied, validated like ``--set`` on the command line."""
    tree = cfg.to_toml_dict()
    for assignment in overrides:
        apply_override(tree, assignment)
    return validate(tree)


def load_config(
    path: Path | None = None, overrides: list[str] | None = None, plugins: list[str] | None = None
) -> RunConfig:
    """Load ``path`` (default: the embedded default) and apply ``key=value`` overrides.

    ``plugins`` (``--plugin``) are added to the config's own ``plugins`` list, so they are saved
    with the run and every later step of it loads them too.
    """
    tree = read_toml(path or default_config_path())
    for assignment in overrides or []:
        apply_override(tree, assignment)
    if plugins:
        listed = tree.get("plugins", [])
        if isinstance(listed, list):  # anything else fails validation with its own message
            tree["plugins"] = list(dict.fromkeys([*listed, *plugins]))
    return validate(tree)
