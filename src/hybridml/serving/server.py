"""Run ASGI apps with uvicorn (httptools parser, uvloop): the inference listener and an optional control listener.

Both listeners share one process and one event loop, so control calls act on the very state that routes
requests, and the inference listener is the same uvicorn server it would be alone (no added hop or check on
the hot path). SIGTERM/SIGINT stop both cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hybridml.errors import InvalidInputError


@dataclass(frozen=True)
class Listener:
    """Where an app listens: TCP ``host:port``, or the Unix socket ``socket_path``."""

    host: str = "127.0.0.1"
    port: int = 8080
    socket_path: str | None = None

    def describe(self) -> str:
        """``unix:///path`` or ``http://host:port``."""
        if self.socket_path is not None:
            return f"unix://{self.socket_path}"
        return f"http://{_url_host(self.host)}:{self.port}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def bind(listener: Listener) -> socket.socket:
    """Bind ``listener``'s socket now, so a taken port or path fails before anything starts.

    A Unix socket is created with mode 0600 (only this user may connect): uvicorn's own ``uds`` option makes it
    0666, which would let any local user drive the server.

    Raises:
        InvalidInputError: the address cannot be bound (in use, not local, no permission).
    """
    if listener.socket_path is not None:
        path = Path(listener.socket_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if path.is_socket():
            path.unlink()  # left by an earlier run
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        except OSError as exc:
            sock.close()
            raise InvalidInputError(f"cannot listen on {listener.describe()}: {exc.strerror or exc}") from None
        finally:
            os.umask(old)
        return sock
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listener.host, listener.port))
    except OSError as exc:
        sock.close()
        raise InvalidInputError(f"cannot listen on {listener.describe()}: {exc.strerror or exc}") from None
    return sock


def run(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_level: str = "warning",
    lifespan: Literal["on", "off"] = "off",
    loop: Literal["uvloop", "asyncio"] = "uvloop",
    control: tuple[Any, socket.socket] | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` (and ``control``'s app on its bound socket) until SIGTERM/SIGINT.

    Args:
        app: an ASGI application.
        host: listening address (loopback by default: exposing a model is a decision, not a default).
        port: TCP port.
        log_level: uvicorn's log level; access logs stay off (they cost more than a prediction).
        lifespan: ``on`` for apps with background tasks (the router's worker monitor).
        loop: event loop. ``asyncio`` for an app whose requests never wait (no micro-batching): when every
            request runs to completion in one step, uvloop under saturation answers some connections hundreds
            of milliseconds late (p99 ~450 ms at 64 connections), the standard loop keeps them in turn (~26 ms)
            at the same throughput. uvloop is faster for everything else.
        control: the control app and its socket from :func:`bind` (None: no control listener).
    """
    import uvicorn  # imported here so that importing hybridml.serving stays cheap

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    common: dict[str, Any] = {
        "http": "httptools",
        "loop": loop,
        "access_log": False,
        # Off: nothing may rewrite the client address. The control and /feedback checks trust the TCP peer,
        # and the middleware would cost time on every request.
        "proxy_headers": False,
        "log_level": log_level,
        "server_header": False,
        "date_header": False,
        "timeout_keep_alive": 30,
    }
    main = uvicorn.Config(app, host=host, port=port, lifespan=lifespan, **common)
    servers: list[tuple[Any, list[socket.socket] | None]] = []
    if control is not None:
        control_app, sock = control
        servers.append((_quiet_server(uvicorn.Config(control_app, lifespan="off", **common)), [sock]))
    servers.append((_quiet_server(main), None))
    with asyncio.Runner(loop_factory=main.get_loop_factory()) as runner:
        runner.run(_serve_all(servers))


async def _serve_all(servers: list[tuple[Any, list[socket.socket] | None]]) -> None:
    """Serve every server until SIGTERM/SIGINT, which stops them all (the first one starts first)."""
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server, _ in servers:
            server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    tasks = []
    for server, sockets in servers:
        tasks.append(asyncio.create_task(server.serve(sockets=sockets)))
        while not server.started and not tasks[-1].done():
            await asyncio.sleep(0.005)
    try:
        await asyncio.gather(*tasks)
    finally:
        stop()


def _quiet_server(config: Any) -> Any:
    """A uvicorn server that leaves signals to :func:`_serve_all`: one handler must stop every listener (uvicorn's
    own would stop only the last server and re-raise the signal, ending the process before the others shut down)."""
    import uvicorn

    class QuietServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return QuietServer(config)
