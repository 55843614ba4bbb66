"""The scenarios benchmark in smoke mode (one setting, 1 round, part of HAPT), so it never rots."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmark_runs import ROOT, run_benchmark

sys.path.insert(0, str(ROOT / "benchmarks"))


# ~17 CPU s (two HAPT loads, five federations, two evaluations): more than this share of the
# default run's CI time, so it runs with the slow tests (pytest -m slow)
@pytest.mark.slow
def test_scenarios_benchmark_smoke(tmp_path: Path) -> None:
    if not (ROOT.parent / "shared" / "datasets" / "uci-hapt" / "HAPT-RawData.tar.xz").is_file():
        pytest.skip("real HAPT archive not available")
    target = tmp_path / "BENCHMARKS.md"
    proc = run_benchmark("scenarios.py", "--smoke", "--output", str(target), timeout=600)
    out = proc.stdout
    assert "| label noise 0.5 |" in out
    assert "| majority class (seed 0) |" in out and "| untrained model (seed 0) |" in out
    assert "| FedMultimodal, published" in out and "77.74" in out and "85.17" in out
    assert "- label noise 0.5: 0 labels dropped," in out  # the effective counts from summary.json
    assert "`python benchmarks/scenarios.py --smoke`" in out
    assert not target.exists()  # smoke mode never overwrites the published table


def _summary(f1: float, scenarios: dict | None = None) -> dict:
    data = {"client_train": 100, "test": 50, **({"scenarios": scenarios} if scenarios else {})}
    return {"final": {"test/acc+gyro": {"macro_f1": f1 / 100}}, "clients": 105, "data": data}


def test_table_pairs_seeds_and_names_each_rows_settings() -> None:
    import scenarios as bench  # benchmarks/scenarios.py

    chosen = bench.settings((0.5,))
    record = {"labels_dropped": 0, "labels_flipped": 40, "train_before": 100}
    record |= {"modality_samples": 200, "modality_samples_dropped": 0}
    results: dict[str, list[dict]] = {label: [] for label in chosen}
    for seed, shift in ((0, 0.0), (1, 2.0)):
        base = {"_seed": seed, "_cpu_s": 1.0}
        results["clean, fusion mean"].append({**base, **{a: _summary(70 + shift) for a in bench.ALGORITHMS}})
        results["clean, fusion attention"].append(
            {**base, **{a: _summary(75 + shift) for a in bench.ALGORITHMS}}
        )
        noisy = {a: _summary(60 + 2 * shift, record) for a in bench.ALGORITHMS}
        results["label noise 0.5"].append({**base, **noisy})
    text = bench.table(results, chosen, {"majority class": 5.2}, [0, 1], 10, 10, "script", "defaults")
    assert "| clean, fusion mean | 71.0 ± 1.0 |" in text
    assert "| label noise 0.5 | 62.0 ± 2.0 (2 seeds) |" not in text  # both seeds ran: no note
    assert "`--set task.label_noise_rate=0.5`" in text
    # paired by seed: attention - mean is +5 in both seeds; clean - noisy is 10 and 8
    assert "- attention − mean fusion, fedavg: 5.0 ± 0.0 F1 points (ahead in 2/2 seeds)" in text
    assert "| label noise 0.5 | 9.0 ± 1.0 (hurts in 2/2 seeds) |" in text
    assert "published: +7.43" in text and "| majority class (seed 0) | 5.2 |" in text
    assert "- label noise 0.5: 0 labels dropped, 40 flipped of 100 training windows" in text
    assert "modality missing" not in text.split("Paired by seed")[1]  # settings without runs are left out
