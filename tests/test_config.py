"""RunConfig: the default, --set overrides, and one-line ConfigErrors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmosaic.config import (
    ConfigError,
    RunConfig,
    apply_override,
    default_config_path,
    load_config,
    parse_value,
    with_overrides,
)
from fedmosaic.data.tasks import TaskSplitError, build_task


def config_error(overrides: list[str], path: Path | None = None) -> str:
    """The ConfigError message for ``overrides``; asserts it is a single line."""
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.strip() == message and message, message
    return message


def test_default_config_loads() -> None:
    cfg = load_config()
    assert isinstance(cfg, RunConfig)
    assert default_config_path().is_file()
    assert cfg.task.dataset == "synthetic"
    assert cfg.algorithm.name == "fedavg"
    assert cfg.clients.mix == {"each": 2, "all": 6}
    assert cfg.clients.total_for(("image", "text")) == 10
    assert cfg.clients.total_for(("acc", "gyro", "mag")) == 12
    assert cfg.rounds == 20
    assert cfg.compare == ["local"]
    assert cfg.dataset_options().n_samples == 3000  # type: ignore[attr-defined]


def test_tiny_cfg_fixture(tiny_cfg: RunConfig) -> None:
    assert tiny_cfg.task.options == {"n_samples": 400}
    assert tiny_cfg.task.proxy_size == 40
    assert tiny_cfg.task.labelled_size == 40
    assert tiny_cfg.rounds == 2
    assert tiny_cfg.engine.progress is False
    assert tiny_cfg.compare == []
    assert tiny_cfg.model.embed_dim == 16
    assert tiny_cfg.model.text_hidden == 16


def test_resolved_config_round_trips_through_toml(tmp_path: Path) -> None:
    import tomli_w

    cfg = load_config(None, ["algorithm.name=fedprox", "algorithm.mu=0.5", "clients.per_round=4"])
    path = tmp_path / "resolved.toml"
    path.write_text(tomli_w.dumps(cfg.to_toml_dict()))
    again = load_config(path)
    assert again == cfg
    assert again.algorithm.mu == 0.5  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", 3),
        ("-7", -7),
        ("0.25", 0.25),
        ("1e-3", 1e-3),
        ("true", True),
        ("false", False),
        ('"quoted"', "quoted"),
        ("[1, 2, 3]", [1, 2, 3]),
        ('["local", "fedprox"]', ["local", "fedprox"]),
        ('{ image = 2, "image+text" = 3 }', {"image": 2, "image+text": 3}),
        ("fedprox", "fedprox"),
        ("image:2,text:2", "image:2,text:2"),
        ("runs/out dir", "runs/out dir"),
        ("True", "True"),
        ("", ""),
    ],
)
def test_parse_value_toml_literals_then_strings(text: str, expected: object) -> None:
    value = parse_value(text)
    assert value == expected
    assert type(value) is type(expected)


def test_apply_override_nested_and_creates_tables() -> None:
    tree: dict = {"training": {"lr": 0.1}}
    apply_override(tree, "training.lr=0.5")
    apply_override(tree, "a.b.c = [1, 2]")
    apply_override(tree, "name=x=y")
    assert tree == {"training": {"lr": 0.5}, "a": {"b": {"c": [1, 2]}}, "name": "x=y"}


@pytest.mark.parametrize("bad", ["noequals", "=3", "a..b=1", ".a=1", "a.=1"])
def test_apply_override_malformed(bad: str) -> None:
    with pytest.raises(ConfigError, match="--set") as info:
        apply_override({}, bad)
    assert "\n" not in str(info.value)


def test_apply_override_through_a_value() -> None:
    with pytest.raises(ConfigError, match="'rounds' is a value"):
        apply_override({"rounds": 3}, "rounds.x=1")


def test_overrides_reach_the_config() -> None:
    cfg = load_config(
        None,
        [
            "rounds=3",
            "seed=11",
            "training.lr=0.5",
            "training.optimizer=sgd",
            "engine.progress=false",
            'compare=["local", "fedprox"]',
            "algorithm.name=fedprox",
            "algorithm.mu=0.25",
            'clients.mix={ image = 1, "image+text" = 3 }',
            "task.options.n_samples=500",
        ],
    )
    assert cfg.rounds == 3
    assert cfg.seed == 11
    assert cfg.training.lr == 0.5
    assert cfg.training.optimizer == "sgd"
    assert cfg.engine.progress is False
    assert cfg.compare == ["local", "fedprox"]
    assert cfg.algorithm.name == "fedprox"
    assert cfg.algorithm.mu == 0.25  # type: ignore[attr-defined]
    assert cfg.clients.mix == {"image": 1, "image+text": 3}
    assert cfg.clients.total_for(("image", "text")) == 4
    assert cfg.dataset_options().n_samples == 500  # type: ignore[attr-defined]


def test_mix_string_form() -> None:
    cfg = load_config(None, ["clients.mix=image:2,text:2,image+text:6"])
    assert cfg.clients.mix == {"image": 2, "text": 2, "image+text": 6}
    cfg = load_config(None, ['clients.mix="image:1, text:3"', "clients.count=4"])
    assert cfg.clients.mix == {"image": 1, "text": 3}
    assert cfg.clients.total_for(("image", "text")) == 4


def test_count_without_mix(tmp_path: Path) -> None:
    from fedmosaic.config import ClientsConfig

    assert ClientsConfig(count=7).total_for(("image", "text")) == 7
    assert ClientsConfig().total_for(("image", "text")) == 10
    assert ClientsConfig(count=6, mix={"image": 2, "text": 4}).total_for(("image", "text")) == 6
    path = tmp_path / "nomix.toml"
    path.write_text("[clients]\ncount = 4\n")
    cfg = load_config(path)
    assert cfg.clients.mix is None
    assert cfg.clients.total_for(("image", "text")) == 4


def test_config_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('rounds = 4\n[algorithm]\nname = "local"\n[training]\nlr = 0.01\n')
    cfg = load_config(path, ["training.lr=0.02"])
    assert cfg.rounds == 4
    assert cfg.algorithm.name == "local"
    assert cfg.training.lr == 0.02
    assert cfg.task.dataset == "synthetic"  # defaults fill in what the file leaves out


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["bogus=1"], ["bogus", "unknown key"]),
        (["training.lrr=0.1"], ["training.lrr", "unknown key"]),
        (["rounds=abc"], ["rounds", "abc"]),
        (["rounds=0"], ["rounds"]),
        (["seed=-1"], ["seed"]),
        (["training.lr=-0.1"], ["training.lr", "greater than 0"]),
        (["training.optimizer=rmsprop"], ["training.optimizer"]),
        (["task.partition=random"], ["task.partition"]),
        (["algorithm.name=nope"], ["algorithm.name", "nope", "fedavg"]),
        (["algorithm.foo=1"], ["algorithm.foo"]),
        (["algorithm.name=fedprox", "algorithm.mu=-1"], ["algorithm.mu"]),
        (["algorithm.name=fedavg", "algorithm.mu=0.1"], ["algorithm.mu"]),
        (['compare=["nope"]'], ["compare", "nope"]),
        (["clients.mix=image:2,audio:3"], ["clients.mix", "audio"]),
        (['clients.mix={ "image+sound" = 2 }'], ["clients.mix", "sound"]),
        (['clients.mix={ image = 2, "text+image" = 1, "image+text" = 2 }'], ["clients.mix", "twice"]),
        (["clients.mix=image:2,text"], ["clients.mix", "group:count"]),
        (["clients.mix={}"], ["clients.mix"]),
        (["clients.mix={ image = -2, text = 3 }"], ["clients.mix"]),
        (["clients.count=3"], ["clients.count", "3", "10"]),
        (["clients.per_round=11"], ["clients.per_round", "11"]),
        (["clients.per_round=0"], ["clients.per_round"]),
        (["task.dataset=imagenet"], ["task.dataset", "imagenet"]),
        (["task.options.colour=1"], ["task.options", "colour"]),
        (["task.options.n_samples=abc"], ["task.options.n_samples"]),
        (["task.options.n_samples=5"], ["task.options.n_samples"]),
        (["task.test_fraction=1.5"], ["task.test_fraction"]),
        (["model.text_heads=3"], ["model.text_heads"]),
        (["noequals"], ["--set", "noequals"]),
        (["rounds.x=1"], ["rounds"]),
        (["algorithm=3"], ["algorithm"]),
    ],
)
def test_bad_config_one_line_naming_the_key(overrides: list[str], fragments: list[str]) -> None:
    message = config_error(overrides)
    for fragment in fragments:
        assert fragment in message, message


def test_bad_key_is_named_first() -> None:
    assert config_error(["training.lrr=1"]).startswith("training.lrr:")
    assert config_error(["algorithm.name=nope"]).startswith("algorithm.name:")
    assert config_error(["algorithm.foo=1"]).startswith("algorithm.foo:")
    assert config_error(["clients.mix=image:2,audio:3"]).startswith("clients.mix:")
    assert config_error(["task.options.colour=1"]).startswith("task.options.colour:")


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('rounds = 3\n[training\nlr = "x\n')
    message = config_error([], path)
    assert str(path) in message
    assert "TOML" in message


def test_toml_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"rounds = \xff\xfe\n")
    assert str(path) in config_error([], path)


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "does-not-exist.toml"
    message = config_error([], path)
    assert "--config" in message
    assert "does-not-exist.toml" in message


def test_bad_value_in_config_file(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("[training]\nlr = -1\n")
    assert config_error([], path).startswith("training.lr:")


def test_more_clients_than_samples_is_a_task_split_error() -> None:
    cfg = load_config(
        None,
        [
            "task.options.n_samples=100",
            "task.proxy_size=10",
            "task.labelled_size=10",
            "clients.mix=image:100,text:100",
        ],
    )
    with pytest.raises(TaskSplitError, match=r"clients\.count") as info:
        build_task(cfg)
    assert "\n" not in str(info.value)
    assert "200" in str(info.value)


def test_server_sets_taking_every_sample_is_a_task_split_error() -> None:
    cfg = load_config(None, ["task.options.n_samples=100", "task.proxy_size=50", "task.labelled_size=30"])
    with pytest.raises(TaskSplitError, match="proxy_size") as info:
        build_task(cfg)
    assert "\n" not in str(info.value)


def test_with_overrides_changes_a_copy_and_validates(tiny_cfg: RunConfig) -> None:
    changed = with_overrides(tiny_cfg, ["rounds=7", "algorithm.name=local"])
    assert (changed.rounds, changed.algorithm.name) == (7, "local")
    assert tiny_cfg.rounds == 2  # the original is untouched
    with pytest.raises(ConfigError, match=r"^rounds"):
        with_overrides(tiny_cfg, ["rounds=0"])
