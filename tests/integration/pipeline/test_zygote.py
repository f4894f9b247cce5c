"""The warm step interpreter: kfp.local steps forked from it behave like plain subprocesses."""

# No `from __future__ import annotations`: KFP reads component annotations as real types.

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from kfp import dsl, local

from hybridml.pipelines.zygote import warm_executable


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def probe(tag: str) -> str:
    """Report where and how the step ran."""
    import os
    import sys

    print(f"probe says {tag}")
    return f"{tag}|{os.environ.get('HYBRIDML_PROBE')}|{os.getcwd()}|{'mlflow' in sys.modules}|{os.getpid()}"


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def explode(message: str) -> str:
    """A step that fails."""
    raise ValueError(message)


@dsl.pipeline
def probe_twice() -> str:
    first = probe(tag="one").set_caching_options(False)
    return probe(tag=first.output).set_caching_options(False).output


@dsl.pipeline
def failing() -> str:
    return explode(message="boom").set_caching_options(False).output


def _run(pipeline: object, tmp_path: Path) -> tuple[object, str]:
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    logs = io.StringIO()
    with contextlib.redirect_stdout(logs):
        task = pipeline()  # type: ignore[operator]
    return task, logs.getvalue()


def test_steps_run_forked_from_the_warm_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRIDML_PROBE", "env-reaches-step")
    real = sys.executable
    with warm_executable(tmp_path / "z", enabled=True) as launcher:
        assert launcher is not None
        assert sys.executable == launcher
        socket_dir = Path(re.findall(r"/[^'\"]*hybridml-zygote-[^/'\"]+", Path(launcher).read_text())[0])
        assert socket_dir.is_dir()
        task, logs = _run(probe_twice, tmp_path)
    assert sys.executable == real
    tag, env, cwd, preloaded, pid = str(task.output).rsplit("|", 4)  # type: ignore[attr-defined]
    assert tag.startswith("one|")
    assert env == "env-reaches-step"
    assert cwd == os.getcwd()
    assert preloaded == "True"  # the step did not pay for importing MLflow
    assert int(pid) != os.getpid()
    assert "probe says one" in logs  # the step's stdout reached kfp.local's log
    assert not socket_dir.exists()  # stopped and cleaned up after the run


def test_a_failing_step_fails_the_pipeline(tmp_path: Path) -> None:
    with warm_executable(tmp_path / "z", enabled=True), pytest.raises(RuntimeError, match="explode"):
        _run(failing, tmp_path)


def test_other_commands_run_on_the_real_interpreter(tmp_path: Path) -> None:
    with warm_executable(tmp_path / "z", enabled=True) as launcher:
        assert launcher is not None
        out = subprocess.run([launcher, "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.strip() == sys.prefix


def test_disabled_leaves_the_interpreter_alone(tmp_path: Path) -> None:
    real = sys.executable
    with warm_executable(tmp_path / "z", enabled=False) as launcher:
        assert launcher is None
        assert sys.executable == real
    assert not (tmp_path / "z").exists()
