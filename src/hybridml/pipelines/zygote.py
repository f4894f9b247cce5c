"""A warm interpreter that forks kfp.local's step processes, so each step skips re-importing MLflow and pandas.

kfp.local's SubprocessRunner starts every step as ``<python> -m kfp.dsl.executor_main ...``, and on a small
machine importing MLflow, pandas and scikit-learn costs several seconds per step (docs/performance.md).
During a local run ``sys.executable`` points at a tiny launcher (``hybridml.daemon.steps``) that hands the
step's arguments, environment, working directory and standard streams to a warm server, which forks a child
to run the executor exactly as the subprocess would have and reports how it ended. The server is the
`hybridml` daemon when the run is one of its commands (warm across runs), else a ``Zygote`` started for this
run. Both are ``hybridml.daemon.server.Server``. Set ``HYBRIDML_ZYGOTE=0`` to run every step as a plain
subprocess.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from hybridml.daemon import steps
from hybridml.daemon.server import Server, Target

EXECUTOR = steps.EXECUTOR
PRELOAD = steps.PRELOAD


class StepServer(Server):
    """The run's own step server: preloads the step libraries and runs only the kfp executor."""

    def refuse(self, request: Mapping[str, Any]) -> tuple[str, str] | None:
        """Only steps: the launcher sends nothing else."""
        if request.get("kind") != "module" or request.get("module") != EXECUTOR:
            return "unsupported", f"this server runs {EXECUTOR} only"
        return None

    def target(self, request: Mapping[str, Any]) -> Target:
        """Run the executor as ``python -m`` would."""
        return lambda: steps.run_module(EXECUTOR, [str(a) for a in request.get("argv", [])])


def _serve(socket_path: str) -> None:
    """Zygote main: preload, listen, fork one child per step; stop when the run that started it is gone."""
    server = StepServer(socket_path, {"steps": PRELOAD}, parent_pid=os.getppid())
    server.load("steps")
    server.bind()
    server.serve_forever()


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
        steps.write_launcher(self.launcher, self.socket_path, self.python)

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


@contextlib.contextmanager
def warm_executable(workdir: Path, enabled: bool) -> Iterator[str | None]:
    """Point ``sys.executable`` at a warm step launcher for the duration of a local run.

    kfp.local reads ``sys.executable`` when it starts each step; nothing else in this process starts Python
    subprocesses while the pipeline runs. Under the `hybridml` daemon the launcher goes to the daemon (warm
    already, nothing to start); otherwise a zygote is started for this run. Yields the launcher path, or None
    when disabled or unavailable.
    """
    if not enabled:
        yield None
        return
    original = sys.executable
    daemon = steps.daemon_server()
    if daemon is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        launcher = steps.write_launcher(workdir / "python", daemon[0], original, daemon[1])
        sys.executable = str(launcher)
        try:
            yield str(launcher)
        finally:
            sys.executable = original
        return
    zygote = Zygote(workdir)
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
