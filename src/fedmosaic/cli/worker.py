"""The command a deployment runs beside each Flower SuperNode: ``node-worker`` (docs/deploy.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedmosaic.cli.app import app
from fedmosaic.cli.lines import fail


@app.command("node-worker")
def node_worker(
    node_config: Annotated[
        str,
        typer.Option("--node-config", help="the SuperNode's --node-config, e.g. 'data-dir=\"/data/node_0\"'"),
    ],
    ready: Annotated[
        Path | None, typer.Option("--ready", help="file written once the worker accepts messages")
    ] = None,
) -> None:
    """Serve a SuperNode's ClientApp messages from one long-lived process (start it beside the node).

    Keeps torch imported and the node's data loaded; the per-message ClientApp forwards each message
    over a private Unix socket and falls back to doing the work itself when no worker runs. Stops on
    SIGTERM or Ctrl-C.
    """
    import logging

    from fedmosaic.engines.node_worker import WorkerError, parse_node_config, serve

    # the level in every line: a warning (a client that failed, a reply that could not be sent) stands out
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = parse_node_config(node_config)
    except (ValueError, TypeError) as exc:
        fail(f"--node-config: {exc}")
    if "data-dir" not in config:
        fail("--node-config: data-dir missing (give the SuperNode's own, e.g. 'data-dir=\"/data/node_0\"')")
    try:
        serve(config, ready)
    except WorkerError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass
