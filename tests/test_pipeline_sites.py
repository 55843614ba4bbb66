"""The file pipeline as a deployment: each site steps with only its own data, rounds close without
clients that never reply, and every step says whether it is done or what it waits for."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedmosaic.cli import app
from fedmosaic.config import RunConfig, load_config
from fedmosaic.core.checkpoint import load_message
from fedmosaic.data.tasks import build_task
from fedmosaic.engines.federation import Federation
from fedmosaic.engines.files import PUBLISHED, AlreadyDone, FilePipeline, NotDue
from fedmosaic.engines.run_folder import read_jsonl
from fedmosaic.testing import TINY_OVERRIDES, tiny_config

runner = CliRunner()


def _cli(*args: str | Path | int, code: int = 0) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output


def _sets(overrides: list[str] | tuple[str, ...]) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


def _copy_mail(source: Path, target: Path, cid: str, slot: str) -> None:
    """What the coordinator's courier does: move one message and its envelope between folders."""
    for suffix in (".safetensors", ".json"):
        shutil.copy2(source / cid / f"{slot}{suffix}", target / cid / f"{slot}{suffix}")


def _site(coordinator: Path, sites: Path, cid: str) -> Path:
    """A site's folder: the server's published files and this client's folder, nothing else."""
    site = sites / cid
    for name in PUBLISHED:
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(coordinator / name, site / name)
    shutil.copytree(coordinator / cid, site / cid)
    return site


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_each_site_steps_with_only_its_own_data_and_the_numbers_equal_the_local_engine(
    tmp_path: Path,
) -> None:
    from mhealth_files import mhealth_overrides, write_mhealth

    raw = write_mhealth(tmp_path / "mhealth")
    overrides = [*mhealth_overrides(raw), "algorithm.name=gvf", "algorithm.dim=16"]
    cfg = load_config(None, overrides)
    expected = Federation.from_config(cfg, build_task(cfg), folder=tmp_path / "engine")
    expected.run()

    root = tmp_path / "coordinator"
    _cli("init-root", "--root", root, *_sets(overrides))
    clients = [s.id for s in FilePipeline(root).specs]
    sites = {cid: _site(root, tmp_path / "sites", cid) for cid in clients}
    for cid in clients:  # shipped: the coordinator keeps only the clients' mail
        (root / cid / "node.json").unlink()
        (root / cid / "data.npz").unlink()
    raw.rename(tmp_path / "mhealth-gone")  # no step may load the data set again

    site = sites[clients[0]]
    assert _files(site) == {"config.toml", "server/task.json"} | {
        f"{clients[0]}/{name}" for name in ("node.json", "data.npz", "inbox.safetensors", "inbox.json")
    }
    held = json.loads((site / clients[0] / "node.json").read_text())["clients"]
    assert [c["id"] for c in held] == [clients[0]]  # its own data only

    for r in range(1, cfg.rounds + 1):
        progress = FilePipeline(root).progress
        assert progress["round"] == r
        for cid in progress["planned"]:
            if r > 1:
                _copy_mail(root, sites[cid], cid, "inbox")
            assert f"trained: {cid}" in _cli("train-clients", "--root", sites[cid], "--client", cid)
            _copy_mail(sites[cid], root, cid, "outbox")
        _cli("aggregate-vectors", "--root", root)
        for cid in FilePipeline(root).progress["eval_planned"]:
            _copy_mail(root, sites[cid], cid, "eval_inbox")
            _cli("update-clients", "--root", sites[cid], "--client", cid)
            _copy_mail(sites[cid], root, cid, "eval_outbox")
        closed = _cli("update-clients", "--root", root)
        assert f"round {r} closed" in closed

    assert "all rounds done" in closed
    assert read_jsonl(root / "metrics.jsonl") == expected.rows()  # same seed, same numbers
    assert not (tmp_path / "mhealth").exists()
    assert all(not (root / cid / "data.npz").exists() for cid in clients)
    # A run folder's outputs: report.md written by the last close, and `fedmosaic report` reads the root.
    assert (root / "report.md").is_file() and (root / "summary.json").is_file()
    summary = json.loads((root / "summary.json").read_text())
    engine_summary = expected.summary()
    for key in ("algorithm", "dataset", "seed", "rounds", "clients", "groups", "data", "final"):
        assert summary[key] == engine_summary[key], key
    assert (summary["bytes_up"], summary["bytes_down"]) == (
        engine_summary["bytes_up"],
        engine_summary["bytes_down"],
    )
    assert "written:" in _cli("report", root)


