"""An experiment: the configured algorithm plus its comparison baselines, in one results folder.

``DIR`` is the main run's folder; baselines named in ``compare`` run on the same task (same seed,
same split) into ``DIR/baselines/<name>/``, each a complete run folder of its own, and
``DIR/comparison.md`` puts them side by side. With ``output.tensorboard``, each run folder also gets a
TensorBoard log in ``tensorboard/``; a resumed run appends to it from its next round.
"""

from __future__ import annotations

import multiprocessing
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from fedmosaic.config import ConfigError, RunConfig, load_config
from fedmosaic.core.device import resolve_device
from fedmosaic.core.errors import FedmosaicWarning
from fedmosaic.core.task import Task
from fedmosaic.data.tasks import build_task, task_outline
from fedmosaic.engines.client_pool import asked_workers, resolve_workers
from fedmosaic.engines.federation import Callback, Federation
from fedmosaic.engines.folder_lock import LOCK_NAME, FolderLock
from fedmosaic.engines.local import configure_threads
from fedmosaic.engines.protocol import check_fit
from fedmosaic.engines.run_folder import RunFolder, default_folder
from fedmosaic.reporting.report import COMPARISON, compare_runs, data_notes, write_run_report
from fedmosaic.reporting.tracking import TensorBoardLogger, require_tensorboard

ProgressFactory = Callable[[str, int], Callable[[int, dict[str, Any]], None]]
Notify = Callable[[str], None]  # a line the user must see (the CLI prints it as a warning)


def _warn(line: str) -> None:
    warnings.warn(line, FedmosaicWarning, stacklevel=3)


@dataclass
class ExperimentResult:
    """Where everything went and each run's summary (main run first)."""

    folder: Path
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    folders: dict[str, Path] = field(default_factory=dict)
    comparison: Path | None = None


def baseline_config(cfg: RunConfig, name: str) -> RunConfig:
    """The same run with another algorithm (default hyperparameters) and no comparisons of its own."""
    tree = cfg.to_toml_dict()
    tree["algorithm"] = {"name": name}
    tree["compare"] = []
    return RunConfig.model_validate(tree)


def start(
    cfg: RunConfig,
    out: Path | None = None,
    progress: ProgressFactory | None = None,
    notify: Notify | None = None,
) -> ExperimentResult:
    """Run a fresh experiment into ``out`` (default: a new timestamped folder), holding its lock.

    What the data lost before training (skipped bad samples, lost clients) is said through ``notify``
    (default: a :class:`FedmosaicWarning`) before the first round, and written into report.md."""
    folder = Path(out) if out is not None else default_folder(cfg)
    # a device this machine lacks: one line, before the folder exists
    resolve_device(cfg.engine.device, workers=asked_workers(cfg.engine.workers))
    if (outline := task_outline(cfg)) is not None:
        check_fit(cfg)(outline)  # before the lock creates the folder (or its parents)
    with FolderLock(folder, "--out"):
        if RunFolder(folder).exists():
            raise ConfigError(
                f"--out: {folder} already holds a run; continue it with --resume {folder} "
                "or pick another folder"
            )
        if any(p.name != LOCK_NAME for p in folder.iterdir()):
            raise ConfigError(f"--out: {folder} exists and is not empty; choose a new folder")
        check_extras(cfg)
        configure_threads(cfg.engine.threads)
        # Before anything is written: bad data, or an algorithm (main or baseline) that does not fit it,
        # leaves no half-made folder; the fit is checked before the data is even loaded.
        task = build_task(cfg, check=check_fit(cfg))
        for line in data_notes(task.data_summary()):
            (notify or _warn)(line)
        RunFolder(folder).write_config(cfg.to_toml_dict())
        return _execute(cfg, folder, progress, task)


