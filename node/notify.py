"""Telling the world about committed blocks: `wait=commit` waiters and SSE subscribers.

Only called after a block is synced to disk. Every structure here is bounded: waiters by
`commit_waiters_max`, subscribers by `sse_subscribers_max`, each subscriber's queue by
`sse_queue_events_max`. A subscriber that falls behind is cut off rather than buffered
without end; it reconnects with `from_height` and misses nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from node.block import CommittedBlock, Receipt, to_json_value
from node.errors import ChanceryError


@dataclass(frozen=True, slots=True)
class CommittedTx:
    """Where a transaction was committed, and its receipt."""

    tx_id: bytes
    height: int
    index: int
    receipt: Receipt


@dataclass(frozen=True)
class BlockEvent:
    """One committed block and its receipts, as published to subscribers."""

    block: CommittedBlock
    receipts: tuple[Receipt, ...]

    @cached_property
    def stream_bytes(self) -> bytes:
        """The block's `text/event-stream` events, encoded once for every subscriber."""
        return block_events(self.block, self.receipts)


class Subscription:
    """One SSE subscriber's bounded queue; `overflowed` once it fell too far behind."""

    def __init__(self, queue_events_max: int) -> None:
        self.queue: asyncio.Queue[BlockEvent] = asyncio.Queue(maxsize=queue_events_max)
        self.overflowed = False


class CommitNotifier:
    """Resolves `wait=commit` futures and feeds event subscribers, after each commit."""

    def __init__(self, waiters_max: int, subscribers_max: int, queue_events_max: int) -> None:
        self.waiters_max = waiters_max
        self.subscribers_max = subscribers_max
        self.queue_events_max = queue_events_max
        self._waiters: dict[bytes, list[asyncio.Future[CommittedTx]]] = {}
        self._waiter_count = 0
        self._subscriptions: set[Subscription] = set()

    @property
    def waiter_count(self) -> int:
        return self._waiter_count

    def add_waiter(self, tx_id: bytes) -> asyncio.Future[CommittedTx]:
        """A future resolved when `tx_id` commits.

        Raises:
            ChanceryError: `node.busy` when `waiters_max` requests are waiting already.
        """
        if self._waiter_count >= self.waiters_max:
            raise ChanceryError(
                "node.busy", "too many requests are waiting for commits", {"retry_after_s": 1}
            )
        future: asyncio.Future[CommittedTx] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(tx_id, []).append(future)
        self._waiter_count += 1
        return future

    def remove_waiter(self, tx_id: bytes, future: asyncio.Future[CommittedTx]) -> None:
        futures = self._waiters.get(tx_id)
        if futures is None or future not in futures:
            return
        futures.remove(future)
        self._waiter_count -= 1
        if not futures:
            del self._waiters[tx_id]

    def subscribe(self) -> Subscription:
        """Raises: ChanceryError `node.busy` at `subscribers_max` subscribers."""
        if len(self._subscriptions) >= self.subscribers_max:
            raise ChanceryError("node.busy", "too many event subscribers", {"retry_after_s": 1})
        subscription = Subscription(self.queue_events_max)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def publish(self, block: CommittedBlock, receipts: tuple[Receipt, ...]) -> None:
        """Announce a block that is already durable on disk."""
        for index, (tx_id, receipt) in enumerate(zip(block.tx_ids, receipts, strict=True)):
            for future in self._waiters.pop(tx_id, ()):
                self._waiter_count -= 1
                if not future.done():
                    future.set_result(CommittedTx(tx_id, block.height, index, receipt))
        event = BlockEvent(block, receipts)
        for subscription in list(self._subscriptions):
            try:
                subscription.queue.put_nowait(event)
            except asyncio.QueueFull:
                subscription.overflowed = True
                self._subscriptions.discard(subscription)

    def close(self) -> None:
        """Fail every waiter: the node is shutting down."""
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.set_exception(ChanceryError("node.unavailable", "node is shutting down"))
        self._waiters.clear()
        self._waiter_count = 0


def sse_event(name: str, data: Any, event_id: int | None = None) -> str:
    """One event in `text/event-stream` form (JSON data holds no newline)."""
    lines = [f"event: {name}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


def block_events(block: CommittedBlock, receipts: Sequence[Receipt]) -> bytes:
    """The `block` event of `block`, then one `tx` event per receipt (API.md)."""
    parts = [sse_event("block", block_event_json(block), block.height)]
    parts.extend(sse_event("tx", tx_event_json(block.height, r)) for r in receipts)
    return "".join(parts).encode()


def block_event_json(block: CommittedBlock) -> dict[str, Any]:
    return {
        "height": block.height,
        "hash": block.block_hash.hex(),
        "tx_ids": [tx_id.hex() for tx_id in block.tx_ids],
    }


def tx_event_json(height: int, receipt: Receipt) -> dict[str, Any]:
    return {
        "tx_id": receipt.tx_id.hex(),
        "height": height,
        "ok": receipt.ok,
        "error": receipt.error,
        "events": [{"name": e.name, "data": to_json_value(e.data)} for e in receipt.events],
    }
