"""How a command is handed to a warm server over a Unix socket and run in a forked child (stdlib only).

The launcher side (``run_request``, ``call``) is imported by every `hybridml` command and by kfp.local's step
launcher, so this module imports nothing beyond the standard library. One connection carries one request;
each message is a 4-byte big-endian length followed by a JSON object:

- client → server: the request, with the client's stdin, stdout and stderr attached (``SCM_RIGHTS``), so the
  child writes to the very terminal, pipe or file the client has (rich sees the TTY, colours stay right);
- server → client: ``{"accepted": PID}`` once it has forked the child, or ``{"refused": REASON, "detail": TEXT}``;
- client → child: ``{"signal": N}`` for each signal the client receives (Ctrl-C stops the command);
- server → client: ``{"exit": CODE}`` or ``{"signaled": N}`` once the child has ended (the server reaps it, so a
  child killed outright is still reported).

A child that sees the client's end close without a word (the client was killed) hangs up its process group,
as a closed terminal would.
"""

from __future__ import annotations

import array
import atexit
import contextlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

HEADER = struct.Struct(">I")
MAX_MESSAGE = 16 << 20  # a request carries the whole environment; anything bigger is not ours
STDIO = (0, 1, 2)
# What a terminal or a supervisor sends to a foreground command; each is relayed to the child's process group.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


class ProtocolError(Exception):
    """The peer sent something that is not a message of this protocol."""


class Refused(Exception):  # noqa: N818 - a refusal is an answer, not an error of ours
    """The server will not run the request (``reason`` is machine-readable, e.g. ``stale``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Channel:
    """Length-prefixed JSON messages over a connected Unix stream socket, with file descriptors alongside."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self.fds: list[int] = []  # received with the messages; the receiver owns (and closes) them

    def send(self, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
        """Send one message; ``fds`` travel with its first byte."""
        body = json.dumps(message).encode()
        data = HEADER.pack(len(body)) + body
        if not fds:
            self.sock.sendall(data)
            return
        sent = self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        if sent < len(data):
            self.sock.sendall(data[sent:])

    def receive(self) -> dict[str, Any] | None:
        """The next message, or None when the peer closed the connection between messages."""
        while True:
            if len(self._buffer) >= HEADER.size:
                (size,) = HEADER.unpack_from(self._buffer)
                if size > MAX_MESSAGE:
                    raise ProtocolError(f"message of {size} bytes exceeds {MAX_MESSAGE}")
                if len(self._buffer) >= HEADER.size + size:
                    body = bytes(self._buffer[HEADER.size : HEADER.size + size])
                    del self._buffer[: HEADER.size + size]
                    message = json.loads(body)
                    if not isinstance(message, dict):
                        raise ProtocolError("a message must be a JSON object")
                    return message
            data, ancillary, flags, _ = self.sock.recvmsg(1 << 16, socket.CMSG_SPACE(len(STDIO) * 4))
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                    self.fds.extend(fds)
            if flags & socket.MSG_CTRUNC:
                raise ProtocolError("more file descriptors than a request may carry")
            if not data:
                if self._buffer:
                    raise ProtocolError("connection closed inside a message")
                return None
            self._buffer += data

    def close_fds(self) -> None:
        """Close descriptors received and not taken."""
        while self.fds:
            with contextlib.suppress(OSError):
                os.close(self.fds.pop())


# ------------------------------------------------------------------------------------------------- client side


def connect(path: str) -> socket.socket | None:
    """A connection to the server listening at ``path``, or None when nothing listens there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
        sock.close()
        return None
    return sock


def stdio() -> list[list[str | None]]:
    """Encoding and error handler of this process's stdin, stdout and stderr, for the child to take on."""
    streams = (sys.stdin, sys.stdout, sys.stderr)
    return [[getattr(s, "encoding", None), getattr(s, "errors", None)] for s in streams]


def run_request(channel: Channel, request: dict[str, Any], fds: Sequence[int] = STDIO) -> tuple[int, int | None]:
    """Send ``request`` with ``fds``, relay this process's signals to the child, and wait for it to end.

    Returns (exit code, signal that killed the child or None); a child killed by signal N is reported as exit
    code 128+N, the shell's convention. Signals that arrive before the request is fully sent are relayed
    right after it (the child reads them first thing), never in the middle of it.

    Raises:
        Refused: the server will not run it (the command did not start).
        OSError, ValueError, ProtocolError: the connection failed before the server accepted (the command did
            not start; ``ConnectionError`` when the server closed it without answering).
    """
    received: list[int] = []
    sent = False

    def relay(signum: int, _frame: object) -> None:
        received.append(signum)
        if sent:
            with contextlib.suppress(OSError):
                channel.send({"signal": signum})

    previous = {sig: signal.signal(sig, relay) for sig in FORWARDED}
    accepted = False
    try:
        channel.send(request, fds)
        sent = True
        for signum in received:
            with contextlib.suppress(OSError):
                channel.send({"signal": signum})
        reply = channel.receive()
        if reply is None:
            raise ConnectionError("the server closed the connection before answering")
        if "refused" in reply:
            raise Refused(str(reply["refused"]), str(reply.get("detail", "")))
        accepted = True
        while True:
            try:
                message = channel.receive()
            except (OSError, ValueError, ProtocolError):
                message = None  # the command ran (or runs): never report "did not start" from here on
            if message is None:
                return 1, None  # the server died without a word; a shell would see a failure
            if "exit" in message:
                return int(message["exit"]), None
            if "signaled" in message:
                return 128 + int(message["signaled"]), int(message["signaled"])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received and not accepted:  # nobody ran the command: take the signal as this process would have
            os.kill(os.getpid(), received[0])


def call(path: str, request: dict[str, Any], fds: Sequence[int] = STDIO) -> tuple[int, int | None] | None:
    """Run ``request`` on the server at ``path`` and wait for it; None when none listens or it refuses
    (then the request did not run, and the caller may run it some other way).
    """
    sock = connect(path)
    if sock is None:
        return None
    try:
        return run_request(Channel(sock), request, fds)
    except (Refused, OSError, ValueError, ProtocolError):
        return None
    finally:
        sock.close()


def exit_like(code: int, signaled: int | None) -> NoReturn:
    """End this process as the child ended: with its exit code, or killed by the same signal."""
    sys.stdout.flush()
    sys.stderr.flush()
    if signaled is not None and signaled in FORWARDED:
        signal.signal(signaled, signal.SIG_DFL)
        os.kill(os.getpid(), signaled)
    sys.exit(code)


# -------------------------------------------------------------------------------------------------- child side


def run_child(channel: Channel, request: dict[str, Any], target: Callable[[], object]) -> NoReturn:
    """In a freshly forked child: become the client's process, run ``target``, and exit with its status.

    Takes the received descriptors as stdin/stdout/stderr, the client's working directory and its complete
    environment (nothing the server or an earlier command set survives), relays the client's signals to its
    own process group, and exits like an interpreter would (atexit handlers run, non-daemon threads joined).
    """
    code = 1
    try:
        os.setpgid(0, 0)  # a group of its own, so a relayed Ctrl-C reaches the command's subprocesses too
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target_fd, fd in zip(STDIO, channel.fds, strict=False):
            os.dup2(fd, target_fd)
        channel.close_fds()
        _take_stdio(request.get("stdio"))
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in dict(request.get("env") or {}).items()})
        os.chdir(str(request["cwd"]))
        threading.Thread(target=_relay, args=(channel,), name="hybridml-relay", daemon=True).start()
        code = _call(target)
        _join_threads()
        atexit._run_exitfuncs()  # e.g. MLflow flushing what it logs asynchronously
        if code < 0:  # die by that signal, as the interpreter does after an uncaught KeyboardInterrupt
            sys.stdout.flush()
            sys.stderr.flush()
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
            code = 128 - code
    except BaseException:  # report like an interpreter; never fall back into the server loop
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code)  # a forked child must not finalise the server's modules


