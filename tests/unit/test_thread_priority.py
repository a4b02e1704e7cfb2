"""LevelDB's compaction thread is found and lowered in priority; Python's threads never are."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import plyvel
import pytest

from node.thread_priority import BackgroundThreadPriority, foreign_thread_ids

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")

FLUSH_WAIT_S = 10.0


def _start_leveldb_background_thread(path: Path) -> set[int]:
    """Write past a tiny write buffer so LevelDB flushes; its thread then exists."""
    db = plyvel.DB(str(path), create_if_missing=True, write_buffer_size=64 * 1024)
    try:
        deadline = time.monotonic() + FLUSH_WAIT_S
        n = 0
        while not foreign_thread_ids() and time.monotonic() < deadline:
            with db.write_batch() as batch:
                for _ in range(1000):
                    batch.put(n.to_bytes(8, "big"), os.urandom(100))
                    n += 1
    finally:
        db.close()
    return foreign_thread_ids()


def test_the_compaction_thread_is_lowered_on_the_second_sighting(tmp_path: Path) -> None:
    foreign = _start_leveldb_background_thread(tmp_path / "db")
    assert foreign, "LevelDB started no thread of its own"
    python_ids = {thread.native_id for thread in threading.enumerate()}
    assert not foreign & python_ids
    priority = BackgroundThreadPriority(nice=12)
    priority.scan()  # first sighting: nothing changes yet
    assert priority.lowered == set()
    priority.scan()
    assert priority.lowered == foreign
    for tid in foreign:
        assert os.getpriority(os.PRIO_PROCESS, tid) >= 12
    # The interpreter's own threads keep their priority.
    assert os.getpriority(os.PRIO_PROCESS, threading.main_thread().native_id) < 12


def test_a_python_thread_is_never_taken_for_a_foreign_one() -> None:
    ready, done = threading.Event(), threading.Event()
    worker = threading.Thread(target=lambda: (ready.set(), done.wait(5)))
    worker.start()
    try:
        ready.wait(5)
        assert worker.native_id not in foreign_thread_ids()
        priority = BackgroundThreadPriority(nice=12)
        priority.scan()
        priority.scan()
        assert worker.native_id not in priority.lowered
    finally:
        done.set()
        worker.join()
