"""Reach the daemon of a home: connect, start one when none runs, ask its status, stop it (stdlib only)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from typing import Any

import hybridml
from hybridml.daemon import identity, wire

LOG_LIMIT = 1 << 20
START_TIMEOUT_S = 60.0  # first import of typer and rich on a cold, busy machine; then the command runs in-process


def connect(location: identity.Location) -> wire.Channel | None:
    """A channel to the running daemon, or None when none listens."""
    sock = wire.connect(location.socket)
    return None if sock is None else wire.Channel(sock)


def start(location: identity.Location, timeout_s: float = START_TIMEOUT_S) -> wire.Channel | None:
    """Connect to the home's daemon, starting it first if none runs; None if it could not be started.

    Clients starting at once take turns on a lock, so a home gets one daemon: the second finds the first's.
    """
    import subprocess  # only when starting one: most commands find the daemon running

    lock = os.open(location.start_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        channel = connect(location)
        if channel is not None:
            return channel
        # Appended to by every daemon of this home (a replaced one may still be finishing); kept under 1 MiB.
        with open(os.open(location.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as log:
            if os.fstat(log.fileno()).st_size > LOG_LIMIT:
                os.ftruncate(log.fileno(), 0)
            process = subprocess.Popen(
                [sys.executable, "-P", "-m", "hybridml.daemon", "--home", location.home],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/", start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while (channel := connect(location)) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                return None
            time.sleep(0.01)
        process.returncode = 0  # detached on purpose: no ResourceWarning for a daemon that outlives us
        return channel
    finally:
        os.close(lock)  # releases the lock


def request(location: identity.Location, message: dict[str, Any]) -> dict[str, Any] | None:
    """Send a control message (status, stop) to the running daemon; None when none runs."""
    channel = connect(location)
    if channel is None:
        return None
    try:
        channel.send(message)
        return channel.receive()
    finally:
        channel.sock.close()


def status(home: str) -> dict[str, Any]:
    """The daemon's own report, or ``{"running": False, ...}``; ``current`` says whether it is this build."""
    location = identity.locate(home)
    info = request(location, {"kind": "status"})
    if info is None:
        return {"running": False, "home": home, "socket": location.socket}
    return {**info, "current": info.get("fingerprint") == identity.fingerprint()}


def stop(home: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """Stop the home's daemon: it stops listening at once (a next command starts a fresh one) and exits once
    the commands it is running have finished. Waits up to ``timeout_s`` for that exit when none are running.
    """
    location = identity.locate(home)
    info = request(location, {"kind": "stop"})
    if info is None:
        return {"running": False, "stopped": False, "home": home, "socket": location.socket}
    deadline = time.monotonic() + timeout_s
    while not info.get("running_commands") and alive(int(info["pid"])) and time.monotonic() < deadline:
        time.sleep(0.02)
    return {**info, "running": False, "stopped": True}


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie awaiting its reaper counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def run(argv: list[str], home: str) -> tuple[int, int | None] | None:
    """Run a `hybridml` command line in the home's daemon, starting or replacing it as needed.

    Returns (exit code, signal that killed the command or None), or None when no daemon could run it (the
    command did not start; the caller runs it in-process).
    """
    try:
        location = identity.locate(home)
        cwd = os.getcwd()
    except OSError:
        return None
    message = {
        "kind": "cli",
        "argv": argv,
        "env": dict(os.environ),
        "cwd": cwd,
        "stdio": wire.stdio(),
        "version": hybridml.__version__,
        "fingerprint": identity.fingerprint(),
        "replace": True,  # a daemon of another build stops for us, and we start our own
    }
    for _ in range(3):
        try:
            channel = connect(location) or start(location)
        except OSError:
            return None
        if channel is None:
            return None
        try:
            return wire.run_request(channel, message)
        except (wire.Refused, OSError, ValueError, wire.ProtocolError):
            continue  # a stale daemon (now stopping) or one that stopped as we connected: the command did not run
        finally:
            with contextlib.suppress(OSError):
                channel.sock.close()
    return None