def _join_threads() -> None:
    """Wait for non-daemon threads the way the interpreter does at exit (``threading._shutdown``).

    Its exit hooks run first: they tell idle ``ThreadPoolExecutor`` workers (MLflow's artifact downloads leave
    such workers behind) to stop. Joining those threads without the hooks would wait forever.
    """
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        with contextlib.suppress(AssertionError, RuntimeError):  # not the thread that forked: join by hand below
            shutdown()
            return
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()


def _call(target: Callable[[], object]) -> int:
    """Run ``target`` as an interpreter runs a program: its exit code, or minus the signal to die by."""
    try:
        target()
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code & 0xFF
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()  # like the interpreter, which then dies by SIGINT (the caller sees an interrupt)
        return -signal.SIGINT
    except BaseException:  # an uncaught error ends a Python process with a traceback and 1
        traceback.print_exc()
        return 1
    return 0


def _take_stdio(config: object) -> None:
    """Rebuffer the inherited std streams for their new descriptors (line-buffered on a TTY, as at start-up)."""
    streams = (sys.stdin, sys.stdout, sys.stderr)
    settings = config if isinstance(config, list) and len(config) == len(streams) else [[None, None]] * 3
    for fd, stream, (encoding, errors) in zip(STDIO, streams, settings, strict=True):
        if stream is None:
            continue
        options: dict[str, Any] = {}
        if encoding and errors:
            options = {"encoding": encoding, "errors": errors}
        if fd:
            options["line_buffering"] = fd == 2 or os.isatty(fd)
        with contextlib.suppress(Exception):
            stream.reconfigure(**options)  # type: ignore[union-attr]


def _relay(channel: Channel) -> None:
    """Deliver the client's signals to this child's process group; hang up if the client goes away."""
    while True:
        try:
            message = channel.receive()
        except (OSError, ValueError, ProtocolError):
            message = None
        if message is None:
            _signal_group(signal.SIGHUP)
            return
        signum = message.get("signal")
        if isinstance(signum, int) and signum in FORWARDED:
            _signal_group(signum)


def _signal_group(signum: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(os.getpgrp(), signum)
