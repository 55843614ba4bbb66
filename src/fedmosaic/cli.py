"""The ``fedmosaic`` command: run, resume, report, list what is available, the file pipeline's steps.

Errors are lines, never tracebacks on the terminal: a known failure (a config key, bad data, a
folder in use, a damaged checkpoint) is one line naming the key or path, exit code 2; an unexpected
one is one line with the exception's type and message plus the file holding the full traceback
(``error.log`` in the run folder or pipeline root, else a temporary file), exit code 1. Tracebacks are
written in Python's standard format, which holds no local variables: label arrays, weights or a
client's samples never reach a terminal or a log through an error.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

# pretty_exceptions_show_locals=False: an exception that escapes a command anyway is printed by typer
# without the local variables of each frame (which would hold data and weights).
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Multimodal federated learning.",
    pretty_exceptions_show_locals=False,
)
out = Console()
err = Console(stderr=True)

ERROR_LOG = "error.log"
MESSAGE_CHARS = 300  # an unexpected error's message on the terminal: its first line, at most this long


def _print_version(value: bool) -> None:
    """``--version``: eager, so it answers before any command's options are even parsed."""
    if value:
        from fedmosaic import __version__  # the package is already imported: no torch, no wait

        out.print(f"fedmosaic {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit"),
    ] = False,
) -> None:
    """Multimodal federated learning."""


def _fail(message: str, code: int = 2) -> NoReturn:
    # escaped: a message may hold brackets (pip install "fedmosaic[tracking]") rich would read as markup.
    # A message of several lines is several problems found at once (one per line), each an error line.
    for line in message.splitlines() or [""]:
        err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


# Piped progress: a line at the first round, every ~tenth of the run, at least every
# _PLAIN_EVERY_S seconds (a slow round still shows the run is alive), and at the last round.
_PLAIN_LINES = 10
_PLAIN_EVERY_S = 30.0

RoundCallback = Callable[[int, dict[str, Any]], None]


