"""The benchmark harness (benchmarks/_harness.py): every published section that has stored results
regenerates from them byte for byte, and the harness's loop, storage, resume and smoke rules hold on a
toy benchmark (no training: these tests take well under a second each)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmark_runs import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import _harness as harness
from _harness import mean_std

STORED = sorted((ROOT / "benchmarks" / "results").glob("*.json"))


def _renderer_of(stored: dict) -> Callable[[dict], str]:
    """The renderer of a stored section: its script's Benchmark, or the script's ``render``."""
    module = importlib.import_module(Path(stored["script"]).stem)
    for value in vars(module).values():
        if isinstance(value, harness.Benchmark) and value.section == stored["section"]:
            return value.render
    return module.render


@pytest.mark.parametrize("path", STORED, ids=[p.stem for p in STORED])
def test_section_regenerates_from_its_stored_results(path: Path) -> None:
    stored = json.loads(path.read_text())
    assert stored["section"] == path.stem
    published = harness.section_text(ROOT / "BENCHMARKS.md", stored["section"])
    assert published is not None, f"BENCHMARKS.md has no {stored['section']} section"
    assert harness.rendered(stored, _renderer_of(stored)) == published


def test_matrix_section_regenerates_from_its_committed_rows() -> None:
    import matrix

    assert matrix.stored_section() == harness.section_text(ROOT / "BENCHMARKS.md", "matrix")


def test_stored_results_hold_numbers_not_run_folders() -> None:
    for path in STORED:
        assert path.stat().st_size < 2_000_000, path
        text = path.read_text()
        assert "/tmp/" not in text and str(ROOT) not in text, f"{path.name} names a local folder"


# A toy benchmark: the measurement is arithmetic on the row and seed, so the harness is tested alone.
CALLS: list[tuple[str, int]] = []


def _measure(row: harness.Row, seed: int, ctx: harness.Context) -> dict:
    CALLS.append((row.name, seed))
    return {"value": row.params["base"] + seed / 10, "rounds": ctx.args.rounds}


def _render(stored: harness.Results) -> str:
    lines = [f"Command: `{stored['command']}`", ""]
    for name, runs in harness.by_row(stored).items():
        lines.append(f"| {name} | {mean_std([r['value'] for r in runs], 2)} | {runs[0]['rounds']} |")
    return "\n".join(lines)


def _rows(args: argparse.Namespace) -> list[harness.Row]:
    return [
        harness.Row("a", ("algorithm.name=fedavg",), params={"base": 1.0}),
        harness.Row("b", (), seeds=(0,), params={"base": 5.0}),
    ]


TOY = harness.Benchmark("toy", "Toy benchmark.", "benchmarks/toy.py", _rows, _render, _measure, rounds=4)


def _main(tmp: Path, *argv: str) -> harness.Results:
    return TOY.main(["--results", str(tmp / "results"), "--output", str(tmp / "B.md"), *argv])


def test_harness_runs_rows_by_seeds_stores_and_publishes(tmp_path: Path, capsys) -> None:
    CALLS.clear()
    stored = _main(tmp_path, "--seeds", "0", "1", "--rounds", "3")
    assert CALLS == [("a", 0), ("b", 0), ("a", 1)]  # seeds outer; row b only at its own seed
    assert stored["command"] == "python benchmarks/toy.py --seeds 0 1 --rounds 3"
    assert [(r["row"], r["seed"], r["numbers"]["value"]) for r in stored["runs"]] == [
        ("a", 0, 1.0),
        ("b", 0, 5.0),
        ("a", 1, 1.1),
    ]
    assert json.loads((tmp_path / "results" / "toy.json").read_text()) == stored
    session = stored["sessions"][0]
    assert session["wall_s"] >= 0 and session["cpu_s"] >= 0 and session["cores"] >= 1
    published = harness.section_text(tmp_path / "B.md", "toy")
    table = "| a | 1.05 ± 0.05 | 3 |\n| b | 5.00 ± 0.00 | 3 |"
    command = "Command: `python benchmarks/toy.py --seeds 0 1 --rounds 3`"
    assert published == f"{command}\n\n{table}\n\n{harness.provenance(stored)}"
    assert harness.provenance(stored).startswith("Measured ")

    # --from-results runs nothing and writes the same section
    CALLS.clear()
    (tmp_path / "B.md").write_text("# Benchmarks\n")
    _main(tmp_path, "--from-results")
    assert CALLS == [] and harness.section_text(tmp_path / "B.md", "toy") == published


def test_resume_runs_only_what_is_missing_and_refuses_other_options(tmp_path: Path) -> None:
    _main(tmp_path, "--seeds", "0", "1")
    path = tmp_path / "results" / "toy.json"
    stored = json.loads(path.read_text())
    stored["runs"] = stored["runs"][:1]  # as if stopped after the first run
    path.write_text(json.dumps(stored))
    CALLS.clear()
    again = _main(tmp_path, "--seeds", "0", "1", "--resume")
    assert CALLS == [("b", 0), ("a", 1)]
    assert len(again["sessions"]) == 2
    with pytest.raises(SystemExit, match="other options"):
        _main(tmp_path, "--seeds", "0", "1", "--rounds", "9", "--resume")


def test_smoke_never_publishes_or_touches_the_results_folder(tmp_path: Path, capsys) -> None:
    CALLS.clear()
    stored = TOY.main(["--smoke", "--seeds", "3", "4", "--output", str(tmp_path / "B.md")])
    assert CALLS == [("b", 0), ("a", 3)]  # the first seed only, and row b's own
    assert stored["command"] == "python benchmarks/toy.py --smoke"
    assert stored["options"]["rounds"] == 2  # the smoke rounds
    assert not (tmp_path / "B.md").exists()
    assert "| a | 1.30 ± 0.00 | 2 |" in capsys.readouterr().out


def test_provenance_sums_sessions_and_keeps_notes() -> None:
    stored = {
        "sessions": [
            {
                "date": "2026-12-01 10:00 UTC",
                "commit": "abc",
                "cores": 2,
                "load_before": 1.5,
                "load_after": 3.0,
                "wall_s": 100.0,
                "cpu_s": 80.0,
            },
            {
                "date": "2026-12-02 10:00 UTC",
                "commit": "abc",
                "cores": 2,
                "load_before": 0.5,
                "load_after": 2.0,
                "wall_s": 50.0,
                "cpu_s": 40.0,
            },
        ],
        "notes": ["Split over two days."],
    }
    text = harness.provenance(stored)
    assert text.startswith(
        "Measured 2026-12-01 to 2026-12-02 at commit abc in 2 sessions: 150 s wall, 120 CPU s"
    )
    assert "load average 0.5 to 3 at the start and end of each session on 2 cores" in text and text.endswith(
        "\n\nSplit over two days."
    )


def test_jobs_give_the_same_results_in_row_order(tmp_path: Path) -> None:
    one = _main(tmp_path / "one", "--seeds", "0", "1")
    two = _main(tmp_path / "two", "--seeds", "0", "1", "--jobs", "2")
    assert [(r["row"], r["seed"], r["numbers"]) for r in two["runs"]] == [
        (r["row"], r["seed"], r["numbers"]) for r in one["runs"]
    ]
    assert two["command"] == one["command"]  # how many processes ran it changes no number
