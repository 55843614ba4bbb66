"""The run config's blocks that are plain settings: the task's split, the clients, the engine, the output.

Apart from :class:`~fedmosaic.config.run_config.RunConfig`, whose validators reach into the
registries (algorithms, data sets, encoders), these blocks check only their own fields, so they
live here, away from the cross-block checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from fedmosaic.core.device import check_device_name
from fedmosaic.core.settings import Strict, resolve_path


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


class TaskConfig(Strict):
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


class ClientsConfig(Strict):
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


class EngineConfig(Strict):
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


class OutputConfig(Strict):
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
