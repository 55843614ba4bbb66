"""Experiment tracking: round callbacks that send each :class:`RoundResult` to a tracking tool.

:class:`TensorBoardLogger` writes one TensorBoard event log (``tensorboard --logdir DIR``), through
``torch.utils.tensorboard.SummaryWriter``. Every round (its ``round`` is the step) gets:

================================  ===============================================================
``train/<key>``                   each training statistic of the round (e.g. ``train/train_loss``)
``eval/<name>/<metric>``          each evaluation metric, in rounds that evaluate
                                  (``eval/overall/accuracy``, ``eval/group/image/macro_f1``, ...)
``bytes/up``, ``bytes/down``      bytes of every message of the round, as in ``metrics.jsonl``
``time/seconds``                  wall time of the round
``clients/sampled``               clients the round planned for
``clients/rejected``              replies the screening rejected
``clients/dropped``               planned clients whose reply never came
``clients/eval_dropped``          the same, for the evaluation messages
``round/skipped``                 1 when the round was not aggregated (too few usable replies), else 0
================================  ===============================================================

Values are TensorBoard's plain scalars, 32-bit floats (byte counts above 16 MiB are rounded to 7
significant digits; ``metrics.jsonl`` keeps the exact numbers). Not double-precision tensors: the
default TensorBoard data server (``--load_fast``) does not show those at all.

    from fedmosaic import Federation
    from fedmosaic.reporting.tracking import TensorBoardLogger

    with TensorBoardLogger("runs/tb/fedavg") as tb:
        Federation(task, "fedavg", rounds=5, callbacks=[tb]).run()

TensorBoard is an optional dependency (the ``tracking`` extra); it is imported when a logger is
built, never when this module is.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from fedmosaic.core.errors import MissingExtraError

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from fedmosaic.engines.protocol import RoundResult

TENSORBOARD_MISSING = 'output.tensorboard: needs the tracking extra: pip install "fedmosaic[tracking]"'


def require_tensorboard() -> type[SummaryWriter]:
    """``SummaryWriter``, or a one-line :class:`MissingExtraError` when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        # torch's own message ("requires TensorBoard version 1.15 or above") does not say how to fix it.
        raise MissingExtraError(TENSORBOARD_MISSING) from None
    return SummaryWriter


def round_scalars(result: RoundResult) -> dict[str, float]:
    """The scalars of one round, ``{tag: value}`` (the tags are listed in this module's docstring).

    Non-numeric entries of ``train`` or ``eval`` (an algorithm may report a note) are left out:
    TensorBoard's scalars are numbers only.
    """
    scalars: dict[str, float] = {}
    for key, value in result.train.items():
        if _is_number(value):
            scalars[f"train/{key}"] = float(value)
    for name, metrics in result.eval.items():
        for metric, value in metrics.items():
            if _is_number(value):
                scalars[f"eval/{name}/{metric}"] = float(value)
    scalars["bytes/up"] = float(result.bytes_up)
    scalars["bytes/down"] = float(result.bytes_down)
    scalars["time/seconds"] = float(result.seconds)
    scalars["clients/sampled"] = float(len(result.clients))
    scalars["clients/rejected"] = float(len(result.rejected))
    scalars["clients/dropped"] = float(len(result.dropped))
    scalars["clients/eval_dropped"] = float(len(result.eval_dropped))
    scalars["round/skipped"] = float(result.skipped is not None)
    return scalars


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real)


class TensorBoardLogger:
    """A round callback writing each round's scalars to the TensorBoard log in ``logdir``.

    The writer opens at the first round it logs, with that round as TensorBoard's ``purge_step``:
    events a previous writer left in ``logdir`` for that round or later are hidden, so a run resumed
    (or repeated) into the same folder shows each round once, the newest values. Events are flushed
    after every round, so a running TensorBoard (or a crash) sees every finished round.

    Raises :class:`~fedmosaic.core.errors.MissingExtraError` at construction when tensorboard is
    not installed, before any round has run.
    """

    def __init__(self, logdir: Path | str) -> None:
        self.logdir = Path(logdir)
        self._writer_class = require_tensorboard()
        self._writer: SummaryWriter | None = None

    def __call__(self, result: RoundResult) -> None:
        """Write ``result``'s scalars at step ``result.round`` and flush them to disk."""
        if self._writer is None:
            # Opened lazily: a resumed run that has no round left writes no empty event file.
            self._writer = self._writer_class(str(self.logdir), purge_step=result.round)
        for tag, value in round_scalars(result).items():
            self._writer.add_scalar(tag, value, result.round)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file; idempotent (a later round opens a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
