"""The ``fedmosaic`` command: run, resume, report."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Multimodal federated learning.")
out = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    # escaped: a message may hold brackets (pip install "fedmosaic[tracking]") rich would read as markup.
    # A message of several lines is several problems found at once (one per line), each an error line.
    for line in message.splitlines() or [""]:
        err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int], Callable[[int, dict[str, Any]], None]] | None]:
    if not enabled:
        yield None
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

        def factory(name: str, rounds: int) -> Callable[[int, dict[str, Any]], None]:
            task_id = bar.add_task(f"{name} round", total=rounds, last="")

            def update(round: int, row: dict[str, Any]) -> None:
                last = ""
                if "overall" in row.get("eval", {}):
                    last = f"overall acc {row['eval']['overall']['accuracy']:.3f}"
                bar.update(task_id, completed=round, last=last)

            return update

        yield factory


def _headline(result: Any) -> None:
    from fedmosaic.reporting.report import comparison_rows

    header, rows = comparison_rows(list(result.summaries.items()))
    table = Table(title="final metrics (test set)")
    for h in header[1:]:
        table.add_column(h, justify="left" if h == "algorithm" else "right")
    for r in rows:
        table.add_row(*r[1:])
    out.print(table)
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
        out.print(f"{names[0]} vs {other} (accuracy): " + "; ".join(diffs), highlight=False)
    out.print(
        f"results: {result.folder} (report.md" + (", comparison.md" if result.comparison else "") + ")",
        highlight=False,
        soft_wrap=True,
    )


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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Run an experiment (the embedded default when no option is given), or --resume one."""
    from fedmosaic import runner
    from fedmosaic.config import ConfigError, load_config
    from fedmosaic.data.registry import DataError
    from fedmosaic.data.tasks import TaskSplitError

    try:
        if resume is not None:
            if config is not None or set_ or out_dir is not None:
                _fail("--resume uses the run's own config.toml: drop --config/--set/--out")
            with _progress(not quiet) as progress:
                result = runner.resume(resume, progress, rounds)
        else:
            if rounds is not None:
                _fail("--rounds extends a run being resumed; for a new run use --set rounds=N")
            cfg = load_config(config, set_ or [])
            with _progress(not quiet and cfg.engine.progress) as progress:
                result = runner.start(cfg, out_dir, progress)
    except (ConfigError, TaskSplitError, DataError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        folder = resume or out_dir or "the run folder"
        err.print(
            "interrupted: the last finished round is checkpointed. "
            f"Continue with: fedmosaic run --resume {folder}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    _headline(result)


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="run folders to put side by side")],
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="where comparison.md goes")] = None,
) -> None:
    """Rewrite a run's report.md, or compare several runs (table + overlaid curves)."""
    from fedmosaic.reporting.report import (
        ReportError,
        compare_runs,
        comparison_rows,
        load_run,
        write_run_report,
    )

    try:
        if len(runs) == 1 and out_dir is None:
            path = write_run_report(runs[0])
        else:
            path = compare_runs(runs, out_dir or Path("comparison"))
        header, rows = comparison_rows([(str(p), load_run(p)[0]) for p in runs])
    except ReportError as exc:
        _fail(str(exc))
    table = Table()
    for h in header:
        table.add_column(h)
    for r in rows:
        table.add_row(*r)
    out.print(table)
    out.print(f"written: {path}", highlight=False, soft_wrap=True)


@app.command("algorithms")
def list_algorithms() -> None:
    """List the available algorithms."""
    from fedmosaic.algorithms.registry import algorithm_names, get_algorithm

    for name in algorithm_names():
        out.print(f"{name:12s} {get_algorithm(name).summary}", highlight=False)


# ---------------------------------------------------------------- the step-by-step file pipeline

RootOption = Annotated[Path, typer.Option("--root", "-r", help="the pipeline's folder tree (CLIENT_ROOT)")]
ClientOption = Annotated[
    str | None, typer.Option("--client", "-k", help="run this step for one client only, as its site would")
]


def _pipeline_step(action: Callable[[], Any]) -> Any:
    from fedmosaic.config import ConfigError
    from fedmosaic.data.registry import DataError
    from fedmosaic.data.tasks import TaskSplitError

    try:
        return action()
    except (ConfigError, TaskSplitError, DataError) as exc:
        _fail(str(exc))


def _due(root: Path) -> None:
    from fedmosaic.engines.files import FilePipeline

    progress = FilePipeline(root).progress
    if progress["due"] == "done":
        out.print(f"all rounds done; metrics: {root / 'metrics.jsonl'}", highlight=False, soft_wrap=True)
    else:
        out.print(f"round {progress['round']}: next step {progress['due']}", highlight=False)


@app.command("init-root")
def init_root(
    root: RootOption,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="override KEY=VALUE")] = None,
) -> None:
    """Build a pipeline tree (client_k/ folders, server/) from a data set and modality mix; plan round 1."""
    from fedmosaic.config import load_config
    from fedmosaic.engines.files import FilePipeline

    _pipeline_step(lambda: FilePipeline.init(root, load_config(config, set_ or [])))
    out.print(f"built {root}", highlight=False, soft_wrap=True)
    _due(root)


@app.command("train-clients")
def train_clients(root: RootOption, client: ClientOption = None) -> None:
    """Clients train locally on their data and write their replies (vectors, adapters)."""
    from fedmosaic.engines.files import FilePipeline

    done = _pipeline_step(lambda: FilePipeline(root).train_clients(client))
    out.print(f"trained: {', '.join(done) if done else 'nothing left to do'}", highlight=False)
    _due(root)


@app.command("aggregate-vectors")
def aggregate_vectors(root: RootOption) -> None:
    """Server step: aggregate the clients' replies (global vectors, weighted adapters)."""
    from fedmosaic.engines.files import FilePipeline

    train = _pipeline_step(lambda: FilePipeline(root).aggregate_vectors())
    out.print("aggregated: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(train.items())), highlight=False)
    _due(root)


@app.command("update-clients")
def update_clients(root: RootOption, client: ClientOption = None) -> None:
    """Clients take in the aggregated result and evaluate; the last one closes the round."""
    from fedmosaic.engines.files import FilePipeline

    row = _pipeline_step(lambda: FilePipeline(root).update_clients(client))
    if row is not None and "overall" in row.get("eval", {}):
        out.print(f"round {row['round']}: overall accuracy {row['eval']['overall']['accuracy']:.3f}")
    _due(root)


def main() -> None:
    """Console-script entry point."""
    app(sys.argv[1:])


if __name__ == "__main__":
    main()
