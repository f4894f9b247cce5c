"""A warm interpreter that forks kfp.local's step processes, so each step skips re-importing MLflow and pandas.

kfp.local's SubprocessRunner starts every step as ``<python> -m kfp.dsl.executor_main ...``, and on a small
machine importing MLflow, pandas and scikit-learn costs several seconds per step (docs/performance.md).
``Zygote`` starts one process that imports them once and listens on a Unix socket; during a local run
``sys.executable`` points at a tiny launcher script that hands its arguments, environment, working
directory and standard streams to the zygote, which forks a child to run the executor exactly as the
subprocess would have, and returns the child's exit code. Any other command the launcher is given runs on
the real interpreter. Set ``HYBRIDML_ZYGOTE=0`` to run every step as a plain subprocess.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import runpy
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

EXECUTOR = "kfp.dsl.executor_main"
# What steps import; loaded once in the zygote (only imports: no connection, file or thread is opened).
PRELOAD = (
    "kfp.dsl.executor_main",
    "hybridml.steps.prepare",
    "hybridml.steps.training",
    "hybridml.steps.release",
    "hybridml.adapters.registry",
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
import array, json, os, socket, sys
args = sys.argv[1:]
if args[:2] != ["-m", "{executor}"]:
    os.execv({python!r}, [{python!r}, *args])
sock = socket.socket(socket.AF_UNIX)
sock.connect({socket_path!r})
request = json.dumps({{"argv": args[2:], "env": dict(os.environ), "cwd": os.getcwd()}}).encode()
sock.sendmsg([len(request).to_bytes(8, "big") + request],
             [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
answer = b""
while chunk := sock.recv(16):
    answer += chunk
sys.exit(int(answer or b"1"))
"""


def _serve(socket_path: str) -> None:
    """Zygote main loop: preload, then fork one child per request."""
    import importlib

    for module in PRELOAD:
        importlib.import_module(module)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically
    server = socket.socket(socket.AF_UNIX)
    server.bind(socket_path + ".tmp")
    os.rename(socket_path + ".tmp", socket_path)  # appears only once ready to serve
    server.listen(16)
    server.settimeout(1.0)
    parent = os.getppid()
    sys.stdout.flush()
    sys.stderr.flush()
    while True:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            if os.getppid() != parent:  # the run that started us is gone (killed): do not linger
                return
            continue
        conn.settimeout(None)
        if os.fork() == 0:
            server.close()
            _child(conn)
        conn.close()


def _receive(conn: socket.socket) -> tuple[dict[str, object], list[int]]:
    fds = array.array("i")
    data, ancillary, _, _ = conn.recvmsg(1 << 20, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    size = int.from_bytes(data[:8], "big")
    body = data[8:]
    while len(body) < size:
        body += conn.recv(size - len(body))
    return json.loads(body), list(fds)


def _child(conn: socket.socket) -> None:
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # steps wait for their own subprocesses
        request, fds = _receive(conn)
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(str(request["cwd"]))
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in dict(request["env"]).items()})  # type: ignore[call-overload]
        sys.argv = [EXECUTOR, *[str(a) for a in request["argv"]]]  # type: ignore[attr-defined]
        try:
            runpy.run_module(EXECUTOR, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # report like an interpreter would, then exit non-zero
            traceback.print_exc()
            code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        with contextlib.suppress(OSError):
            conn.sendall(str(code).encode())
        # A forked child must not run the zygote's atexit handlers or finalise its modules.
        os._exit(code)


class Zygote:
    """Start the warm interpreter and provide the launcher path to use as ``sys.executable``."""

    def __init__(self, workdir: Path, python: str = sys.executable, ready_timeout_s: float = 120.0) -> None:
        self.workdir = workdir
        self.python = python
        self.ready_timeout_s = ready_timeout_s
        # AF_UNIX paths are limited to about 100 bytes; a run folder under a deep home could exceed that.
        self.socket_dir = Path(tempfile.mkdtemp(prefix="hybridml-zygote-"))
        self.socket_path = str(self.socket_dir / "s")
        self.launcher = workdir / "python"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Spawn the zygote (it preloads in the background) and write the launcher."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "zygote.log").open("ab")
        self.process = subprocess.Popen(
            [self.python, "-m", "hybridml.pipelines.zygote", self.socket_path],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        code = LAUNCHER.format(executor=EXECUTOR, python=self.python, socket_path=self.socket_path)
        # -S: the launcher needs only the standard library, and skipping site makes it start in milliseconds.
        script = f'#!/bin/sh\nexec {self.python} -S -c {_shell_quote(code)} "$@"\n'
        self.launcher.write_text(script)
        self.launcher.chmod(self.launcher.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    def wait_ready(self) -> None:
        """Block until the zygote listens (it has imported everything), or raise RuntimeError."""
        deadline = time.monotonic() + self.ready_timeout_s
        while not Path(self.socket_path).exists():
            if self.process is None or self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"zygote did not start (see {self.workdir / 'zygote.log'})")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the zygote; children it forked have finished with their steps."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.socket_dir, ignore_errors=True)


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


@contextlib.contextmanager
def warm_executable(workdir: Path, enabled: bool) -> Iterator[str | None]:
    """Point ``sys.executable`` at the zygote's launcher for the duration of a local run.

    kfp.local reads ``sys.executable`` when it starts each step; nothing else in this process starts Python
    subprocesses while the pipeline runs. Yields the launcher path, or None when disabled or unavailable.
    """
    if not enabled:
        yield None
        return
    zygote = Zygote(workdir)
    original = sys.executable
    try:
        zygote.start()
        zygote.wait_ready()
    except (OSError, RuntimeError):
        zygote.stop()
        yield None  # fall back to plain subprocesses
        return
    sys.executable = str(zygote.launcher)
    try:
        yield str(zygote.launcher)
    finally:
        sys.executable = original
        zygote.stop()


if __name__ == "__main__":
    _serve(sys.argv[1])
