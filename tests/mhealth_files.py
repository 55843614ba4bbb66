"""Small files in the UCI mHealth format, written by tests that need a sensor task (no real copy here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_mhealth(folder: Path, subjects: int = 4, rows_per_run: int = 64) -> Path:
    """Small ``mHealth_subjectN.log`` files (23 signal columns + label): 6 activities per subject,
    label-dependent signals."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for s in range(1, subjects + 1):
        labels = np.repeat(np.arange(1, 7), rows_per_run)
        t = np.arange(len(labels))[:, None]
        signal = np.sin(t * labels[:, None] / 7.0 + np.arange(23)[None, :]) + 0.3 * rng.normal(
            size=(len(t), 23)
        )
        np.savetxt(
            folder / f"mHealth_subject{s}.log",
            np.column_stack([signal, labels]),
            fmt=["%.4f"] * 23 + ["%d"],
            delimiter="\t",
        )
    return folder


def mhealth_overrides(data_dir: Path, rounds: int = 2) -> list[str]:
    """Config overrides for a tiny acc/gyro run on :func:`write_mhealth` files: 2 acc-only, 2 gyro-only
    and 2 complete clients, 16-step windows, a run of seconds."""
    return [
        f"rounds={rounds}",
        "compare=[]",
        "engine.progress=false",
        "output.plots=false",
        "task.dataset=mhealth",
        f"task.data_dir={data_dir}",
        'task.options.modalities=["acc", "gyro"]',
        "task.options.window=16",
        "task.partition=iid",
        "task.proxy_size=24",
        "task.labelled_size=30",
        'clients.mix="acc:2,gyro:2,acc+gyro:2"',
        "training.batch_size=16",
    ]