def _gvf() -> RunConfig:
    return tiny_config("gvf", ["algorithm.dim=16"])


def test_min_clients_closes_a_round_without_a_client_and_its_late_reply_is_ignored(tmp_path: Path) -> None:
    cfg = _gvf()
    root = tmp_path / "root"
    pipeline = FilePipeline.init(root, cfg)
    planned = pipeline.progress["planned"]
    absent, present = planned[-1], planned[:-1]
    late_site = _site(root, tmp_path / "sites", absent)  # its site, which will answer too late
    (root / absent / "node.json").unlink()  # its data is at its site only
    (root / absent / "data.npz").unlink()

    pipeline.train_clients()  # everyone whose data is here
    with pytest.raises(NotDue, match=rf"waiting for the trained replies of {absent} \(3 of 4 in\)"):
        pipeline.aggregate_vectors()
    pipeline.aggregate_vectors(min_clients=len(present))
    assert pipeline.progress["row"]["dropped"] == [absent]

    assert pipeline.update_clients() is None  # the others evaluate; the round waits for the absent one
    with pytest.raises(NotDue, match=rf"waiting for the evaluations of {absent}"):
        pipeline.update_clients()
    row = pipeline.update_clients(min_clients=len(present))
    assert row is not None and row["round"] == 1
    assert row["dropped"] == [absent] and row["eval_dropped"] == [absent]
    assert read_jsonl(root / "metrics.jsonl") == [row]

    # The absent site wakes up and answers round 1; its reply reaches the coordinator in round 2.
    FilePipeline(late_site).train_clients(absent)
    _copy_mail(late_site, root, absent, "outbox")
    pipeline.train_clients()
    with pytest.raises(NotDue, match=rf"ignored late replies to earlier rounds from {absent}"):
        pipeline.aggregate_vectors()
    out = _cli("aggregate-vectors", "--root", root, "--min-clients", len(present))
    assert f"without (no reply): {absent}" in out
    progress = pipeline.progress
    assert progress["row"]["dropped"] == [absent]  # not aggregated into round 2
    assert progress["bytes_up"] == sum(load_message(root / c / "outbox.safetensors").nbytes for c in present)


def test_steps_say_already_done_and_name_the_clients_still_pending(tmp_path: Path) -> None:
    root = tmp_path / "root"
    overrides = [*TINY_OVERRIDES, "algorithm.name=gvf", "algorithm.dim=16", "rounds=1"]
    init = _cli("init-root", "--root", root, *_sets(overrides))
    assert "round 1: next step train-clients (waiting for: client_0, client_1, client_2, client_3)" in init
    out = _cli("aggregate-vectors", "--root", root, code=2)
    assert "not due in round 1; the next step is train-clients" in out and "client_3" in out
    out = _cli("update-clients", "--root", root, code=2)
    assert "not due in round 1; the next step is train-clients" in out

    _cli("train-clients", "--root", root, "--client", "client_0")
    out = _cli("train-clients", "--root", root, "--client", "client_0")  # exit 0
    assert "already done" in out and "waiting for: client_1, client_2, client_3" in out
    out = _cli("aggregate-vectors", "--root", root, code=2)
    assert "waiting for the trained replies of client_1, client_2, client_3 (1 of 4 in)" in out
    assert "--min-clients K (K <= 1)" in out
    _cli("train-clients", "--root", root)
    out = _cli("train-clients", "--root", root)
    assert "already done in round 1; the next step is aggregate-vectors" in out
    _cli("aggregate-vectors", "--root", root)
    assert "already done in round 1; the next step is update-clients" in _cli(
        "aggregate-vectors", "--root", root
    )

    # A site's folder: its own mail decides; progress.json is the coordinator's alone.
    site = _site(root, tmp_path / "sites", "client_1")
    _copy_mail(root, site, "client_1", "eval_inbox")
    out = _cli("train-clients", "--root", site, "--client", "client_1")
    assert "already done: client_1 answered round 1" in out
    _cli("update-clients", "--root", site, "--client", "client_1")
    assert "already done" in _cli("update-clients", "--root", site, "--client", "client_1")
    assert "is a site's folder" in _cli("aggregate-vectors", "--root", site, code=2)

    closed = _cli("update-clients", "--root", root)
    assert "round 1 closed" in closed and "all rounds done" in closed
    for step in ("train-clients", "aggregate-vectors", "update-clients"):
        assert "already done: the pipeline finished all 1 rounds" in _cli(step, "--root", root)
    with pytest.raises(AlreadyDone):
        FilePipeline(root).train_clients()
    assert (root / "report.md").is_file()
