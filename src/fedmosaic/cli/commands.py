"""The commands of a whole run: ``run`` (or ``--resume``), ``report``, and the listings of what exists."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fedmosaic.cli.app import app, err, out
from fedmosaic.cli.lines import errors_as_lines, fail, warning
from fedmosaic.cli.progress import round_progress
from fedmosaic.cli.tables import headline, print_table

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
        fail(str(exc))


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
        with errors_as_lines(lambda: folder):
            if resume is not None:
                if config is not None or set_ or out_dir is not None or plugin:
                    fail(
                        "--resume uses the run's own config.toml (its plugins too): "
                        "drop --config/--set/--out/--plugin"
                    )
                freeze_imports()
                with round_progress(not quiet) as progress:
                    result = runner.resume(resume, progress, rounds, notify=warning)
            else:
                if rounds is not None:
                    fail("--rounds extends a run being resumed; for a new run use --set rounds=N")
                cfg = load_config(config, set_ or [], plugin)
                folder = out_dir or runner.default_folder(cfg)
                freeze_imports()
                with round_progress(not quiet and cfg.engine.progress) as progress:
                    result = runner.start(cfg, folder, progress, notify=warning)
            headline(result)
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

    with errors_as_lines(lambda: out_dir or runs[0]):
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
    print_table(table)
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


def freeze_imports() -> None:
    """Put every object made so far (the imported modules' classes and functions, mostly) out of the
    cyclic collector's reach, as ``gc.freeze`` does, before a run.

    They live as long as the process, yet each full collection walked them all: about 475,000
    objects and 0.1 s a walk, several times in a default run. Objects made later are collected as
    before; only cycles among the frozen ones would outlive the command (there is no use for them).
    """
    gc.freeze()
