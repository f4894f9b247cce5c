"""Length-prefixed frames between the traffic router and its worker processes over Unix sockets."""

from __future__ import annotations

import asyncio
import struct

_HEAD = struct.Struct("!II")
MAX_META_BYTES = 1 << 20


async def write_frame(writer: asyncio.StreamWriter, meta: bytes, body: bytes) -> None:
    """Send one frame: sizes, JSON metadata, body."""
    writer.write(_HEAD.pack(len(meta), len(body)) + meta + body)
    await writer.drain()


async def read_frame(reader: asyncio.StreamReader, max_body: int) -> tuple[bytes, bytes]:
    """Receive one frame; raises IncompleteReadError at EOF and ValueError for sizes over the limits."""
    meta_len, body_len = _HEAD.unpack(await reader.readexactly(_HEAD.size))
    if meta_len > MAX_META_BYTES or body_len > max_body:
        raise ValueError(f"frame of {meta_len}+{body_len} bytes is over the limit")
    data = await reader.readexactly(meta_len + body_len)
    return data[:meta_len], data[meta_len:]
