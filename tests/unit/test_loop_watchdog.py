"""The loop watchdog names where a stuck event loop is stuck, once per stall."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from node.loop_watchdog import LoopWatchdog

STALL_S = 0.2
# Long enough past STALL_S that a loaded machine still sees the stall (and its end).
BLOCKED_S = 1.5
SETTLE_S = 0.5
THREAD_END_WAIT_S = 5.0


def hold_the_loop_without_yielding() -> None:
    time.sleep(BLOCKED_S)


async def test_a_blocked_loop_is_reported_once_with_its_stack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stalls: list[None] = []
    watchdog = LoopWatchdog(STALL_S, on_stall=lambda: stalls.append(None))
    caplog.set_level(logging.WARNING, logger="node.loop_watchdog")
    watching = asyncio.ensure_future(watchdog.run())
    await asyncio.sleep(STALL_S)
    hold_the_loop_without_yielding()
    await asyncio.sleep(SETTLE_S)
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)

    assert len(stalls) == 1
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("event loop has not turned for")
    assert "hold_the_loop_without_yielding" in messages[0]
    assert messages[1].startswith("event loop turns again after")


async def test_a_loop_that_keeps_turning_is_not_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stalls: list[None] = []
    watchdog = LoopWatchdog(STALL_S, on_stall=lambda: stalls.append(None))
    caplog.set_level(logging.WARNING, logger="node.loop_watchdog")
    watching = asyncio.ensure_future(watchdog.run())
    # Busy, but yielding between short pieces of work, as a healthy node is.
    deadline = time.monotonic() + BLOCKED_S
    while time.monotonic() < deadline:
        time.sleep(STALL_S / 10)
        await asyncio.sleep(0)
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    assert stalls == []
    assert caplog.records == []


async def test_the_watch_thread_ends_with_the_watchdog() -> None:
    watching = asyncio.ensure_future(LoopWatchdog(STALL_S).run())
    await asyncio.sleep(0)
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    await asyncio.sleep(STALL_S)  # one check interval for the thread to see the stop
    assert "loop-watchdog" not in {thread.name for thread in threading.enumerate()}
