"""A config with several problems reports all of them at once, one ``key: expected`` line each."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fedmosaic.cli import app
from fedmosaic.config import ConfigError, load_config


def error_lines(overrides: list[str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    return str(info.value).splitlines()


def keys(lines: list[str]) -> set[str]:
    return {line.split(": ", 1)[0] for line in lines}


def test_every_bad_key_is_reported_one_line_each() -> None:
    lines = error_lines(["rounds=abc", "seed=-1", "training.lrr=1", "algorithm.foo=1", "algorithm.bar=2"])
    assert len(lines) == 5, lines
    assert keys(lines) == {"rounds", "seed", "training.lrr", "algorithm.foo", "algorithm.bar"}
    expected = "rounds: Input should be a valid integer, unable to parse string as an integer (got 'abc')"
    assert expected in lines


def test_nested_block_errors_keep_their_own_keys() -> None:
    # The algorithm block is validated inside a validator that already names each key: not "algorithm: ..."
    lines = error_lines(["algorithm.name=fedprox", "algorithm.mu=-1", "algorithm.lr=3"])
    assert lines == [
        "algorithm.mu: Input should be greater than or equal to 0 (got -1)",
        "algorithm.lr: unknown key",
    ]


def test_data_set_checks_are_collected_too() -> None:
    lines = error_lines(["task.options.n_samples=abc", "task.options.zz=1", "task.partition=natural"])
    assert keys(lines) == {"task.options.n_samples", "task.options.zz", "task.partition"}, lines
    lines = error_lines(["clients.mix=image:2,audio:3", "task.partition=natural"])
    assert keys(lines) == {"clients.mix", "task.partition"}, lines


def test_a_single_error_reads_as_before() -> None:
    assert error_lines(["rounds=0"]) == ["rounds: Input should be greater than or equal to 1 (got 0)"]
    # one bad value of a union-typed field (int | Literal[...]) is one problem, though pydantic
    # reports each branch; two fields failing with the same value stay two problems
    assert len(error_lines(["algorithm.name=gvf", "algorithm.k=auto"])) == 1
    assert len(error_lines(["training.lr=-1", "training.batch_size=-1"])) == 2
    # a bad mix hides the checks that depend on it instead of adding noise about the count
    assert keys(error_lines(["clients.mix=image:2,audio:3", "clients.count=4"])) == {"clients.mix"}


def test_cli_prints_error_before_every_line(tmp_path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["run", "-q", "--set", "rounds=abc", "--set", "seed=-1", "--out", str(out)]
    )
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines), lines
    assert not out.exists()
