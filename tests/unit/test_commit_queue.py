"""CommitQueue: writes in submission order, follow-ups in order after their writes, and a
failed write reported and never followed up."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from node.commit_queue import CommitQueue


async def test_writes_and_follow_ups_keep_submission_order() -> None:
    events: list[str] = []
    lock = threading.Lock()
    failures: list[BaseException] = []

    def write(name: str, pause_s: float) -> str:
        time.sleep(pause_s)
        with lock:
            events.append(f"write {name}")
        return name

    with ThreadPoolExecutor(max_workers=1) as thread:
        queue = CommitQueue(thread, failures.append)
        # The first write is the slowest: a follow-up must still wait for it.
        for name, pause in (("a", 0.05), ("b", 0.0), ("c", 0.01)):
            queue.submit(
                lambda name=name, pause=pause: write(name, pause),
                lambda result: events.append(f"then {result}"),
            )
        assert queue.in_flight == 3
        await queue.drain()
    assert queue.in_flight == 0
    assert failures == []
    assert [e for e in events if e.startswith("write")] == ["write a", "write b", "write c"]
    assert [e for e in events if e.startswith("then")] == ["then a", "then b", "then c"]
    for name in "abc":
        assert events.index(f"write {name}") < events.index(f"then {name}")


async def test_a_failed_write_is_reported_and_nothing_after_it_is_followed_up() -> None:
    followed: list[str] = []
    failures: list[BaseException] = []

    def broken() -> str:
        raise OSError("disk gone")

    with ThreadPoolExecutor(max_workers=1) as thread:
        queue = CommitQueue(thread, failures.append)
        queue.submit(lambda: "a", followed.append)
        queue.submit(broken, followed.append)
        queue.submit(lambda: "c", followed.append)
        with pytest.raises(OSError, match="disk gone"):
            await queue.drain()
    assert followed == ["a"]
    assert failures and isinstance(failures[0], OSError)
