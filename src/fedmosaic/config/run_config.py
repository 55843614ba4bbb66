"""The whole run's config (:class:`RunConfig`) and the checks that span its blocks.

Its validators look names up in the registries (algorithm, data set, encoders) and check that the
blocks fit one another (a mix the data set's modalities can deal, per-sample masks an algorithm
can train on), collecting independent problems so a user fixes them in one pass.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from fedmosaic.config.error_lines import format_error
from fedmosaic.config.sections import ClientsConfig, EngineConfig, OutputConfig, TaskConfig
from fedmosaic.core.algorithm import AlgorithmConfig
from fedmosaic.core.settings import ModelConfig, RobustnessConfig, Strict, TrainingConfig
from fedmosaic.privacy.dp import PrivacyConfig


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


class RunConfig(Strict):
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
            raise ValueError(format_error(exc, prefix="algorithm")) from None

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
            problems.append(format_error(exc, prefix="task.options"))
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
