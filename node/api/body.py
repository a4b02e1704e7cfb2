"""Request bodies: media type first, then size, then the bytes, then decoding.

A body over `body_bytes_max` is refused before it is read in full: by its declared
`Content-Length` without reading any of it, and while streaming when it is chunked.
"""

from __future__ import annotations

import json
from typing import Any, Final

from aiohttp import web

from node.errors import ChanceryError

MSGPACK: Final = "application/msgpack"
JSON: Final = "application/json"
MEDIA_TYPES: Final = (MSGPACK, JSON)


def require_media_type(request: web.Request) -> str:
    """The body's media type, `application/msgpack` or `application/json`.

    Raises:
        ChanceryError: `request.unsupported_media_type` for anything else.
    """
    media_type = request.content_type
    if media_type not in MEDIA_TYPES:
        raise ChanceryError(
            "request.unsupported_media_type",
            f"Content-Type must be {MSGPACK} or {JSON}",
            {"content_type": media_type, "supported": list(MEDIA_TYPES)},
        )
    return media_type


def _too_large(limit_bytes: int) -> ChanceryError:
    return ChanceryError(
        "request.too_large",
        f"request body over {limit_bytes} bytes",
        {"limit_bytes": limit_bytes},
    )


async def read_body(request: web.Request, limit_bytes: int) -> bytes:
    """The whole body, at most `limit_bytes` of it.

    Raises:
        ChanceryError: `request.too_large` when Content-Length or the streamed bytes
            exceed the limit (nothing past the limit is buffered).
    """
    declared = request.content_length
    if declared is not None and declared > limit_bytes:
        raise _too_large(limit_bytes)
    body = bytearray()
    async for chunk in request.content.iter_any():
        if len(body) + len(chunk) > limit_bytes:
            raise _too_large(limit_bytes)
        body.extend(chunk)
    return bytes(body)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def decode_json(body: bytes) -> Any:
    """Strict JSON (UTF-8, no NaN or Infinity).

    Raises:
        ChanceryError: `request.malformed` when the body is not JSON.
    """
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ChanceryError("request.malformed", f"body is not valid JSON: {exc}") from None
