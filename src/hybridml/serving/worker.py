"""A variant's worker process: the inference app answering the router's frames on a Unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

import orjson

from hybridml.serving.app import InferenceApp
from hybridml.serving.ipc import read_frame, write_frame

log = logging.getLogger("hybridml.serving.worker")


async def _connection(app: InferenceApp, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            meta, body = await read_frame(reader, app.max_body_bytes)
            method, path, headers, variant = orjson.loads(meta)
            response = await app.handle(method, path, headers, body, variant)
            head = orjson.dumps([response.status, response.content_type.decode(), response.headers])
            await write_frame(writer, head, response.body)
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass  # the router closed the connection (or sent garbage): drop it
    finally:
        writer.close()


async def _serve(app: InferenceApp, socket_path: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    server = await asyncio.start_unix_server(lambda r, w: _connection(app, r, w), path=str(socket_path))
    os.chmod(socket_path, 0o600)  # only this user may talk to the worker
    log.info("worker %s %s ready on %s", app.variant, app.version, socket_path)
    async with server:
        await stop.wait()


def run_worker(app: InferenceApp, socket_path: str | Path) -> None:
    """Serve ``app`` on the Unix socket ``socket_path`` until SIGTERM/SIGINT."""
    import uvloop

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvloop.run(_serve(app, Path(socket_path)))