def resume(
    folder: Path,
    progress: ProgressFactory | None = None,
    rounds: int | None = None,
    notify: Notify | None = None,
) -> ExperimentResult:
    """Continue the experiment in ``folder`` from its last committed round, under the config it
    started with (an edited ``config.toml`` is refused, naming the keys). ``rounds`` extends the run
    and its baselines to that many rounds, recorded in each folder's fingerprint.

    Before any data is loaded, every run folder's checkpoint is verified: a damaged last checkpoint
    falls back to the previous round's, said through ``notify`` (default: a :class:`FedmosaicWarning`);
    one that cannot is a one-line :class:`~fedmosaic.core.errors.CheckpointError` naming the file."""
    run = RunFolder(folder)
    if not run.exists():
        raise ConfigError(f"--resume: {folder} holds no run (no config.toml)")
    notify = notify or _warn
    with FolderLock(folder, "--resume"):
        baselines = [p for p in sorted((Path(folder) / "baselines").glob("*")) if RunFolder(p).exists()]
        for path in [Path(folder), *baselines]:
            if note := RunFolder(path).recover():
                notify(note)
        if rounds is not None:
            for path in [Path(folder), *baselines]:
                RunFolder(path).check_config(load_config(RunFolder(path).config).to_toml_dict())
                RunFolder(path).extend_rounds(rounds)
        cfg = load_config(run.config)
        run.check_config(cfg.to_toml_dict())  # an edited config.toml is refused before loading, too
        check_extras(cfg)
        # resumed on another machine: its device must be here too
        resolve_device(cfg.engine.device, workers=asked_workers(cfg.engine.workers))
        configure_threads(cfg.engine.threads)
        task = build_task(cfg, check=check_fit(cfg))
        for line in data_notes(task.data_summary()):
            notify(line)
        return _execute(cfg, Path(folder), progress, task)


def check_extras(cfg: RunConfig) -> None:
    """Fail (one line naming the key) when ``cfg`` switches on a feature whose extra is not installed.

    Called before the task is built or anything is written, not when the first round ends.
    """
    if cfg.output.tensorboard:
        require_tensorboard()


def _execute(cfg: RunConfig, folder: Path, progress: ProgressFactory | None, task: Task) -> ExperimentResult:
    result = ExperimentResult(folder)
    runs = [(cfg.algorithm.name, cfg, folder)]
    for name in dict.fromkeys(cfg.compare):
        if name != cfg.algorithm.name:
            runs.append((name, baseline_config(cfg, name), folder / "baselines" / name))
    for name, run_cfg, run_dir in runs:
        run = RunFolder(run_dir)
        if not run.exists():
            run.write_config(run_cfg.to_toml_dict())
        else:  # a resume: every run of the experiment continues under the config it started with
            run.check_config(run_cfg.to_toml_dict())
        with ExitStack() as stack:
            callbacks: list[Callback] = []
            if progress:
                on_round = progress(name, run_cfg.rounds)
                callbacks.append(lambda res, on_round=on_round: on_round(res.round, res.row))
            if run_cfg.output.tensorboard:
                # A resumed Federation calls back only for rounds after its last commit, and the
                # logger opens its writer at the first of those: no round is logged twice.
                callbacks.append(stack.enter_context(TensorBoardLogger(run.tensorboard)))
            federation = Federation.from_config(run_cfg, task, folder=run_dir, callbacks=callbacks)
            result.summaries[name] = federation.run()
        result.folders[name] = run_dir
    comparison = folder / COMPARISON if len(runs) > 1 else None
    reports: list[Callable[[], Path]] = [
        partial(write_run_report, run_dir, plots=cfg.output.plots, comparison=comparison)
        for _, _, run_dir in runs
    ]
    if comparison is not None:
        reports.insert(0, partial(compare_runs, [d for _, _, d in runs], folder, [n for n, _, _ in runs]))
    written = in_processes(reports, resolve_workers(cfg.engine.workers, resolve_device(cfg.engine.device), 2))
    if comparison is not None:
        result.comparison = written[0]
    return result


def in_processes(jobs: list[Callable[[], Path]], workers: int) -> list[Path]:
    """Each job's result, in order; with ``workers`` > 1, jobs run in that many forked processes.

    The reports draw several figures each (about 2.5 s of the default run's end); they write into
    separate files and read only finished runs, so they may run side by side. A job's error is
    raised here, as if it had run in this process.
    """
    if workers < 2 or len(jobs) < 2:
        return [job() for job in jobs]
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(job) for job in jobs]
        return [future.result() for future in futures]