def _warning(line: str) -> None:
    """A line the user must see that does not stop the run (a checkpoint fallback, lost clients)."""
    err.print(f"[bold yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)


def _known_errors() -> type[Exception]:
    """Failures whose message is the whole story (one line naming a key or path): no traceback."""
    from fedmosaic.core.errors import FedmosaicError

    return FedmosaicError


def _one_line(exc: BaseException) -> str:
    """``Type: message`` of ``exc``, its message cut to its first line and :data:`MESSAGE_CHARS`."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    message = lines[0] if lines else ""
    if len(message) > MESSAGE_CHARS or len(lines) > 1:
        message = message[:MESSAGE_CHARS].rstrip() + " ..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _holds_results(folder: Path) -> bool:
    """A run folder (config.toml) or a pipeline root (progress.json): where an error.log belongs."""
    return (folder / "config.toml").is_file() or (folder / "progress.json").is_file()


def write_traceback(exc: BaseException, folder: Path | None) -> Path:
    """Append ``exc``'s full traceback to ``folder/error.log`` (a run folder or pipeline root), else to a
    new temporary file; the file's path.

    Python's standard format: file, line and code of each frame, never their local variables. The
    folder's lock is taken for the write; when another process holds it, the temporary file is used.
    """
    from fedmosaic.engines.folder_lock import FolderLock

    text = f"--- {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: fedmosaic {' '.join(sys.argv[1:2])}\n" + "".join(
        traceback.format_exception(exc)
    )
    if folder is not None and _holds_results(folder):
        try:
            with FolderLock(folder, "error log"), (folder / ERROR_LOG).open("a", encoding="utf-8") as log:
                log.write(text)
            return folder / ERROR_LOG
        except (OSError, ValueError):  # in use, or unwritable: fall back to a file of our own
            pass
    with tempfile.NamedTemporaryFile(
        "w", prefix="fedmosaic-error-", suffix=".log", delete=False, encoding="utf-8"
    ) as handle:
        handle.write(text)
    return Path(handle.name)


def _unexpected(exc: Exception, folder: Path | None) -> NoReturn:
    where = write_traceback(exc, folder)
    _fail(f"unexpected {_one_line(exc)} (full traceback: {where})", code=1)


@contextmanager
def _errors_as_lines(folder: Callable[[], Path | None]) -> Iterator[None]:
    """Known failures as their one line (exit 2), anything else as one line + a traceback file (exit 1).

    ``folder`` gives the run folder or pipeline root at the time of the failure (it may not exist yet).
    """
    try:
        yield
    except (typer.Exit, typer.Abort, click.ClickException, KeyboardInterrupt):
        raise
    except _known_errors() as exc:
        _fail(str(exc))
    except Exception as exc:
        _unexpected(exc, folder())


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int], RoundCallback] | None]:
    if not enabled:
        yield None
        return
    if not err.is_terminal:
        # rich draws its live bar on a non-terminal only when it stops: a CI/nohup/SLURM log would
        # show no progress until the run ended. Plain lines instead.
        yield _plain_progress
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err) as bar:

        def factory(name: str, rounds: int) -> RoundCallback:
            task_id = bar.add_task(f"{name} round", total=rounds, last="")

            def update(round: int, row: dict[str, Any]) -> None:
                last = ""
                if "overall" in row.get("eval", {}):
                    last = f"overall acc {row['eval']['overall']['accuracy']:.3f}"
                bar.update(task_id, completed=round, last=last)

            return update

        yield factory


def _plain_progress(name: str, rounds: int) -> RoundCallback:
    """Progress for a piped stderr: ``fedavg round 3/20  overall acc 0.412  train loss 1.93  12.3 s``."""
    every = max(1, math.ceil(rounds / _PLAIN_LINES))
    start = last_line = time.monotonic()
    first: int | None = None  # the first round this process runs (a resume starts mid-way)

    def update(round: int, row: dict[str, Any]) -> None:
        nonlocal first, last_line
        now = time.monotonic()
        if first is None:
            first = round
        if not (round in (first, rounds) or round % every == 0 or now - last_line >= _PLAIN_EVERY_S):
            return
        last_line = now
        parts = [f"{name} round {round}/{rounds}"]
        if "overall" in row.get("eval", {}):
            parts.append(f"overall acc {row['eval']['overall']['accuracy']:.3f}")
        loss = row.get("train", {}).get("train_loss")
        if isinstance(loss, int | float):
            parts.append(f"train loss {loss:.4g}")
        elapsed = now - start
        parts.append(f"{elapsed:.1f} s")
        if round < rounds:  # rounds run by this process so far set the pace
            parts.append(f"ETA {elapsed / (round - first + 1) * (rounds - round):.0f} s")
        err.print("  ".join(parts), highlight=False, soft_wrap=True)

    return update


def _print_table(table: Table) -> None:
    """Print a results table: on a terminal as rich fits it, piped at the width of its content."""
    if out.is_terminal:
        out.print(table)
        return
    # Piped there is no screen to fit, and rich's 80-column default would cut numbers to "0.…" in
    # the log: measure the width the content needs (no wrapping) and print at that width.
    # (A console of that width, as Console.print never renders wider than its console.)
    width = Measurement.get(out, out.options.update_width(100_000), table).maximum
    Console(file=out.file, width=width).print(table)


def _headline(result: Any) -> None:
    from fedmosaic.reporting.report import comparison_rows

    header, rows = comparison_rows(list(result.summaries.items()))
    table = Table(title="final metrics (test set)")
    for h in header[1:]:
        table.add_column(h, justify="left" if h == "algorithm" else "right")
    for r in rows:
        table.add_row(*r[1:])
    _print_table(table)
    names = list(result.summaries)
    main = result.summaries[names[0]]
    for other in names[1:]:
        ref = result.summaries[other]
        diffs = []
        for key in sorted(main["final"]):
            if key == "overall" or key.startswith("group/"):
                a, b = main["final"][key]["accuracy"], ref["final"].get(key, {}).get("accuracy")
                if b is not None:
                    diffs.append(f"{key} {a:.3f} vs {b:.3f} ({a - b:+.3f})")
        # soft-wrapped: a terminal wraps it on screen; a log keeps it one greppable line
        out.print(f"{names[0]} vs {other} (accuracy): " + "; ".join(diffs), highlight=False, soft_wrap=True)
    out.print(
        f"results: {result.folder} (report.md" + (", comparison.md" if result.comparison else "") + ")",
        highlight=False,
        soft_wrap=True,
    )


PluginOption = Annotated[
    list[str] | None,
    typer.Option(
        "--plugin",
        "-p",
        help="import this module first: a plug-in registering algorithms, data sets or encoders (repeatable)",
    ),
]


def _listed(plugins: list[str] | None, names: Callable[[], list[str]]) -> list[str]:
    """For the listing commands: import ``plugins``, then ``names()`` (which loads the registry's entry
    points); a plug-in that fails is one line. No config and no built-in module is loaded for it, so
    ``fedmosaic algorithms`` imports no torch."""
    from fedmosaic.core.errors import PluginError
    from fedmosaic.core.plugins import import_plugins

    try:
        import_plugins(plugins or [])
        return names()
    except PluginError as exc:
        _fail(str(exc))


@app.command()
def run(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML config (default: the embedded default)")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="override KEY=VALUE, e.g. rounds=5")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="results folder (default: runs/<name>-<time>)")
    ] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="continue the run in this folder")] = None,
    rounds: Annotated[
        int | None,
        typer.Option(
            "--rounds", help="with --resume: extend the run (and its baselines) to this many rounds"
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="no progress (bar, or plain lines when piped)")
    ] = False,
    plugin: PluginOption = None,
) -> None:
    """Run an experiment (the embedded default when no option is given), or --resume one."""
    from fedmosaic import runner
    from fedmosaic.config import load_config

    folder = resume  # the run folder, once known: where error.log goes
    try:
        with _errors_as_lines(lambda: folder):
            if resume is not None:
                if config is not None or set_ or out_dir is not None or plugin:
                    _fail(
                        "--resume uses the run's own config.toml (its plugins too): "
                        "drop --config/--set/--out/--plugin"
                    )
                with _progress(not quiet) as progress:
                    result = runner.resume(resume, progress, rounds, notify=_warning)
            else:
                if rounds is not None:
                    _fail("--rounds extends a run being resumed; for a new run use --set rounds=N")
                cfg = load_config(config, set_ or [], plugin)
                folder = out_dir or runner.default_folder(cfg)
                with _progress(not quiet and cfg.engine.progress) as progress:
                    result = runner.start(cfg, folder, progress, notify=_warning)
            _headline(result)
    except KeyboardInterrupt:
        err.print(
            "interrupted: the last finished round is checkpointed. "
            f"Continue with: fedmosaic run --resume {folder or 'the run folder'}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="run folders to put side by side")],
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="where comparison.md goes")] = None,
) -> None:
    """Rewrite a run's report.md, or compare several runs (table + overlaid curves)."""
    from fedmosaic.reporting.report import compare_runs, comparison_rows, load_run, write_run_report

    with _errors_as_lines(lambda: out_dir or runs[0]):
        if len(runs) == 1 and out_dir is None:
            path = write_run_report(runs[0])
        else:
            path = compare_runs(runs, out_dir or Path("comparison"))
        header, rows = comparison_rows([(str(p), load_run(p)[0]) for p in runs])
    table = Table()
    for h in header:
        table.add_column(h, justify="left" if h in ("run", "algorithm") else "right")
    for r in rows:
        table.add_row(*r)
    _print_table(table)
    out.print(f"written: {path}", highlight=False, soft_wrap=True)


@app.command("algorithms")
def list_algorithms(plugin: PluginOption = None) -> None:
    """List the available algorithms (fedmosaic's and the plug-ins')."""
    from fedmosaic.algorithms.registry import algorithm_names, algorithm_summary

    # the built-ins' names and summaries are declared: no algorithm module is imported
    for name in _listed(plugin, algorithm_names):
        # soft_wrap: one line per algorithm whatever the width, so `| grep` finds the whole line
        out.print(f"{name:12s} {algorithm_summary(name)}", highlight=False, soft_wrap=True)


@app.command("datasets")
def list_datasets(plugin: PluginOption = None) -> None:
    """List the available data sets (fedmosaic's and the plug-ins') and their options."""
    from fedmosaic.data.registry import dataset_names, get_dataset

    for name in _listed(plugin, dataset_names):
        entry = get_dataset(name)
        options = ", ".join(entry.options.model_fields) or "-"
        folder = " (needs task.data_dir)" if entry.needs_data_dir else ""
        out.print(f"{name:12s} options: {options}{folder}", highlight=False, soft_wrap=True)


@app.command("encoders")
def list_encoders(plugin: PluginOption = None) -> None:
    """List the available encoders per modality kind (the ``model.<kind>_encoder`` values)."""
    from fedmosaic.models.encoders import ENCODER_FIELDS, encoder_names

    _listed(plugin, lambda: encoder_names(next(iter(ENCODER_FIELDS))))
    for kind, key in ENCODER_FIELDS.items():
        names = ", ".join(encoder_names(kind))
        tail = ", or a Hugging Face hub id / model folder" if kind == "text" else ""
        out.print(f"model.{key:20s} {names}{tail}", highlight=False, soft_wrap=True)


# ---------------------------------------------------------------- the step-by-step file pipeline

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
    """Run one pipeline step: errors are lines (:func:`_errors_as_lines`); a step already done is not
    an error (exit 0)."""
    from fedmosaic.engines.files import AlreadyDone

    with _errors_as_lines(lambda: root):
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
        _warning(line)
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

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = parse_node_config(node_config)
    except (ValueError, TypeError) as exc:
        _fail(f"--node-config: {exc}")
    if "data-dir" not in config:
        _fail("--node-config: data-dir missing (give the SuperNode's own, e.g. 'data-dir=\"/data/node_0\"')")
    try:
        serve(config, ready)
    except WorkerError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        pass


def main() -> None:
    """Console-script entry point."""
    app(sys.argv[1:])


if __name__ == "__main__":
    main()
