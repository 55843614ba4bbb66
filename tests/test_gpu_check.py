"""``benchmarks/gpu_check.py`` without a GPU (what CI runs): one line, exit code 3, nothing run; and its
comparison of CPU and GPU rows on hand-made rows. The GPU run itself needs a GPU (not exercised here).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch

from benchmark_runs import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check


def test_no_gpu_is_one_line_and_exit_code_3_without_running_anything() -> None:
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this is the no-GPU path on every machine
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""},
    )
    if proc.returncode != gpu_check.NO_GPU and torch.backends.mps.is_available():
        pytest.skip("an Apple GPU is visible: the script runs the check")
    assert proc.returncode == gpu_check.NO_GPU == 3, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    assert lines[0].startswith("gpu_check: no GPU to check, nothing was run:")
    assert "Traceback" not in proc.stderr


def test_an_absent_device_named_on_the_command_line_is_the_same_exit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu_check, "run", lambda *a: pytest.fail("a run started without a GPU"))
    assert gpu_check.main(["--device", "cuda:1"]) == gpu_check.NO_GPU
    out = capsys.readouterr().out.strip()
    assert out.startswith("gpu_check: no GPU to check, nothing was run: --device: cuda:1 is not available")


def _rows() -> list[dict]:
    evaluated = {"overall": {"accuracy": 0.5, "macro_f1": 0.4}, "test/image": {"accuracy": 0.45}}
    return [
        {"round": r, "clients": ["c0", "c3"], "bytes_up": 100, "bytes_down": 200}
        | {"train": {"train_loss": 1.0}}
        | ({"eval": copy.deepcopy(evaluated)} if r == 2 else {})
        for r in (1, 2)
    ]


def test_rows_within_tolerance_agree_and_others_are_listed() -> None:
    cpu, gpu = _rows(), _rows()
    gpu[1]["eval"]["overall"]["accuracy"] = 0.52  # a GPU's rounding: within 0.03
    gpu[0]["train"]["train_loss"] = 1.001
    assert gpu_check.differences(cpu, gpu, 0.03) == []
    assert gpu_check.max_gap(cpu, gpu) == pytest.approx(0.02)
    gpu[1]["eval"]["test/image"]["accuracy"] = 0.40
    gpu[0]["clients"] = ["c0", "c4"]
    gpu[1]["bytes_up"] = 101
    found = gpu_check.differences(cpu, gpu, 0.03)
    assert found == [
        "round 1: clients differ: ['c0', 'c3'] vs ['c0', 'c4']",
        "round 2: bytes_up differ: 100 vs 101",
        "round 2: eval/test/image/accuracy 0.45 vs 0.4 (tolerance 0.03)",
    ]
    del gpu[1]["eval"]["overall"]
    assert any("eval/overall/accuracy 0.5 vs None" in line for line in gpu_check.differences(cpu, gpu, 0.03))
