"""Reports an event loop that stops turning, with where it is stuck.

Everything a node does for the outside (HTTP answers, peer messages, consensus, even the
SIGTERM handler) runs on one asyncio loop. Code that holds that loop without yielding (a
busy wait, a blocking call) makes the node silent, and from outside a silent node looks
like a slow network: the one clue is the stack of the loop's thread at that moment. So a
task on the loop beats, a thread of its own watches the beats, and when they stop for
`stall_s` it logs the loop thread's stack once, counts the stall, and logs again when the
loop turns again. `faulthandler` on SIGUSR1 (node/runner.py) gives every thread's stack
on demand as well.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Final

log = logging.getLogger(__name__)

# Beats and checks per stall interval: a stall is seen within a quarter of `stall_s` late.
CHECKS_PER_STALL: Final = 4


class LoopWatchdog:
    """Watches the event loop that `run()` runs on from a daemon thread.

    `on_stall` is called (on the watchdog thread) once per stall, as it is first seen.
    """

    def __init__(self, stall_s: float, on_stall: Callable[[], None] | None = None) -> None:
        self.stall_s = stall_s
        self._interval_s = stall_s / CHECKS_PER_STALL
        self._on_stall = on_stall
        self._last_beat = time.monotonic()
        self._loop_thread_id: int | None = None
        self._stopped = threading.Event()

    async def run(self) -> None:
        """Beat on the loop and watch from a thread until cancelled."""
        self._loop_thread_id = threading.get_ident()
        self._last_beat = time.monotonic()
        watcher = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        watcher.start()
        try:
            while True:
                self._last_beat = time.monotonic()
                await asyncio.sleep(self._interval_s)
        finally:
            self._stopped.set()

    def _watch(self) -> None:
        stalled_since: float | None = None
        while not self._stopped.wait(self._interval_s):
            last_beat = self._last_beat
            silent_s = time.monotonic() - last_beat
            if stalled_since is None and silent_s > self.stall_s:
                stalled_since = last_beat
                log.warning(
                    "event loop has not turned for %.1f s; its thread is at:\n%s",
                    silent_s,
                    self.loop_stack(),
                )
                if self._on_stall is not None:
                    self._on_stall()
            elif stalled_since is not None and last_beat > stalled_since:
                log.warning("event loop turns again after %.1f s", last_beat - stalled_since)
                stalled_since = None

    def loop_stack(self) -> str:
        """The loop thread's current stack, innermost call last ("" if not running)."""
        frame = sys._current_frames().get(self._loop_thread_id or -1)
        return "" if frame is None else "".join(traceback.format_stack(frame)).rstrip()
