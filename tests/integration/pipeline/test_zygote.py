"""The warm step interpreter: kfp.local steps forked from it behave like plain subprocesses."""

# No `from __future__ import annotations`: KFP reads component annotations as real types.

import contextlib
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kfp import dsl, local

import hybridml
from hybridml.daemon import client, identity, steps
from hybridml.pipelines.zygote import warm_executable


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def probe(tag: str) -> str:
    """Report where and how the step ran."""
    import os
    import sys

    print(f"probe says {tag}")
    where = f"{os.getcwd()}|{'mlflow' in sys.modules}|{os.getpid()}|{os.getppid()}"
    return f"{tag}|{os.environ.get('HYBRIDML_PROBE')}|{where}"


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def explode(message: str) -> str:
    """A step that fails."""
    raise ValueError(message)


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def leaves_a_thread_pool() -> str:
    """A step that leaves an idle ThreadPoolExecutor worker behind, as MLflow's artifact download does."""
    import sys
    from concurrent.futures import ThreadPoolExecutor

    # Kept alive by a module, as MLflow keeps its download pool: garbage collection will not stop its workers.
    sys.modules[__name__].pool = ThreadPoolExecutor(max_workers=2)  # type: ignore[attr-defined]
    return sys.modules[__name__].pool.submit(lambda: "pool ran").result()  # type: ignore[attr-defined]


@dsl.pipeline
def pool_step() -> str:
    return leaves_a_thread_pool().set_caching_options(False).output


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
    tag, env, cwd, preloaded, pid, _ = str(task.output).rsplit("|", 5)  # type: ignore[attr-defined]
    assert tag.startswith("one|")
    assert env == "env-reaches-step"
    assert cwd == os.getcwd()
    assert preloaded == "True"  # the step did not pay for importing MLflow
    assert int(pid) != os.getpid()
    assert "probe says one" in logs  # the step's stdout reached kfp.local's log
    assert not socket_dir.exists()  # stopped and cleaned up after the run


def test_a_step_with_an_idle_thread_pool_still_exits(tmp_path: Path) -> None:
    # The forked child must shut the pool's workers down as an interpreter does, not wait on them forever.
    with warm_executable(tmp_path / "z", enabled=True):
        task, _ = _run(pool_step, tmp_path)
    assert task.output == "pool ran"  # type: ignore[attr-defined]


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


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A running `hybridml` daemon for a home of its own: (socket, pid); stopped afterwards."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYBRIDML_", "MLFLOW_"))}
    started = subprocess.run(
        [sys.executable, "-m", "hybridml.launcher", "--home", str(home), "--help"],
        env={**env, "HYBRIDML_DAEMON": "1"}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    info = client.status(str(home.resolve()))
    assert info["running"] is True
    yield str(info["socket"]), int(info["pid"])
    client.stop(str(home.resolve()))
    location = identity.locate(str(home.resolve()))
    for leftover in (location.lock, location.start_lock, location.log):
        Path(leftover).unlink(missing_ok=True)


@pytest.mark.parametrize("same_build", [True, False])
def test_under_the_daemon_steps_fork_from_it_unless_it_is_another_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, daemon: tuple[str, int], same_build: bool
) -> None:
    socket_path, daemon_pid = daemon
    fingerprint = identity.fingerprint() if same_build else "sha256:another-build"
    # What a `run` command forked by the daemon sees: the daemon serves its steps, no zygote of its own.
    monkeypatch.setattr(steps, "_daemon", (socket_path, {"version": hybridml.__version__, "fingerprint": fingerprint}))
    with warm_executable(tmp_path / "z", enabled=True) as launcher:
        assert launcher == str(tmp_path / "z" / "python")
        assert socket_path in Path(launcher).read_text()
        task, logs = _run(probe_twice, tmp_path)
    tag, _, cwd, preloaded, _pid, ppid = str(task.output).rsplit("|", 5)  # type: ignore[attr-defined]
    assert tag.startswith("one|")
    assert cwd == os.getcwd()
    assert "probe says one" in logs
    assert list(tmp_path.glob("z/zygote.log")) == []  # no zygote was started for this run
    if same_build:
        assert (int(ppid), preloaded) == (daemon_pid, "True")  # forked by the warm daemon
    else:  # refused: the launcher ran the step on the real interpreter, cold, and the daemon kept running
        assert int(ppid) != daemon_pid
        assert preloaded == "False"
        assert client.alive(daemon_pid)
