"""Typed keys for what the API keeps on the application and on each request."""

from __future__ import annotations

import asyncio

from aiohttp import web

from contracts.runtime import Reader
from node.services import NodeServices

SERVICES = web.AppKey("services", NodeServices)
# Event-stream handler tasks, cancelled on shutdown so a stream never delays it.
EVENT_STREAM_TASKS = web.AppKey("event_stream_tasks", set[asyncio.Task[None]])
# The OpenAPI document, rendered once when the app is built.
OPENAPI_DOCUMENT = web.AppKey("openapi_document", bytes)
# Who signed a read request (`read_access = "members"`); absent when reads are open.
READER = web.RequestKey("reader", Reader)
