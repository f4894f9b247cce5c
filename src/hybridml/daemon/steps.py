"""Pipeline steps served warm: what a step server preloads, and the launcher kfp.local runs as its Python.

kfp.local's SubprocessRunner starts every step as ``<sys.executable> -m kfp.dsl.executor_main ...``. During
a local run ``sys.executable`` points at a launcher script written here: it hands the step's arguments,
environment, working directory and standard streams to a warm server (the run's own step zygote, or the
daemon that runs the `run` command), which forks a child to run the executor as the subprocess would have.
When no server answers, or it serves another build, the launcher runs the real interpreter instead, so a
step always runs. Anything other than the executor goes straight to the real interpreter.
"""

from __future__ import annotations

import os
import runpy
import stat
import sys
from pathlib import Path
from typing import Any

import hybridml

EXECUTOR = "kfp.dsl.executor_main"
# What steps import; loaded once in the server (imports only: no connection, file or thread is opened).
PRELOAD = (
    "kfp.dsl.executor_main",
    "hybridml.steps.prepare",
    "hybridml.steps.training",
    "hybridml.steps.release",
    "hybridml.registry",
    "hybridml.adapters.tracking",
    "hybridml.serving.client",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "optuna",
    "optuna_integration.mlflow",
    "optuna_integration.xgboost",
    "xgboost",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.metrics",
    "matplotlib.pyplot",
)

LAUNCHER = """\
import os, sys
args = sys.argv[1:]
if args[:2] == ["-m", {executor!r}]:
    sys.path.insert(0, {root!r})
    from hybridml.daemon import wire
    request = {{"kind": "module", "module": {executor!r}, "argv": args[2:], "env": dict(os.environ),
               "cwd": os.getcwd(), "stdio": wire.stdio(), **{credentials!r}}}
    outcome = wire.call({socket_path!r}, request)
    if outcome is not None:
        wire.exit_like(*outcome)
os.execv({python!r}, [{python!r}, *args])
"""

# Set in a daemon before it forks commands: the socket and build its steps go to (a run started by one of
# its commands then needs no step zygote of its own).
_daemon: tuple[str, dict[str, str]] | None = None


def serve_steps_from(socket_path: str, credentials: dict[str, str]) -> None:
    """Declare this process a daemon that serves steps at ``socket_path`` to clients sending ``credentials``."""
    global _daemon
    _daemon = (socket_path, dict(credentials))


def daemon_server() -> tuple[str, dict[str, str]] | None:
    """The daemon this process was forked from, if it serves steps."""
    return _daemon


def write_launcher(path: Path, socket_path: str, python: str, credentials: dict[str, str] | None = None) -> Path:
    """Write the executable that kfp.local is to run as ``sys.executable``."""
    root = str(Path(hybridml.__file__).resolve().parent.parent)  # folder holding the hybridml package
    code = LAUNCHER.format(
        executor=EXECUTOR, root=root, credentials=credentials or {}, socket_path=socket_path, python=python
    )
    # -S: the launcher needs only the standard library and hybridml.daemon.wire; skipping site saves ~20 ms.
    path.write_text(f'#!/bin/sh\nexec {python} -S -c {_shell_quote(code)} "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def run_module(module: str, argv: list[str]) -> Any:
    """Run ``module`` as ``python -m module argv...`` would, in this (forked) process."""
    sys.argv = [module, *argv]
    sys.path.insert(0, os.getcwd())
    return runpy.run_module(module, run_name="__main__", alter_sys=True)


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
