"""Robust aggregation rules: the weighted mean, the coordinate-wise median and the trimmed mean.

A server combines the same-named array of several replies into one. The weighted mean is FedAvg's
rule; one client that sends a huge or sign-flipped array moves it arbitrarily. The coordinate-wise
median and the coordinate-wise trimmed mean (Yin et al., ICML 2018) bound that influence: a
coordinate's result stays within the honest clients' range as long as fewer than half (median) or
fewer than ``trim`` of each tail (trimmed mean) of the values are poisoned. Both ignore the
aggregation weights on purpose: a weight is a number the client reports (``n_train``), so honouring
it would let one client buy back the influence the rule takes away.

The rule is chosen in ``[robustness]`` (``aggregator``, ``trim_fraction``) and reaches a server
half through :func:`aggregation_of` on its :class:`~fedmosaic.core.algorithm.Settings`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from fedmosaic.core.algorithm import Settings

Rule = Literal["mean", "median", "trimmed_mean"]
RULES: tuple[str, ...] = ("mean", "median", "trimmed_mean")


def weighted_mean(values: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """``sum_i w_i x_i / sum_i w_i`` in float64 (equal weights when ``weights`` is None)."""
    stacked = np.stack([np.asarray(v, dtype=np.float64) for v in values])
    return np.average(stacked, axis=0, weights=None if weights is None else np.asarray(weights, np.float64))


def coordinate_median(values: Sequence[np.ndarray]) -> np.ndarray:
    """The median of every coordinate over the arrays (float64; the mean of the middle two when even)."""
    return np.median(np.stack([np.asarray(v, dtype=np.float64) for v in values]), axis=0)


def trimmed_mean(values: Sequence[np.ndarray], trim: float) -> np.ndarray:
    """Per coordinate, the mean after dropping the ``floor(trim * n)`` smallest and largest values.

    With ``trim * n < 1`` nothing is dropped (it is the plain mean): ``trim`` must reach the share
    of poisoned clients it is meant to survive.
    """
    if not 0 <= trim < 0.5:
        raise ValueError(f"robustness.trim_fraction: expected 0 <= value < 0.5, got {trim}")
    from scipy.stats import trim_mean  # lazy: scipy.stats takes ~0.7 s to import, most runs never trim

    return np.asarray(
        trim_mean(np.stack([np.asarray(v, dtype=np.float64) for v in values]), trim, axis=0),
        dtype=np.float64,
    )


@dataclass(frozen=True)
class Aggregation:
    """One configured rule: ``combine`` turns the same-named arrays of several replies into one."""

    rule: Rule = "mean"
    trim: float = 0.2

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"robustness.aggregator: expected one of {', '.join(RULES)}, got {self.rule!r}")

    @property
    def is_mean(self) -> bool:
        """True for the weighted mean (callers keep their own, bit-exact, mean code path)."""
        return self.rule == "mean"

    def combine(self, values: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
        """The aggregate of ``values`` (float64); ``weights`` only matter to the mean."""
        if not values:
            raise ValueError("nothing to aggregate: no reply carries this array")
        if self.rule == "median":
            return coordinate_median(values)
        if self.rule == "trimmed_mean":
            return trimmed_mean(values, self.trim)
        return weighted_mean(values, weights)

    def combine_like(self, values: Sequence[np.ndarray]) -> np.ndarray:
        """Unweighted, in the values' dtype: ``np.mean(values, axis=0)`` exactly for the mean (what the
        embedding averages of FedMEKT did before), the robust rule cast back otherwise."""
        if self.is_mean:
            return np.mean(values, axis=0)
        return self.combine(values).astype(np.result_type(*values))


def aggregation_of(settings: Settings) -> Aggregation:
    """The run's rule from ``settings.robustness`` (the weighted mean when there is no such block)."""
    robustness = settings.robustness
    if robustness is None:
        return Aggregation()
    return Aggregation(robustness.aggregator, robustness.trim_fraction)
