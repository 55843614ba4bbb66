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
