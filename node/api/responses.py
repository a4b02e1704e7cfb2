"""JSON responses: bytes anywhere in the value are written as lowercase hex."""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiohttp import web

from node.block import to_json_value


def dumps(value: Any) -> str:
    return json.dumps(to_json_value(value), separators=(",", ":"))


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=dumps)


def json_ready_response(value: Any, status: int = 200) -> web.Response:
    """A response for a value that holds no bytes already (no hex walk): the batch route's
    thousands of results, written by orjson (a per-transaction cost)."""
    return web.Response(
        body=orjson.dumps(value), status=status, content_type="application/json", charset="utf-8"
    )
