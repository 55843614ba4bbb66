"""(epsilon, delta) for a run with DP on, from Opacus' RDP accountant.

Two numbers, two threat models (docs/privacy.md):

* ``epsilon`` — federation level: the sampled Gaussian mechanism with noise multiplier ``z``,
  sampling rate ``q = clients_per_round / n_clients`` and one step per round. It bounds what the
  sequence of global models reveals about any one client's whole data set (add/remove one client,
  its absence = a zero update) to someone who does not see who was sampled or the individual
  uploads. Opacus analyses Poisson sampling; the server samples a fixed number of clients, the
  usual approximation (exact when every client takes part, q = 1).
* ``epsilon_local`` — per client, against whoever sees its uploads (the server, the network): each
  participation is a Gaussian mechanism whose output moves by at most ``2C`` between *any* two data
  sets of that client (local DP), i.e. noise multiplier ``z / 2`` without subsampling, composed over
  the rounds the client actually took part in (the most-sampled client is reported).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from fedmosaic.privacy.dp import PrivacyConfig


def _rdp_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    if steps == 0:
        return 0.0
    from opacus.accountants import RDPAccountant  # imported late: opacus loads a lot

    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    return float(accountant.get_epsilon(delta=delta))


def federation_epsilon(noise_multiplier: float, sample_rate: float, rounds: int, delta: float) -> float:
    """Client-level epsilon of ``rounds`` rounds, each sampling clients at rate ``sample_rate``."""
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate: must be in (0, 1], got {sample_rate}")
    return _rdp_epsilon(noise_multiplier, sample_rate, rounds, delta)


def local_epsilon(noise_multiplier: float, participations: int, delta: float) -> float:
    """Local-DP epsilon of one client's ``participations`` uploads (sensitivity 2C: multiplier z/2)."""
    return _rdp_epsilon(noise_multiplier / 2.0, 1.0, participations, delta)


def privacy_summary(
    config: PrivacyConfig,
    rows: Iterable[dict[str, Any]],
    n_clients: int,
    clients_per_round: int,
    pooled: bool = False,
) -> dict[str, Any]:
    """The ``privacy`` block of summary.json for the rounds in ``rows`` (metrics.jsonl rows).

    ``pooled``: the algorithm trains on pooled raw data (the centralized baseline), so no guarantee.
    """
    if pooled:
        return {"applies": False, "reason": "the algorithm pools raw client data: nothing is private"}
    rows = list(rows)
    counts = Counter(cid for row in rows for cid in row.get("clients", []))
    most = max(counts.values(), default=0)
    sample_rate = min(1.0, clients_per_round / n_clients)
    return {
        "applies": True,
        "mechanism": "client-level Gaussian: joint L2 clip of each upload + N(0, (z*C)^2) per coordinate",
        "clip": config.clip,
        "noise_multiplier": config.noise_multiplier,
        "delta": config.delta,
        "sample_rate": sample_rate,
        "rounds": len(rows),
        "epsilon": federation_epsilon(config.noise_multiplier, sample_rate, len(rows), config.delta),
        "max_participations": most,
        "epsilon_local": local_epsilon(config.noise_multiplier, most, config.delta),
        "accountant": "opacus.accountants.RDPAccountant",
    }


def privacy_markdown(block: dict[str, Any]) -> list[str]:
    """report.md lines for a summary's ``privacy`` block."""
    if not block.get("applies", True):
        return ["## Differential privacy", "", f"Enabled but not applicable: {block['reason']}.", ""]
    return [
        "## Differential privacy",
        "",
        f"Every upload clipped to L2 norm C = {block['clip']:g} and noised with z = "
        f"{block['noise_multiplier']:g} (std z*C per coordinate); client-level, delta = {block['delta']:g}. "
        f"Federation epsilon = **{block['epsilon']:.3g}** over {block['rounds']} rounds at sampling rate "
        f"{block['sample_rate']:.3g}; local epsilon of the most-sampled client "
        f"({block['max_participations']} uploads, against whoever sees them) = "
        f"{block['epsilon_local']:.3g}. Accountant: "
        f"{block['accountant']}; what is and is not covered: docs/privacy.md.",
        "",
    ]
