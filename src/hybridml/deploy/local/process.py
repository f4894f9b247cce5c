"""Model server processes of the local target: start, liveness, stop (whole process group), ports and hosts."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

STOP_GRACE_S = 10.0
_LOG_TAIL_CHARS = 2000


class Processes:
    """Server processes started by, or recorded for, one target object.

    Servers started here are kept as Popen objects, so exited ones are reaped instead of lingering as
    zombies; servers started by another process (a recorded pid) are checked through the pid, and only if
    their command line is a hybridml server, so a reused pid is never signalled.
    """

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, command: list[str], log_path: Path, banner: str) -> subprocess.Popen[bytes]:
        """Start ``command`` in its own process group, appending its output to ``log_path`` after ``banner``."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            log.write(f"\n=== {banner} ===\n".encode())
            log.flush()
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: outlives the caller, and stop() can end it whole
                close_fds=True,
            )
        self._children[process.pid] = process
        return process

    def alive(self, pid: int) -> bool:
        """Whether ``pid`` is a running hybridml server."""
        child = self._children.get(pid)
        if child is not None:
            return child.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # exists, owned by someone else
        return _is_our_server(pid)

    def stop(self, pid: int) -> None:
        """SIGTERM the server's process group, then SIGKILL it if it has not exited within the grace period."""
        if not self.alive(pid):
            self._children.pop(pid, None)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        if not self._wait_gone(pid, STOP_GRACE_S):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            self._wait_gone(pid, STOP_GRACE_S)
        self._children.pop(pid, None)

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        child = self._children.get(pid)
        if child is not None:
            try:
                child.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive(pid):
                return True
            time.sleep(0.05)
        return False


def dial_host(host: str) -> str:
    """The address a client connects to for a server listening on ``host``: loopback for a wildcard address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "127.0.0.1"  # a host name, or empty (all interfaces)
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return host


def url_host(host: str) -> str:
    """``host`` as it goes in a URL (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host else host


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Same option uvicorn sets, so a port in TIME_WAIT after a stop still counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    """A port on ``host`` that nothing listens on now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def _is_our_server(pid: int) -> bool:
    """Whether ``pid`` runs hybridml.serving; guards against signalling a process that reused a stale pid."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        return b"hybridml.serving" in cmdline.read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no procfs (macOS): trust the pid
    except OSError:
        return False


def tail(path: Path) -> str:
    """The end of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-_LOG_TAIL_CHARS:]
