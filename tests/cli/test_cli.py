"""The `hybridml` command's surface: help, compile, argument errors, exit codes (in-process, no pipeline run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hybridml.cli import app
from hybridml.pipelines.training import COMPILED

runner = CliRunner()


def invoke(home: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--home", str(home), *args], env={"MLFLOW_TRACKING_URI": ""})
    return result.exit_code, result.stdout, result.stderr


def test_help_lists_every_command(tmp_path: Path) -> None:
    code, out, _ = invoke(tmp_path, "--help")
    assert code == 0
    commands = ("run", "compile", "models", "serve", "predict", "endpoints", "deploy", "rollout", "monitor", "canary")
    for command in (*commands, "ab", "trigger", "export", "feedback", "daemon"):
        assert f"│ {command} " in out
    code, out, _ = invoke(tmp_path, "models", "--help")
    for sub in ("list", "show", "history", "approve", "reject", "mirror"):
        assert f"│ {sub} " in out


def test_compile_writes_the_committed_pipeline(tmp_path: Path) -> None:
    code, _, err = invoke(tmp_path, "compile", "-o", str(tmp_path / "p.yaml"))
    assert code == 0, err
    assert (tmp_path / "p.yaml").read_text() == COMPILED.read_text()


@pytest.mark.parametrize(
    ("args", "message", "exit_code"),
    [
        (("run", "--threshold", "2"), "threshold must be between 0 and 1, got 2.0", 2),
        (("run", "--tolerance", "-1"), "tolerance must be between 0 and 1, got -1.0", 2),
        (("run", "--traffic", "0"), "traffic percent must be between 1 and 100, got 0", 2),
        (("models", "show", "ghost/1"), "ghost", 3),
        (("models", "history", "ghost"), "ghost", 3),
        (("models", "approve", "ghost", "1", "--reason", "ok"), "ghost", 3),
        (("models", "approve", "ghost", "1", "--reason", " "), "--reason must not be empty", 2),
        (("models", "show", "bad@@ref"), "bad@@ref", 2),
        (("predict", "missing.csv", "--model", "m"), "data file not found", 3),
        (("run", "--deploy-config", "missing.yaml"), "deploy config file not found: missing.yaml", 3),
    ],
)
def test_errors_are_one_line_with_a_meaningful_exit_code(
    tmp_path: Path, args: tuple[str, ...], message: str, exit_code: int
) -> None:
    code, out, err = invoke(tmp_path, *args)
    assert code == exit_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert out == ""


def test_a_deploy_config_that_is_not_an_object_stops_run_before_it_starts(tmp_path: Path) -> None:
    bad = tmp_path / "target.yaml"
    bad.write_text("- just\n- a list\n")
    code, _, err = invoke(tmp_path / "home", "run", "--deploy-target", "sagemaker", "--deploy-config", str(bad))
    assert code == 2, err
    assert f"deploy config {bad}" in err
    assert not (tmp_path / "home" / "runs").exists()  # refused before a run directory was made


def test_a_bridge_with_an_unknown_key_stops_run_before_training(tmp_path: Path) -> None:
    bridge = tmp_path / "bridge.yaml"
    bridge.write_text("role_arn: arn:aws:iam::1:role/r\nbucket: b\nimage_uri: i\nendpoint: typo\n")
    code, _, err = invoke(tmp_path / "home", "run", "--sagemaker-bridge", str(bridge))
    assert code == 2, err
    assert "unknown sagemaker deploy config key 'endpoint'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "home" / "runs").exists()


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--home", str(tmp_path), "--verbose", "run", "--threshold", "3"])
    assert result.exit_code == 2
    assert "Traceback" in result.stderr


def test_the_console_script_is_installed() -> None:
    hybridml = Path(sys.executable).with_name("hybridml")
    env = {**os.environ, "HYBRIDML_DAEMON": "0"}  # the script itself; tests/cli/test_daemon.py covers the daemon
    result = subprocess.run([str(hybridml), "--help"], capture_output=True, text=True, check=False, env=env)
    assert result.returncode == 0
    assert "compile" in result.stdout
