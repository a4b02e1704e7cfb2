"""The loop watchdog names where a stuck event loop is stuck, once per stall."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable

import pytest

from node.loop_watchdog import LoopWatchdog

STALL_S = 0.2
# Long enough past STALL_S that a loaded machine still sees the stall (and its end).
BLOCKED_S = 1.5
SETTLE_S = 0.5
THREAD_END_WAIT_S = 5.0


def hold_the_loop_without_yielding() -> None:
    time.sleep(BLOCKED_S)


async def watched(
    behaviour: Callable[[], Awaitable[None]], caplog: pytest.LogCaptureFixture
) -> tuple[int, list[str]]:
    """Run `behaviour` on a watched loop: the stalls counted and the messages logged."""
    stalls: list[None] = []
    watchdog = LoopWatchdog(STALL_S, on_stall=lambda: stalls.append(None))
    caplog.set_level(logging.WARNING, logger="node.loop_watchdog")
    watching = asyncio.ensure_future(watchdog.run())
    await behaviour()
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    return len(stalls), [record.getMessage() for record in caplog.records]


async def test_a_blocked_loop_is_reported_once_with_its_stack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def block_once() -> None:
        await asyncio.sleep(STALL_S)
        hold_the_loop_without_yielding()
        await asyncio.sleep(SETTLE_S)

    stalls, messages = await watched(block_once, caplog)
    assert stalls == 1
    assert len(messages) == 2, messages
    assert messages[0].startswith("event loop has not turned for")
    assert "hold_the_loop_without_yielding" in messages[0]
    assert messages[1].startswith("event loop turns again after")


async def test_a_loop_that_keeps_turning_is_not_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def busy_but_yielding() -> None:
        # Short pieces of work with a loop turn between them, as a healthy node's.
        deadline = time.monotonic() + BLOCKED_S
        while time.monotonic() < deadline:
            time.sleep(STALL_S / 10)
            await asyncio.sleep(0)

    assert await watched(busy_but_yielding, caplog) == (0, [])


async def test_the_watch_thread_ends_with_the_watchdog() -> None:
    watching = asyncio.ensure_future(LoopWatchdog(STALL_S).run())
    await asyncio.sleep(0)
    assert "loop-watchdog" in {thread.name for thread in threading.enumerate()}
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    deadline = time.monotonic() + THREAD_END_WAIT_S
    while "loop-watchdog" in {thread.name for thread in threading.enumerate()}:
        assert time.monotonic() < deadline, "the watch thread outlived its watchdog"
        await asyncio.sleep(0.01)
