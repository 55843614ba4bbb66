"""A client that disappears is news: skipped samples and lost clients reach the terminal and report.md,
and a run that loses a client whose group the mix names fails in one line unless allowed.

The data: the example folder tree (6 clients) with every row of ``client_3`` bad (empty labels), read
with ``task.on_bad_sample = "skip"``. Before, the run went on with 5 clients and only summary.json
counted the skipped rows.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from fedmosaic.cli import app
from fedmosaic.config import load_config
from fedmosaic.data import splitting
from fedmosaic.data.registry import ROLE_FREE, ROLE_TEST, LoadedData
from fedmosaic.data.tasks import TaskSplitError, build_task

ROOT = Path(__file__).resolve().parents[1]
PER_CLIENT = 20
SKIPPED_LINE = 'no sample of it loaded (every one was bad and skipped: task.on_bad_sample = "skip")'


def make_tree(root: Path, broken: bool = True) -> Path:
    spec = importlib.util.spec_from_file_location(
        "make_folder_tree", ROOT / "examples" / "make_folder_tree.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build_tree(root, clients=6, per_client=PER_CLIENT, test=40, image_size=12, seed=0)
    if broken:  # client_3 (text only, CSV): every row loses its label
        path = root / "client_3" / "train" / "samples.csv"
        rows = list(csv.DictReader(path.open(encoding="utf-8")))
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows({"text": r["text"], "label": ""} for r in rows)
    return root


def overrides(root: Path, mix: str, *extra: str) -> list[str]:
    return [
        "task.dataset=folder",
        f"task.data_dir={root}",
        "task.partition=natural",
        "task.options.image_size=12",
        "task.on_bad_sample=skip",
        "task.proxy_size=10",
        "task.labelled_size=10",
        f'clients.mix="{mix}"',
        "rounds=1",
        "compare=[]",
        "engine.progress=false",
        "output.plots=false",
        "model.embed_dim=16",
        "model.text_hidden=16",
        *extra,
    ]


def run_cli(out: Path, settings: list[str]) -> Any:
    return CliRunner().invoke(
        app, ["run", "-q", "--out", str(out), *(p for s in settings for p in ("--set", s))]
    )


def test_a_lost_client_is_on_the_terminal_and_in_the_report(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    out = tmp_path / "run"
    result = run_cli(out, overrides(root, ""))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    first_bad = root / "client_3" / "train" / "samples.csv"
    assert warnings == [
        f'warning: {PER_CLIENT} bad samples were skipped (task.on_bad_sample = "skip"); the first: '
        f"{first_bad}:2: empty label; summary.json counts them and lists the first 5",
        f"warning: client client_3 was lost, the run goes on without it: {SKIPPED_LINE}",
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clients"] == 5
    assert summary["data"]["lost_clients"] == [{"id": "client_3", "group": "", "reason": SKIPPED_LINE}]
    report = (out / "report.md").read_text()
    assert "## Data lost before training" in report
    assert f"- client client_3 was lost, the run goes on without it: {SKIPPED_LINE}" in report
    assert f"- {PER_CLIENT} bad samples were skipped" in report


def test_losing_a_client_the_mix_names_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    out = tmp_path / "run"
    result = run_cli(out, overrides(root, "each:2,all:2"))
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(
        r"error: clients\.mix: 1 of the 6 clients was lost, client_3 \(group (image|text|image\+text)\): "
        + re.escape(SKIPPED_LINE)
        + r"; fix the data, or set clients\.allow_lost = true to run without it",
        lines[0],
    ), lines[0]
    assert not out.exists()


def test_allow_lost_runs_on_without_the_lost_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken, healthy = make_tree(tmp_path / "broken"), make_tree(tmp_path / "healthy", broken=False)
    mix = "each:2,all:2"
    with pytest.raises(TaskSplitError, match="allow_lost"):
        build_task(load_config(None, overrides(broken, mix)))
    dealt: list[int] = []
    deal = splitting.deal_modalities
    monkeypatch.setattr(
        splitting, "deal_modalities", lambda cfg, names, n, rng: dealt.append(n) or deal(cfg, names, n, rng)
    )
    task = build_task(load_config(None, overrides(broken, mix, "clients.allow_lost=true")))
    whole = build_task(load_config(None, overrides(healthy, mix)))
    assert dealt == [6, 6]  # the mix is dealt over every client the data has, the lost one included
    assert [s.id for s in task.specs] == [s.id for s in whole.specs if s.id != "client_3"]
    lost = task.data_summary()["lost_clients"]
    assert lost == [{"id": "client_3", "group": lost[0]["group"], "reason": SKIPPED_LINE}]
    assert lost[0]["group"] in ("image", "text", "image+text")  # the group the mix gave it
    assert whole.data_summary()["lost_clients"] == []
    out = tmp_path / "run"
    result = run_cli(out, overrides(broken, mix, "clients.allow_lost=true"))
    assert result.exit_code == 0, result.output
    assert f"(group {lost[0]['group']}) was lost" in result.stderr


def test_owners_lost_to_the_server_sets_or_empty_and_test_users_are_not_lost() -> None:
    loaded = LoadedData(
        modalities=(),
        store={},
        labels=np.zeros(5, dtype=np.int64),
        class_names=("a",),
        groups=np.array([0, 0, 1, 1, 2]),
        group_names=("kept", "test_user", "taken", "empty"),
        role=np.array([ROLE_FREE, ROLE_FREE, ROLE_TEST, ROLE_TEST, ROLE_FREE]),
    )
    cfg = load_config(None, [])
    assert splitting.lost_owners(cfg, loaded, loaded.role, kept=[0]) == [
        (2, "all 1 of its samples went to the server's test/proxy/labelled sets"),
        (3, "no sample of it loaded (its data holds none)"),
    ]
