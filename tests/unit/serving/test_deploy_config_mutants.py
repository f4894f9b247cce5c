"""Local deploy configuration behaviour the mutation run (issue 12) found unasserted: boundaries, normalisation,
exact refusal messages, and how options and config text are read (the SageMaker part has its own tests)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hybridml.config import Settings
from hybridml.deploy import LocalConfig, config_from, parse_config, read_config_file
from hybridml.errors import InvalidInputError

pytestmark = pytest.mark.unit


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({}, home=tmp_path / "home")


def test_the_state_dir_is_a_path_with_the_home_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert LocalConfig("~/deployments").state_dir == tmp_path / "deployments"
    assert LocalConfig(str(tmp_path / "s")).state_dir == tmp_path / "s"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"state_dir": ""}, "state_dir must be a directory path, got ''"),
        ({"state_dir": None}, "state_dir must be a directory path, got None"),
        ({"host": 5}, "host must be a non-empty string, got 5"),
        ({"host": ""}, "host must be a non-empty string, got ''"),
        ({"start_timeout_s": -1}, "start_timeout_s must be a positive number, got -1"),
        ({"start_timeout_s": math.nan}, "start_timeout_s must be a positive number, got nan"),
        ({"python": ""}, "python must be a non-empty string, got ''"),
        ({"python": 3}, "python must be a non-empty string, got 3"),
        ({"control_token_file": Path("t")}, "control_token_file must be a path, got PosixPath('t')"),
        ({"payload_log_max_bytes": True}, "payload_log_max_bytes must be a positive integer, got True"),
        ({"payload_log_max_bytes": 1.5}, "payload_log_max_bytes must be a positive integer, got 1.5"),
        ({"payload_log_keep": 0}, "payload_log_keep must be a positive integer, got 0"),
        ({"payload_log_keep": -3}, "payload_log_keep must be a positive integer, got -3"),
    ],
)
def test_each_refusal_is_one_exact_line(settings: Settings, options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        config_from("local", options, settings)
    assert str(caught.value) == f"local deploy config: {message}"


def test_smallest_accepted_values(tmp_path: Path) -> None:
    config = LocalConfig(
        tmp_path,
        host="h",
        start_timeout_s=0.001,
        python="p",
        control_token_file="",
        payload_log_max_bytes=1,
        payload_log_keep=1,
    )
    assert (config.host, config.start_timeout_s, config.python, config.control_token_file) == ("h", 0.001, "p", "")
    assert (config.payload_log_max_bytes, config.payload_log_keep) == (1, 1)
    assert LocalConfig(tmp_path, start_timeout_s=1).start_timeout_s == 1


def test_options_keep_an_explicit_state_dir_and_default_the_others(settings: Settings, tmp_path: Path) -> None:
    config = config_from("local", {"state_dir": tmp_path / "x", "control_token_file": "/t"}, settings)
    assert config == LocalConfig(tmp_path / "x", control_token_file="/t")
    assert config_from("local", {}, settings) == LocalConfig(settings.deployments_dir)
    assert config_from("", {}, settings) == LocalConfig(settings.deployments_dir)  # "" names no target


def test_unknown_keys_name_the_first_in_order_and_every_known_one(settings: Settings) -> None:
    with pytest.raises(InvalidInputError) as caught:
        config_from("local", {"zz": 1, "hots": "x"}, settings)
    assert str(caught.value) == (
        "unknown local deploy config key 'hots' (known: control_token_file, host, payload_log_keep,"
        " payload_log_max_bytes, python, start_timeout_s, state_dir)"
    )


def test_options_are_not_changed_by_reading_them(settings: Settings) -> None:
    options = {"target": "local", "host": "127.0.0.2"}
    config_from(None, options, settings)
    assert options == {"target": "local", "host": "127.0.0.2"}


def test_broken_yaml_is_named_by_its_first_line(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text("a: [1,\n")
    with pytest.raises(InvalidInputError) as caught:
        read_config_file(path)
    text = str(caught.value)
    assert text.startswith(f"deploy config {path} is neither JSON nor YAML: ") and "\n" not in text
    with pytest.raises(
        InvalidInputError, match=r"^deploy config must be an object of option names to values, got int$"
    ):
        parse_config("3")


def test_config_text_of_nested_values_is_kept() -> None:
    assert parse_config('{"a": {"b": [1, 2]}, "c": null}') == {"a": {"b": [1, 2]}, "c": None}
    assert parse_config("a: 1\nb: x\n", "flags") == {"a": 1, "b": "x"}
