"""Typed target configuration: from flags, pipeline parameters and files, through one factory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hybridml.config import Settings
from hybridml.deploy import LocalConfig, TargetConfig, config_from, make_target, parse_config, read_config_file
from hybridml.deploy.local import LocalTarget
from hybridml.errors import InvalidInputError, NotFoundError

pytestmark = pytest.mark.unit


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({}, home=tmp_path / "home")


def test_local_defaults_put_state_under_the_home(settings: Settings) -> None:
    config = config_from(None, {}, settings)
    assert config == LocalConfig(state_dir=settings.home / "deployments")
    assert isinstance(config, LocalConfig)
    assert (config.host, config.start_timeout_s, config.python, config.control_token_file) == (
        "127.0.0.1",
        120.0,
        sys.executable,
        None,
    )
    assert (config.payload_log_max_bytes, config.payload_log_keep) == (None, None)


def test_options_become_typed_fields(settings: Settings, tmp_path: Path) -> None:
    options = {"state_dir": str(tmp_path / "s"), "host": "0.0.0.0", "start_timeout_s": 5, "payload_log_keep": 3}
    config = config_from("local", options, settings)
    assert config == LocalConfig(tmp_path / "s", host="0.0.0.0", start_timeout_s=5, payload_log_keep=3)
    assert isinstance(config, LocalConfig) and isinstance(config.state_dir, Path)
    with pytest.raises(AttributeError):
        config.host = "x"  # type: ignore[misc]


def test_the_target_may_be_named_in_the_options(settings: Settings) -> None:
    assert isinstance(config_from(None, {"target": "local"}, settings), LocalConfig)
    assert isinstance(config_from("local", {"target": "local"}, settings), LocalConfig)
    with pytest.raises(InvalidInputError, match=r"^deploy config is for target 'kserve', not 'local'$"):
        config_from("local", {"target": "kserve"}, settings)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("nowhere", {}, r"^unknown deploy target 'nowhere' \(choose from local, kserve, sagemaker\)$"),
        ("kserve", {"replicas": 2}, r"^unknown kserve deploy config key 'replicas' \(known: context, cpu_limit, "),
        ("sagemaker", {"hots": "x"}, r"^unknown sagemaker deploy config key 'hots' \(known: bucket, "),
        (None, {"target": "kserve", "mode": "x"}, "^kserve deploy config: mode must be one of auto, Serverless, "),
        (
            "local",
            {"hots": "x", "zz": 1},
            r"^unknown local deploy config key 'hots' \(known: control_token_file, host, ",
        ),
        ("local", {"start_timeout_s": "soon"}, "start_timeout_s must be a positive number, got 'soon'"),
        ("local", {"start_timeout_s": 0}, "start_timeout_s must be a positive number, got 0"),
        ("local", {"start_timeout_s": True}, "start_timeout_s must be a positive number, got True"),
        ("local", {"host": ""}, "host must be a non-empty string"),
        ("local", {"state_dir": 3}, "state_dir must be a directory path, got 3"),
        ("local", {"python": None}, "python must be a non-empty string"),
        ("local", {"control_token_file": 7}, "control_token_file must be a path, got 7"),
        ("local", {"payload_log_max_bytes": 0}, "payload_log_max_bytes must be a positive integer, got 0"),
        ("local", {"payload_log_keep": "2"}, "payload_log_keep must be a positive integer, got '2'"),
    ],
)
def test_bad_configs_are_refused_naming_the_problem(
    settings: Settings, name: str | None, options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        config_from(name, options, settings)


def test_json_and_yaml_files(tmp_path: Path, settings: Settings) -> None:
    as_json = tmp_path / "d.json"
    as_json.write_text('{"target": "local", "start_timeout_s": 9.5}')
    as_yaml = tmp_path / "d.yaml"
    as_yaml.write_text("host: 127.0.0.2\nstate_dir: /tmp/x\n")
    assert read_config_file(as_json) == {"target": "local", "start_timeout_s": 9.5}
    assert read_config_file(as_yaml) == {"host": "127.0.0.2", "state_dir": "/tmp/x"}
    assert config_from(None, read_config_file(as_yaml), settings) == LocalConfig(Path("/tmp/x"), host="127.0.0.2")
    with pytest.raises(NotFoundError, match=r"^deploy config file not found: .*nope\.yaml$"):
        read_config_file(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "deploy_config must be an object of option names to values, got list"),
        ("just words", "deploy_config must be an object of option names to values, got str"),
        ("{1: 2}", "deploy_config must be an object of option names to values, got dict"),
        ("{'a': [1,", "deploy_config is neither JSON nor YAML"),
    ],
)
def test_bad_config_text_is_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_config(text, "deploy_config")


@pytest.mark.parametrize("text", ["", "  \n", "null", "{}"])
def test_empty_config_text_is_no_options(text: str) -> None:
    assert parse_config(text) == {}


def test_the_factory_builds_the_configured_target(tmp_path: Path) -> None:
    target = make_target(LocalConfig(tmp_path / "state", start_timeout_s=7))
    assert isinstance(target, LocalTarget)
    assert (target.target_name, target.state_dir, target.config.start_timeout_s) == ("local", tmp_path / "state", 7)
    assert target.list() == []


def test_the_factory_refuses_configs_of_targets_not_built() -> None:
    class KServeLike(TargetConfig):
        kind = "kserve"

    with pytest.raises(InvalidInputError, match=r"^deploy target 'kserve' is not built yet"):
        make_target(KServeLike())
