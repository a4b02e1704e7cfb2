"""`GET /v1/events`: committed blocks and receipts as Server-Sent Events.

The stream subscribes first, then replays from `from_height` out of the store, then
follows live commits, skipping heights already sent: a block committed while the replay
runs is in the store or in the subscription's queue, so nothing falls between the two.
Each block gives one `block` event (`id: <height>`) followed by one `tx` event per
receipt, written together. A subscriber whose queue overflowed has its stream ended; it
reconnects with `Last-Event-ID` (or `from_height`) and misses nothing.
"""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web

from node.api.keys import EVENT_STREAM_TASKS, SERVICES
from node.api.params import parse_integer
from node.block import Receipt
from node.invariants import require
from node.notify import Subscription, block_events
from node.services import NodeServices

KEEPALIVE_INTERVAL_S: Final = 15.0
LAST_EVENT_ID_HEADER: Final = "Last-Event-ID"
SSE_HEADERS: Final = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
KEEPALIVE: Final = b": keepalive\n\n"


def requested_start_height(request: web.Request) -> int | None:
    """`Last-Event-ID` + 1 when reconnecting, else `from_height`, else None (live only).

    Raises:
        ChanceryError: `request.malformed` for a value that is not a height.
    """
    last_event_id = request.headers.get(LAST_EVENT_ID_HEADER)
    if last_event_id is not None:
        return parse_integer(last_event_id, LAST_EVENT_ID_HEADER) + 1
    from_height = request.query.get("from_height")
    if from_height is not None:
        return parse_integer(from_height, "from_height")
    return None


async def _write_stored(response: web.StreamResponse, services: NodeServices, height: int) -> None:
    block = await asyncio.to_thread(services.store.get_block, height)
    require(block is not None, f"block {height} missing below the tip")
    assert block is not None  # for the type checker; `require` has checked it
    receipts = [Receipt.decode(receipt) for receipt in block.receipts]
    await response.write(block_events(block, receipts))


async def _follow(
    response: web.StreamResponse,
    services: NodeServices,
    subscription: Subscription,
    next_height: int,
) -> None:
    """Replay from `next_height`, then follow live commits until the queue overflows."""
    while True:
        while next_height <= services.store.height:
            await _write_stored(response, services, next_height)
            next_height += 1
        if subscription.overflowed:
            return  # fell too far behind: the client reconnects from its last id
        try:
            async with asyncio.timeout(KEEPALIVE_INTERVAL_S):
                event = await subscription.queue.get()
        except TimeoutError:
            await response.write(KEEPALIVE)
            continue
        if event.block.height == next_height:
            await response.write(event.stream_bytes)
            next_height += 1
        # Older heights were sent already; a newer one is replayed from the store above.


async def stream_events(request: web.Request) -> web.StreamResponse:
    """Raises: ChanceryError `request.malformed` (from_height, Last-Event-ID), `node.busy`."""
    services = request.app[SERVICES]
    start_height = requested_start_height(request)
    subscription = services.notifier.subscribe()
    tasks = request.app[EVENT_STREAM_TASKS]
    task = asyncio.current_task()
    if task is not None:
        tasks.add(task)
    try:
        next_height = services.store.height + 1 if start_height is None else start_height
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        await _follow(response, services, subscription, next_height)
        await response.write_eof()
        return response
    finally:
        if task is not None:
            tasks.discard(task)
        services.notifier.unsubscribe(subscription)


async def cancel_event_streams(app: web.Application) -> None:
    """on_shutdown: end every open stream so shutdown does not wait for them."""
    for task in list(app[EVENT_STREAM_TASKS]):
        task.cancel()
