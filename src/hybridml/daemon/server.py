"""A warm server: imports modules once, then forks one child per request and reports how each child ended.

Both the `hybridml` daemon (``hybridml.daemon.service``) and the per-run step interpreter
(``hybridml.pipelines.zygote``) are this loop with different stages and checks. The loop is single-threaded
on purpose: ``fork`` copies only the calling thread, so the server never starts a thread, never opens a
connection, file or store that a child could inherit half-used, and imports modules only between requests.
A command cannot change the server: it runs in its own forked copy, whose environment, working directory,
imports and globals die with it.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hybridml.daemon import wire

Target = Callable[[], object]


class Server:
    """Serve requests on ``socket_path`` (see :mod:`hybridml.daemon.wire` for the protocol).

    Subclasses decide what a request may do (:meth:`refuse`), what must be imported first
    (:meth:`stages_for`), what runs in the child (:meth:`target`) and which requests the server answers
    itself without forking (:meth:`control`).

    Args:
        socket_path: where to listen; the socket appears there only once the server is ready.
        stages: named groups of modules to import, loaded on demand (see :meth:`load`).
        idle_timeout_s: stop after this long with no command running (None: never).
        parent_pid: stop when this process is no longer our parent (the run that started us was killed).
        lock_fd: a descriptor holding the single-instance lock; released as soon as the server stops
            listening, so a successor can start while the last children finish.
    """

    def __init__(
        self,
        socket_path: str,
        stages: Mapping[str, Sequence[str]],
        *,
        idle_timeout_s: float | None = None,
        parent_pid: int | None = None,
        lock_fd: int | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.stages = dict(stages)
        self.idle_timeout_s = idle_timeout_s
        self.parent_pid = parent_pid
        self.lock_fd = lock_fd
        self.loaded: list[str] = []
        self.children: dict[int, socket.socket] = {}
        self.started = time.time()
        self.last_active = time.monotonic()
        self.served = 0
        self.stop_reason: str | None = None
        self._listener: socket.socket | None = None
        self._inode: int | None = None
        self._pending: list[tuple[str, str]] = []  # (stage, module) to import while idle
        self._stage_seconds: dict[str, float] = {}
        self._alongside: set[str] = set()
        self._wakeup: tuple[int, int] | None = None
        self._signaled: str | None = None

    # ----------------------------------------------------------------------------------------------- hooks

    def refuse(self, request: Mapping[str, Any]) -> tuple[str, str] | None:
        """(reason, detail) when the request must not run here; None to run it."""
        return None

    def stages_for(self, request: Mapping[str, Any]) -> tuple[Sequence[str], Sequence[str], bool]:
        """Stages to load before forking the request's child, stages to load in the background after, and
        whether those may load while commands run (see :meth:`load_later`).
        """
        return (), (), False

    def control(self, request: Mapping[str, Any], channel: wire.Channel) -> bool:
        """Answer a request in the server itself (no child); True when handled."""
        return False

    def target(self, request: Mapping[str, Any]) -> Target:
        """What the child runs once it has taken on the client's streams, environment and directory."""
        raise NotImplementedError

    # ---------------------------------------------------------------------------------------------- public

    def load(self, *names: str) -> None:
        """Import the modules of each named stage not loaded yet (a module that fails is logged and skipped)."""
        for name in names:
            if name in self.loaded:
                continue
            began = time.perf_counter()
            for module in self.stages.get(name, ()):
                self._import(module)
            self._pending = [(stage, module) for stage, module in self._pending if stage != name]
            self._loaded(name, time.perf_counter() - began + self._stage_seconds.pop(name, 0.0))

    def load_later(self, *names: str, alongside: bool = False) -> None:
        """Queue the stages' modules, imported one per turn of the loop while no request waits.

        Args:
            names: stages to load.
            alongside: import them while commands run (worth it when the running command mostly waits, as a
                run waits for its steps); otherwise only once no command runs, so a first command does not
                share the CPU with the daemon preparing for the next one.
        """
        queued = {stage for stage, _ in self._pending}
        if alongside:
            self._alongside.update(names)
        for name in names:
            if name not in self.loaded and name not in queued:
                self._pending.extend((name, module) for module in self.stages.get(name, ()))
                if not self.stages.get(name):
                    self.loaded.append(name)

    def bind(self) -> None:
        """Listen at ``socket_path``: bound aside and renamed into place, so it appears only when ready."""
        staging = f"{self.socket_path}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(staging)
        os.chmod(staging, 0o600)
        listener.listen(64)
        os.rename(staging, self.socket_path)
        self._listener = listener
        self._inode = os.stat(self.socket_path).st_ino

    def begin_stop(self, reason: str) -> None:
        """Stop listening now (a successor may start at once); exit once the running children have ended."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.log(f"stopping: {reason}")
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            if self._owns_socket():
                with contextlib.suppress(OSError):
                    os.unlink(self.socket_path)
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    def serve_forever(self) -> None:
        """The loop: accept, fork, reap and report, until stopped, idle or orphaned."""
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        self._wakeup = (read_end, write_end)
        signal.set_wakeup_fd(write_end)  # SIGCHLD and SIGTERM wake select() at once
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Only note it: the loop stops listening, never a handler in the middle of select().
            signal.signal(sig, lambda signum, _: setattr(self, "_signaled", signal.Signals(signum).name))
        while True:
            self._reap()
            if self._signaled:
                self.begin_stop(self._signaled)
            self._check_lifetime()
            if self._listener is None and not self.children:
                break
            loading = (
                bool(self._pending)
                and self._listener is not None
                and (not self.children or self._pending[0][0] in self._alongside)
            )
            waiting: list[int | socket.socket] = [read_end] if self._listener is None else [read_end, self._listener]
            ready, _, _ = select.select(waiting, [], [], 0 if loading else 1.0)
            if read_end in ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(read_end, 512):
                        pass
            if self._listener is not None and self._listener in ready:
                self._accept()
            elif loading and not ready:
                self._load_next()  # one module per turn: a waiting client is served in between
        self.log("stopped")

    def log(self, message: str) -> None:
        """One line in the server's log (its stderr)."""
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [{os.getpid()}] {message}", file=sys.stderr, flush=True)

    # --------------------------------------------------------------------------------------------- private

    def _import(self, module: str) -> None:
        try:
            importlib.import_module(module)
        except Exception as exc:  # the child imports it again and reports the error itself
            if isinstance(exc, ModuleNotFoundError) and exc.name == module:
                self.log(f"preload: no module {module}")  # not in this build (e.g. moved, or an extra)
            else:
                self.log(f"preload {module} failed:")
                traceback.print_exc()

    def _loaded(self, stage: str, seconds: float) -> None:
        self.loaded.append(stage)
        gc.freeze()  # keep what was imported out of the collector's way: children share it, copy-free
        self.log(f"loaded stage {stage} in {seconds:.2f}s")

    def _load_next(self) -> None:
        stage, module = self._pending.pop(0)
        began = time.perf_counter()
        self._import(module)
        self._stage_seconds[stage] = self._stage_seconds.get(stage, 0.0) + time.perf_counter() - began
        if all(queued != stage for queued, _ in self._pending):
            self._loaded(stage, self._stage_seconds.pop(stage))

    def _owns_socket(self) -> bool:
        try:
            return os.stat(self.socket_path).st_ino == self._inode
        except OSError:
            return False

    def _check_lifetime(self) -> None:
        if self._listener is None:
            return
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            self.begin_stop("the process that started this server is gone")
        elif not self._owns_socket():
            self.begin_stop("the socket was removed or taken over")
        elif (
            self.idle_timeout_s is not None
            and not self.children
            and time.monotonic() - self.last_active >= self.idle_timeout_s
        ):
            self.begin_stop(f"idle for {self.idle_timeout_s:g}s")

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        channel = wire.Channel(conn)
        try:
            conn.settimeout(10.0)  # a client sends its request at once; never let one hold the loop
            uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]
            request = channel.receive() if uid == os.getuid() else None
            if request is None or self.control(request, channel):
                channel.close_fds()
                conn.close()
                return
            refusal = self.refuse(request)
            if refusal is not None:
                channel.close_fds()
                channel.send({"refused": refusal[0], "detail": refusal[1]})
                conn.close()
                return
            before, after, alongside = self.stages_for(request)
            self.load(*before)
            target = self.target(request)
        except (OSError, ValueError, wire.ProtocolError) as exc:
            self.log(f"dropped a request: {type(exc).__name__}: {exc}")
            channel.close_fds()
            conn.close()
            return
        self._fork(conn, channel, request, target)
        self.load_later(*after, alongside=alongside)

    def _fork(self, conn: socket.socket, channel: wire.Channel, request: Mapping[str, Any], target: Target) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:  # out of processes or memory: the client runs the command some other way
            self.log(f"fork failed: {exc}")
            channel.close_fds()
            with contextlib.suppress(OSError):
                channel.send({"refused": "busy", "detail": f"fork failed: {exc}"})
            conn.close()
            return
        if pid == 0:
            self._become_child()
            conn.settimeout(None)
            wire.run_child(channel, dict(request), target)
        channel.close_fds()
        self.served += 1
        self.last_active = time.monotonic()
        try:
            channel.send({"accepted": pid})
        except OSError:
            os.kill(pid, signal.SIGHUP)  # the client is gone already
        conn.settimeout(None)
        self.children[pid] = conn

    def _become_child(self) -> None:
        """Drop what belongs to the server: its socket, lock, wake-up pipe and the other children's connections."""
        signal.set_wakeup_fd(-1)
        if self._listener is not None:
            self._listener.close()
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # else the lock would outlive the server in every running command
        if self._wakeup is not None:
            for fd in self._wakeup:
                os.close(fd)
        for other in self.children.values():
            other.close()

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            if os.WIFSIGNALED(status):
                message = {"signaled": os.WTERMSIG(status)}
            else:
                message = {"exit": os.waitstatus_to_exitcode(status)}
            with contextlib.suppress(OSError):
                wire.Channel(conn).send(message)
            conn.close()
            if not self.children:
                self.last_active = time.monotonic()
