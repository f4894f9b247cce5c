"""The daemon of one hybridml home: serves `hybridml` commands and the steps of the runs it starts, warm.

Started by the first command (``hybridml.daemon.client``), it imports typer and rich, forks a child per
command, and imports in the background what a kind of command needs after the first one of its kind (MLflow
for reads, kfp for ``run``, the step libraries once a run starts). It answers only clients of its own build
(version and source fingerprint), stops after ``HYBRIDML_DAEMON_IDLE_S`` seconds with no command running
(default 900), and stops on ``hybridml daemon stop`` or SIGTERM, letting running commands finish.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import time
import types
from collections.abc import Mapping, Sequence
from typing import Any

import hybridml
from hybridml.daemon import identity, steps, wire
from hybridml.daemon.server import Server, Target

# Modules each kind of command imports; a stage is loaded in the daemon the first time a command needs it.
STAGES: dict[str, tuple[str, ...]] = {
    "base": ("typer", "click", "rich.console", "rich.table", "rich.progress", "hybridml.config", "hybridml.errors"),
    "read": (
        "mlflow",
        "mlflow.tracking",
        "mlflow.store.tracking.sqlalchemy_store",
        "mlflow.store.model_registry.sqlalchemy_store",
        "hybridml.registry",
        "hybridml.deploy",
        "hybridml.deploy.local",
        "hybridml.serving.cli_support",
        "hybridml.serving.client",
        "hybridml.core.data",
    ),
    "run": ("kfp.local", "hybridml.pipelines", "hybridml.pipelines.training", "hybridml.pipelines.local_run"),
    "steps": (),  # filled from the step interpreter's list below, so both preload the same
}
# Commands that need no stage beyond "base" or only "run"; every other command reads the registry or a target.
LIGHT_COMMANDS = frozenset({"daemon"})


class Daemon(Server):
    """The per-home daemon: checks the client's build, loads stages per command, answers status and stop."""

    def __init__(self, location: identity.Location, fingerprint: str, idle_timeout_s: float, lock_fd: int) -> None:
        stages = {**STAGES, "steps": steps.PRELOAD}
        super().__init__(location.socket, stages, idle_timeout_s=idle_timeout_s, lock_fd=lock_fd)
        self.location = location
        self.fingerprint = fingerprint
        # Runs started by this daemon's commands fork their steps from it too (pipelines.zygote.warm_executable).
        steps.serve_steps_from(location.socket, {"version": hybridml.__version__, "fingerprint": fingerprint})

    def status(self) -> dict[str, Any]:
        """What `hybridml daemon status` prints."""
        return {
            "running": True,
            "pid": os.getpid(),
            "home": self.location.home,
            "version": hybridml.__version__,
            "fingerprint": self.fingerprint,
            "socket": self.location.socket,
            "log": self.location.log,
            "python": sys.executable,
            "started_at": self.started,
            "uptime_s": round(time.time() - self.started, 3),
            "idle_timeout_s": self.idle_timeout_s,
            "idle_s": 0.0 if self.children else round(time.monotonic() - self.last_active, 3),
            "running_commands": len(self.children),
            "served": self.served,
            "loaded": list(self.loaded),
        }

    def refuse(self, request: Mapping[str, Any]) -> tuple[str, str] | None:
        """Refuse a client of another build; a command (not a step) also retires this daemon for its own."""
        if request.get("version") == hybridml.__version__ and request.get("fingerprint") == self.fingerprint:
            return None
        if request.get("replace"):
            self.begin_stop(f"a client of another build ({request.get('fingerprint')}) replaces it")
        return "stale", f"this daemon serves build {self.fingerprint} of hybridml {hybridml.__version__}"

    def control(self, request: Mapping[str, Any], channel: wire.Channel) -> bool:
        """``status`` and ``stop`` are answered here, without a child."""
        kind = request.get("kind")
        if kind == "status":
            channel.send(self.status())
            return True
        if kind == "stop":
            info = self.status()
            self.begin_stop("asked to stop")
            channel.send({**info, "running": False, "stopping": True})
            return True
        return False

    def stages_for(self, request: Mapping[str, Any]) -> tuple[Sequence[str], Sequence[str], bool]:
        """A step waits for the step libraries (the run's next steps need them too); a command never waits.

        A command whose stage is not loaded yet is forked at once and imports what it needs itself, as it
        would in-process; the daemon loads that stage once no command runs, warm for the next one. A run
        is the exception: it mostly waits for its steps, so the step libraries load while it prepares.
        """
        if request.get("kind") == "module":
            return (("steps",) if request.get("module") == steps.EXECUTOR else ()), (), False
        argv = [str(a) for a in request.get("argv", [])]
        _, command = identity.root_options(argv)
        if command is None or "--help" in argv or command in LIGHT_COMMANDS:
            return (), (), False
        if command == "compile":
            return (), ("run",), False
        if command == "run":
            steps_warm = dict(request.get("env") or {}).get("HYBRIDML_ZYGOTE", "1") != "0"
            return (), (("steps", "read", "run") if steps_warm else ("run",)), steps_warm
        return (), ("read",), False

    def target(self, request: Mapping[str, Any]) -> Target:
        """A command runs the CLI's entry point; a step runs its module as ``python -m`` would."""
        if request.get("kind") == "cli":
            return lambda: _run_cli([str(a) for a in request.get("argv", [])])
        if request.get("kind") == "module" and isinstance(request.get("module"), str):
            return lambda: steps.run_module(str(request["module"]), [str(a) for a in request.get("argv", [])])
        raise ValueError(f"unknown request kind {request.get('kind')!r}")


def _run_cli(argv: list[str]) -> None:
    # A fresh __main__, as for a console script (click names the program from it), and the CLI module
    # imported here, after the client's streams and environment are in place (its consoles detect the TTY).
    sys.modules["__main__"] = types.ModuleType("__main__")
    sys.argv = ["hybridml", *argv]
    from hybridml.cli import main

    main()


def _lock(path: str, timeout_s: float) -> int | None:
    """Take the home's daemon lock, waiting for a predecessor that is still letting go; None if held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                return None
            time.sleep(0.02)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hybridml.daemon --home HOME``: run the daemon in the foreground (the client detaches it)."""
    parser = argparse.ArgumentParser(prog="python -m hybridml.daemon", description=__doc__)
    parser.add_argument("--home", required=True, help="resolved hybridml home this daemon serves")
    args = parser.parse_args(argv)
    os.chdir("/")  # hold no user folder open
    location = identity.locate(args.home)
    lock_fd = _lock(location.lock, timeout_s=10.0)
    if lock_fd is None:
        print(f"another daemon holds {location.lock}", file=sys.stderr)
        return 1
    idle = identity.idle_timeout(os.environ)
    daemon = Daemon(location, identity.fingerprint(), idle, lock_fd)
    daemon.log(f"starting for {location.home} (build {daemon.fingerprint}, idle timeout {idle:g}s)")
    daemon.load("base")
    daemon.bind()
    daemon.log(f"listening on {location.socket}")
    daemon.serve_forever()
    return 0
