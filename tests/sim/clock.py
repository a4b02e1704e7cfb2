"""Simulated time: one queue of scheduled deliveries, ordered by (time, sequence).

Everything that happens in a simulation (a message arriving, a timer firing, an execution
result coming back, a fault) is an entry in this queue. Ties in time are broken by the
order of scheduling, so a run is a pure function of its seed.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Final

# A node-local hand-off (execution result, batch, pending flag) takes this long: the
# replica never sees the answer to an action inside the same `handle` call.
LOCAL_DELAY_MS: Final = 1

WORLD: Final = -1  # target of entries that belong to the simulation, not to a node


@dataclass(frozen=True, slots=True)
class Scheduled:
    """An entry of the queue: `payload` for `target` at `time_ms`.

    `incarnation` ties an entry to one life of a node: after a crash, entries scheduled for
    the dead replica (its timers, its execution results) are discarded on delivery.
    """

    time_ms: int
    sequence: int
    target: int
    incarnation: int | None
    payload: object


class EventQueue:
    """A min-heap of `Scheduled` entries; `now_ms` is the time of the last popped entry."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Scheduled]] = []
        self._sequence = 0
        self.now_ms = 0

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(
        self, delay_ms: int, target: int, payload: object, incarnation: int | None = None
    ) -> None:
        assert delay_ms >= 0, delay_ms
        self._sequence += 1
        entry = Scheduled(self.now_ms + delay_ms, self._sequence, target, incarnation, payload)
        heapq.heappush(self._heap, (entry.time_ms, entry.sequence, entry))

    def peek_time_ms(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def pop(self) -> Scheduled:
        _, _, entry = heapq.heappop(self._heap)
        assert entry.time_ms >= self.now_ms, "time never runs backwards"
        self.now_ms = entry.time_ms
        return entry
