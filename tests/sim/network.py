"""A simulated network: seeded loss, delay, duplication and reordering; partitions and heal.

Links are point to point between replica indexes. Every packet gets its own delay drawn
from the current `NetworkFaults`, so packets overtake each other (reordering); a small
share takes a "slow" path that is much longer. A partition splits the replicas into
groups that cannot reach each other; a packet crossing groups is lost when sent and also
when it would arrive (a connection cut while the packet was in flight).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from tests.sim.clock import EventQueue

DELAY_MS_MAX: Final = 60_000  # no packet, however slow, takes longer than this


@dataclass(frozen=True, slots=True)
class NetworkFaults:
    """Per-packet fault probabilities and delay bounds (uniform in [min, max])."""

    drop_probability: float = 0.0
    duplicate_probability: float = 0.0
    delay_ms_min: int = 1
    delay_ms_max: int = 10
    slow_probability: float = 0.0
    slow_delay_ms_max: int = 0
    # Some message types (a consensus message's TYPE, e.g. "commit") lost more often, and
    # some links (source, target) lossier than others: replicas then know different
    # things (prepared here, committed there), which is what view changes must sort out.
    targeted_types: tuple[str, ...] = ()
    targeted_drop_probability: float = 0.0
    lossy_links: frozenset[tuple[int, int]] = frozenset()
    lossy_link_drop_probability: float = 0.0

    def __post_init__(self) -> None:
        assert 0.0 <= self.drop_probability < 1.0
        assert 0.0 <= self.targeted_drop_probability < 1.0
        assert 0.0 <= self.lossy_link_drop_probability < 1.0
        assert 0.0 <= self.duplicate_probability < 1.0
        assert 0.0 <= self.slow_probability <= 1.0
        assert 0 <= self.delay_ms_min <= self.delay_ms_max <= DELAY_MS_MAX
        assert self.slow_delay_ms_max <= DELAY_MS_MAX


RELIABLE: Final = NetworkFaults()


@dataclass(frozen=True, slots=True)
class Packet:
    """What travels on a link: a consensus message or a transaction relay."""

    source: int
    target: int
    content: object


@dataclass
class NetworkStatistics:
    sent: int = 0
    dropped: int = 0
    duplicated: int = 0
    cut: int = 0  # lost to a partition


@dataclass
class Network:
    """Links between `validator_count` replicas; packets go into the shared event queue."""

    rng: random.Random
    queue: EventQueue
    validator_count: int
    faults: NetworkFaults = RELIABLE
    statistics: NetworkStatistics = field(default_factory=NetworkStatistics)
    # Targeted tests script a fault precisely: packets for which this says True are lost.
    drop_rule: Callable[[int, int, object], bool] | None = None
    _group_of: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._group_of = [0] * self.validator_count

    def set_faults(self, faults: NetworkFaults) -> None:
        self.faults = faults

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Split into `groups`; replicas named in no group form one more group together."""
        self._group_of = [-1] * self.validator_count
        for number, group in enumerate(groups):
            for replica in group:
                self._group_of[replica] = number
        assert all(g >= 0 for g in self._group_of), "every replica is in a group"

    def heal(self) -> None:
        self._group_of = [0] * self.validator_count

    @property
    def partitioned(self) -> bool:
        return len(set(self._group_of)) > 1

    def can_talk(self, source: int, target: int) -> bool:
        return self._group_of[source] == self._group_of[target]

    def send(self, source: int, target: int, content: object) -> None:
        """Queue `content` for `target`, or lose it, as the current faults say."""
        assert source != target
        self.statistics.sent += 1
        if not self.can_talk(source, target):
            self.statistics.cut += 1
            return
        if self.drop_rule is not None and self.drop_rule(source, target, content):
            self.statistics.dropped += 1
            return
        if self.rng.random() < self._drop_probability(source, target, content):
            self.statistics.dropped += 1
            return
        copies = 1
        if self.rng.random() < self.faults.duplicate_probability:
            copies = 2
            self.statistics.duplicated += 1
        packet = Packet(source, target, content)
        for _ in range(copies):
            self.queue.schedule(self._delay_ms(), target, packet)

    def arrives(self, packet: Packet) -> bool:
        """Whether a packet due now still gets through (no partition cut it meanwhile)."""
        if self.can_talk(packet.source, packet.target):
            return True
        self.statistics.cut += 1
        return False

    def _drop_probability(self, source: int, target: int, content: object) -> float:
        faults = self.faults
        probability = faults.drop_probability
        if faults.targeted_types and getattr(content, "TYPE", None) in faults.targeted_types:
            probability = max(probability, faults.targeted_drop_probability)
        if (source, target) in faults.lossy_links:
            probability = max(probability, faults.lossy_link_drop_probability)
        return probability

    def _delay_ms(self) -> int:
        faults = self.faults
        if faults.slow_probability and self.rng.random() < faults.slow_probability:
            return self.rng.randint(
                faults.delay_ms_max, max(faults.slow_delay_ms_max, faults.delay_ms_max)
            )
        return self.rng.randint(faults.delay_ms_min, faults.delay_ms_max)
