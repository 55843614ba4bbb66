"""The run settings both algorithm halves are built with: training, model and robustness blocks.

They sit in ``core/`` (below algorithms and engines) so that :class:`~fedmosaic.core.algorithm.Settings`
has real types and an algorithm reads ``settings.training.lr`` or ``settings.robustness.aggregator``
without guessing; ``fedmosaic.config`` assembles them into the whole run's tree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def resolve_path(value: Path | None) -> Path | None:
    """A configured path made absolute against the working directory when the config is read.

    Stored resolved in ``config.toml``, so a resume or report's "Reproduce" line works from any
    directory (``task.data_dir=../shared/datasets/fsdd`` used to be stored as written).
    """
    return None if value is None else Path(value).expanduser().resolve()


class Strict(BaseModel):
    """A config block that refuses unknown keys (a typo is an error, not a silent default)."""

    model_config = ConfigDict(extra="forbid")


class TrainingConfig(Strict):
    """Local training: optimiser, learning rate, batch size, epochs per round."""

    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(32, ge=1)
    local_epochs: int = Field(1, ge=1)


class ModelConfig(Strict):
    """Encoders and fusion: one encoder per modality kind, each a name in the encoder registry.

    The ``*_encoder`` names are checked against the registry (built-ins and plug-ins,
    ``fedmosaic.models.encoders``) by ``fedmosaic.config.RunConfig``: core does not import models.
    """

    embed_dim: int = Field(64, ge=2)
    fusion: Literal["mean", "concat", "attention"] = Field(
        "mean",
        description="how the multimodal classifier combines modality embeddings: mean, concat (learned "
        "'absent' slot per modality) or attention (pooling with a key padding mask); absent ones masked out",
    )
    image_encoder: str = Field(
        "cnn", description="cnn, mobilenet_v3_small, mobilenet_v3_large or a plug-in's image encoder"
    )
    text_encoder: str = Field(
        "tiny",
        description="'tiny' = a small random BERT (text_hidden/layers/heads), or a plug-in's text encoder; "
        "any other name is a Hugging Face hub id or a local model folder (AutoModel/AutoTokenizer)",
    )
    text_hidden: int = Field(64, ge=8)
    text_layers: int = Field(2, ge=1)
    text_heads: int = Field(2, ge=1)
    timeseries_encoder: str = Field("cnn1d", description="cnn1d, lstm or a plug-in's timeseries encoder")
    audio_encoder: str = Field(
        "melcnn", description="melcnn (a CNN over log-mel) or a plug-in's audio encoder"
    )
    embedding_encoder: str = Field(
        "projection",
        description="projection (LayerNorm + Linear over precomputed features) or a plug-in's encoder",
    )
    pretrained: bool = Field(False, description="ImageNet weights for MobileNetV3 (a download)")
    freeze_encoders: bool = Field(
        False,
        description="pretrained encoders stay frozen: each sample's embedding is computed once and cached",
    )
    cache_dir: Path | None = Field(None, description="embedding cache; default ~/.cache/fedmosaic")

    @field_validator("cache_dir")
    @classmethod
    def _resolve_cache_dir(cls, value: Path | None) -> Path | None:
        return resolve_path(value)

    @field_validator("text_encoder")
    @classmethod
    def _resolve_local_model(cls, value: str) -> str:
        # A local model folder is stored absolute; a hub id (no such folder here) stays as written.
        path = Path(value).expanduser()
        return str(path.resolve()) if value != "tiny" and path.is_dir() else value

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ModelConfig:
        if self.text_hidden % self.text_heads:
            raise ValueError(
                f"model.text_heads: {self.text_heads} must divide model.text_hidden ({self.text_hidden})"
            )
        return self


class RobustnessConfig(Strict):
    """Reply validation, the min_clients policy and the aggregation rule (see docs/robustness.md)."""

    validate_replies: bool = Field(
        True,
        description="check each reply's names, shapes, dtypes, finite values and norm before aggregating",
    )
    norm_factor: float = Field(
        100.0,
        gt=1,
        description="an array's RMS may be at most this times its reference (sent / peers' median)",
    )
    norm_floor: float = Field(1.0, gt=0, description="smallest reference RMS (when sent and peers are ~0)")
    min_clients: int = Field(1, ge=1, description="fewest usable replies a round aggregates")
    below_min: Literal["skip", "fail"] = Field(
        "skip", description="below min_clients: skip the round (global state unchanged) or stop the run"
    )
    aggregator: Literal["mean", "median", "trimmed_mean"] = Field(
        "mean",
        description="for weights and uploaded embeddings/vectors: weighted mean, coordinate-wise median "
        "or trimmed mean",
    )
    trim_fraction: float = Field(
        0.2, ge=0, lt=0.5, description="trimmed_mean: share of values dropped at each end, per coordinate"
    )
