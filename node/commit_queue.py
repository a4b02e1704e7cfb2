"""Committed blocks written in order on the commit thread while consensus goes on.

The PBFT driver used to wait for each block's synced write before it handled the next
event, so the execution of height h+1 never started before the fsync of h had returned:
a block's time was execution plus every write, one after the other. With a `CommitQueue`
the driver hands the write to the commit thread and goes on; it executes the next height
(on its own thread) while the disk syncs this one.

What stays the same:
- The commit thread is a single thread, so writes happen in submission order, and a vote
  persisted after a commit was submitted is written after that commit.
- Each block's `then` (tell the mempool, metrics, waiting clients and subscribers) runs
  only after its write returned, so nobody hears of a block before it is on disk, and
  in commit order.
- A failed write is fatal: `on_failure` is called with its exception, and every later
  `drain` raises it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")


class CommitQueue:
    """Writes submitted to one executor thread, followed up in order on the event loop."""

    def __init__(self, executor: Executor, on_failure: Callable[[BaseException], None]) -> None:
        self._executor = executor
        self._on_failure = on_failure
        self._tail: asyncio.Future[None] | None = None
        self.in_flight = 0

    def submit(
        self, write: Callable[[], T], then: Callable[[T], None] | None = None
    ) -> asyncio.Future[None]:
        """Queue `write` on the commit thread now; call `then(result)` once it and every
        earlier submission are done. Must be called from the event loop.

        Returns a future done when `write` and `then` (and everything before) are.
        """
        written = asyncio.get_running_loop().run_in_executor(self._executor, write)
        self.in_flight += 1
        self._tail = asyncio.ensure_future(self._follow_up(self._tail, written, then))
        self._tail.add_done_callback(self._note_failure)
        return self._tail

    @property
    def tail(self) -> asyncio.Future[None] | None:
        """Done when everything submitted so far is (None if nothing ever was)."""
        return self._tail

    async def _follow_up(
        self, previous: asyncio.Future[None] | None, written: asyncio.Future[Any], then: Any
    ) -> None:
        try:
            if previous is not None:
                await previous
            result = await written
            if then is not None:
                then(result)
        finally:
            self.in_flight -= 1

    def _note_failure(self, task: asyncio.Future[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            self._on_failure(error)

    async def drain(self) -> None:
        """Wait until every submitted write and follow-up is done; raises a failure."""
        if self._tail is not None:
            await self._tail
