"""Run LevelDB's compaction thread at a lower CPU priority than the node itself (Linux).

LevelDB flushes and compacts on one background thread it starts itself. A flush of a
64 MiB write buffer and the compaction behind it is a burst of a second or two of CPU;
while it competes on equal terms with the event loop and the execution thread, blocks
wait and the commit latency's tail grows (docs/performance.md: with four validators on
two cores all four compact in the same second). At a higher nice value compaction still
gets every cycle the node leaves idle and yields only while there is consensus work.
RocksDB offers the same knob (`Env::LowerThreadPoolCPUPriority`); plyvel does not, so
the node finds the thread itself: the threads of this process that Python did not start.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

TASKS_DIR: Final = Path("/proc/self/task")


def foreign_thread_ids() -> set[int]:
    """Native ids of this process's threads that are not Python threads (on Linux: the
    ones LevelDB started); empty where /proc is not available."""
    try:
        tids = {int(name) for name in os.listdir(TASKS_DIR)}
    except OSError:
        return set()
    python = {thread.native_id for thread in threading.enumerate()}
    return tids - python


class BackgroundThreadPriority:
    """Gives foreign threads the nice value `nice`, on each `scan()`.

    A thread is changed only when two scans in a row saw it as foreign: a Python thread
    that is just starting exists natively a moment before `threading` knows its id, and
    must never be slowed by mistake.
    """

    def __init__(self, nice: int) -> None:
        self.nice = nice
        self._seen: set[int] = set()
        self.lowered: set[int] = set()

    def scan(self) -> None:
        foreign = foreign_thread_ids()
        for tid in sorted(foreign & self._seen - self.lowered):
            try:
                if os.getpriority(os.PRIO_PROCESS, tid) < self.nice:
                    os.setpriority(os.PRIO_PROCESS, tid, self.nice)
                    log.info("background thread %d now runs at nice %d", tid, self.nice)
            except OSError:  # it ended between the listing and now
                continue
            self.lowered.add(tid)
        self._seen = foreign
        self.lowered &= foreign
