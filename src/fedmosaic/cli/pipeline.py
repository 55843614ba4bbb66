"""The file pipeline's commands (docs: ``fedmosaic.engines.files``): ``init-root``, ``train-clients``,
``aggregate-vectors``, ``update-clients``; after each, one line saying where the pipeline stands.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from fedmosaic.cli.app import app, out
from fedmosaic.cli.commands import PluginOption
from fedmosaic.cli.lines import errors_as_lines, warning

RootOption = Annotated[Path, typer.Option("--root", "-r", help="the pipeline's folder tree (CLIENT_ROOT)")]
ClientOption = Annotated[
    str | None, typer.Option("--client", "-k", help="run this step for one client only, as its site would")
]


MinClientsOption = Annotated[
    int | None,
    typer.Option(
        "--min-clients",
        help="close the round with the replies present if at least K clients replied; "
        "the others are recorded as dropped and a late reply is ignored",
    ),
]


def _pipeline_step(root: Path, action: Callable[[], Any]) -> Any:
    """Run one pipeline step: errors are lines (:func:`errors_as_lines`); a step already done is not
    an error (exit 0)."""
    from fedmosaic.engines.files import AlreadyDone

    with errors_as_lines(lambda: root):
        try:
            return action()
        except AlreadyDone as exc:
            out.print(escape(str(exc)), highlight=False, soft_wrap=True)
            _due(root)
            raise typer.Exit(0) from None


def _write_report(folder: Path, cfg: Any) -> None:
    """report.md (and plots) of a finished pipeline root, as a run folder has them."""
    from fedmosaic.reporting.report import write_run_report

    write_run_report(folder, plots=cfg.output.plots)


def _due(root: Path) -> None:
    """Where the pipeline stands: the coordinator's next step and whom it waits for, or a site's state."""
    from fedmosaic.engines.files import FilePipeline

    out.print(escape(FilePipeline(root).status()), highlight=False, soft_wrap=True)


@app.command("init-root")
def init_root(
    root: RootOption,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="override KEY=VALUE")] = None,
    plugin: PluginOption = None,
) -> None:
    """Split the data set into client_k/ folders (each client's own data) and server/; plan round 1.

    The tree's config.toml lists the ``--plugin`` modules: every later step loads them too. Each site
    needs only config.toml, server/task.json and its own client_k/.
    """
    from fedmosaic.config import load_config
    from fedmosaic.engines.files import FilePipeline
    from fedmosaic.reporting.report import data_notes

    _pipeline_step(root, lambda: FilePipeline.init(root, load_config(config, set_ or [], plugin)))
    published = json.loads((root / "server" / "server.json").read_text())
    for line in data_notes(published["data"]):
        warning(line)
    out.print(f"built {root}", highlight=False, soft_wrap=True)
    _due(root)


@app.command("train-clients")
def train_clients(root: RootOption, client: ClientOption = None) -> None:
    """Clients train on their own data and write their replies (client_k/outbox.*)."""
    from fedmosaic.engines.files import FilePipeline

    done = _pipeline_step(root, lambda: FilePipeline(root).train_clients(client))
    trained = ", ".join(done) if done else "no client (none is asked this round)"
    out.print(f"trained: {trained}", highlight=False, soft_wrap=True)
    _due(root)


@app.command("aggregate-vectors")
def aggregate_vectors(root: RootOption, min_clients: MinClientsOption = None) -> None:
    """Server step: aggregate the clients' replies (global vectors, weighted adapters)."""
    from fedmosaic.engines.files import FilePipeline

    train = _pipeline_step(root, lambda: FilePipeline(root).aggregate_vectors(min_clients))
    stats = ", ".join(f"{k} {v:.4g}" for k, v in sorted(train.items()))
    out.print(f"aggregated{': ' + stats if stats else ''}", highlight=False, soft_wrap=True)
    row = FilePipeline(root).progress["row"]
    for key, what in (("dropped", "without (no reply)"), ("rejected", "rejected")):
        if row.get(key):
            out.print(f"{what}: {', '.join(sorted(row[key]))}", highlight=False, soft_wrap=True)
    if row.get("skipped"):
        out.print(f"round skipped: {row['skipped']}", highlight=False, soft_wrap=True)
    _due(root)


@app.command("update-clients")
def update_clients(
    root: RootOption, client: ClientOption = None, min_clients: MinClientsOption = None
) -> None:
    """Clients evaluate (client_k/eval_outbox.*); in the coordinator's root the round then closes."""
    from fedmosaic.engines.files import FilePipeline

    row = _pipeline_step(
        root, lambda: FilePipeline(root, on_finish=_write_report).update_clients(client, min_clients)
    )
    if row is not None:
        missing = row.get("dropped", []) + row.get("eval_dropped", [])
        closed = f"round {row['round']} closed"
        if missing:
            closed += f" without {', '.join(sorted(set(missing)))}"
        if "overall" in row.get("eval", {}):
            closed += f": overall accuracy {row['eval']['overall']['accuracy']:.3f}"
        out.print(closed, highlight=False, soft_wrap=True)
    _due(root)
