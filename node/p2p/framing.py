"""Frames on a validator-to-validator TCP stream: a 4-byte length, then one msgpack map.

```
frame = length: uint32 big-endian (bytes of body, 1 .. frame_bytes_max)
        body:   msgpack map with a str "type" (use_bin_type; str keys; no floats, no ext)
```

Frames themselves are neither hashed nor signed, so their maps need not be canonical; what
matters inside them (consensus votes, transactions, certificates) carries its own
signature. The reader refuses a length over the limit before reading a byte of the body,
so a peer cannot make the node buffer more than `frame_bytes_max`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import msgpack

from node.encoding import EncodingError, unpackb_strict

FRAME_LENGTH_BYTES: Final = 4
# The length prefix is a uint32, so no configured limit can exceed it.
FRAME_BYTES_LIMIT: Final = 2**32 - 1
# Bodies at least this big are decoded on a worker thread: a multi-megabyte block response
# would otherwise hold the event loop (and every consensus timer) for tens of milliseconds.
FRAME_DECODE_IN_THREAD_BYTES_MIN: Final = 256 * 1024


class FrameError(Exception):
    """A frame this node will not accept (or cannot send); the connection is closed.

    `reason` is a stable label for metrics: `oversized`, `undecodable`, `malformed`,
    `unencodable`.
    """

    code = "p2p.bad_frame"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def encode_frame(message: dict[str, Any], frame_bytes_max: int) -> bytes:
    """Length prefix and msgpack body of `message`, ready to write.

    Raises:
        FrameError: `unencodable` (a type msgpack refuses) or `oversized` (over the limit).
    """
    if not isinstance(message.get("type"), str):
        raise FrameError("malformed", "a frame is a map with a str 'type'")
    try:
        body = msgpack.packb(message, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise FrameError("unencodable", f"cannot encode {message['type']!r}: {exc}") from None
    if len(body) > frame_bytes_max:
        raise FrameError(
            "oversized", f"{message['type']!r} frame is {len(body)} bytes, over {frame_bytes_max}"
        )
    return len(body).to_bytes(FRAME_LENGTH_BYTES, "big") + body


def decode_body(body: bytes) -> dict[str, Any]:
    """Strictly decode a frame body (see `node.encoding.unpackb_strict`).

    Raises:
        FrameError: `undecodable` bytes, or `malformed` when not a map with a str "type".
    """
    try:
        message = unpackb_strict(body)
    except EncodingError as exc:
        raise FrameError("undecodable", f"frame body: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise FrameError("malformed", "a frame is a map with a str 'type'")
    return message


async def read_frame(reader: asyncio.StreamReader, frame_bytes_max: int) -> dict[str, Any]:
    """Read one frame; the length is checked before the body is read.

    Raises:
        FrameError: length 0 or over `frame_bytes_max`, or a body that does not decode.
        asyncio.IncompleteReadError: the stream ended (cleanly or mid-frame).
    """
    prefix = await reader.readexactly(FRAME_LENGTH_BYTES)
    length = int.from_bytes(prefix, "big")
    if length > frame_bytes_max:
        raise FrameError("oversized", f"frame of {length} bytes, over {frame_bytes_max}")
    if length == 0:
        raise FrameError("undecodable", "empty frame")
    body = await reader.readexactly(length)
    if length >= FRAME_DECODE_IN_THREAD_BYTES_MIN:
        return await asyncio.to_thread(decode_body, body)
    return decode_body(body)


async def write_frame(
    writer: asyncio.StreamWriter, message: dict[str, Any], frame_bytes_max: int
) -> None:
    """Encode, write and drain one frame (the handshake's path; the transport batches).

    Raises:
        FrameError: the message cannot be encoded within the limit.
        ConnectionError: the stream is closed.
    """
    writer.write(encode_frame(message, frame_bytes_max))
    await writer.drain()
