"""What one simulated run does: its replicas, faults, Byzantine replicas and workload.

A `Scenario` is plain data. The seeded sweep draws one from the seed with
`random_scenario`; targeted tests write one by hand. Either way, `Simulation` turns it into
a run whose every random choice comes from one `random.Random`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from tests.sim.byzantine import ACTIVE_BEHAVIOURS, Behaviour
from tests.sim.checker import LIVENESS_MS_MAX
from tests.sim.network import RELIABLE, NetworkFaults

SAFETY_PHASE_MS_MIN: Final = 5_000
SAFETY_PHASE_MS_MAX: Final = 40_000
TXS_MIN: Final = 20
TXS_MAX: Final = 40
TXS_AFTER_HEAL_MAX: Final = 4  # of those, submitted once the faults have healed
DROP_PROBABILITY_MAX: Final = 0.2
DUPLICATE_PROBABILITY_MAX: Final = 0.05
SLOW_PROBABILITY_MAX: Final = 0.05
SLOW_DELAY_MS_MAX: Final = 3_000
EPISODES_MAX: Final = 5  # crashes, and separately partitions, per safety phase
EPISODE_MS_MIN: Final = 300
EPISODE_MS_MAX: Final = 15_000
TARGETED_TYPES: Final = ("pre_prepare", "prepare", "commit", "view_change", "new_view")
TARGETED_SHARE: Final = 0.3  # share of seeds where some message types are lost more often
TARGETED_DROP_PROBABILITY_MAX: Final = 0.6
LOSSY_LINKS_SHARE: Final = 0.3  # share of seeds where some links are much lossier
LOSSY_LINK_DROP_PROBABILITY_MAX: Final = 0.8
BATCH_TXS_MAX: Final = 8
QUIET_SHARE: Final = 0.1  # share of seeds with no faults at all, as a baseline


@dataclass(frozen=True, slots=True)
class Crash:
    replica: int


@dataclass(frozen=True, slots=True)
class Restart:
    replica: int


@dataclass(frozen=True, slots=True)
class Partition:
    """Replicas in different groups cannot reach each other."""

    groups: tuple[tuple[int, ...], ...]


@dataclass(frozen=True, slots=True)
class Heal:
    """Every link works again."""


Fault = Crash | Restart | Partition | Heal


@dataclass(frozen=True, slots=True)
class TimedFault:
    time_ms: int
    fault: Fault


@dataclass(frozen=True, slots=True)
class Submission:
    """At `time_ms` a client submits one new transaction to `replica` (an honest one)."""

    time_ms: int
    replica: int


@dataclass(frozen=True, slots=True)
class Scenario:
    """One run: a safety phase with `faults`, then everything but the Byzantine heals."""

    seed: int
    validator_count: int
    safety_phase_ms: int
    network_faults: NetworkFaults
    healed_network_faults: NetworkFaults = RELIABLE
    faults: tuple[TimedFault, ...] = ()
    byzantine: tuple[tuple[int, frozenset[Behaviour]], ...] = ()
    submissions: tuple[Submission, ...] = ()
    batch_txs_max: int = 4
    window_blocks: int = 4
    checkpoint_interval_blocks: int = 100
    liveness_ms_max: int = LIVENESS_MS_MAX

    def __post_init__(self) -> None:
        faults_max = (self.validator_count - 1) // 3
        assert len(self.byzantine) <= faults_max, "at most f Byzantine replicas"
        byzantine = {index for index, _ in self.byzantine}
        assert all(s.replica not in byzantine for s in self.submissions)

    @property
    def byzantine_replicas(self) -> frozenset[int]:
        return frozenset(index for index, _ in self.byzantine)


def random_scenario(seed: int, validator_count: int, rng: random.Random) -> Scenario:
    """Draw a scenario: faults, Byzantine replicas and workload all from `rng`."""
    faults_max = (validator_count - 1) // 3
    safety_phase_ms = rng.randint(SAFETY_PHASE_MS_MIN, SAFETY_PHASE_MS_MAX)
    quiet = rng.random() < QUIET_SHARE
    byzantine = () if quiet else _draw_byzantine(validator_count, faults_max, rng)
    honest = [i for i in range(validator_count) if i not in {b for b, _ in byzantine}]
    delay_ms_max = rng.randint(2, 150)
    delay_ms_min = rng.randint(1, delay_ms_max)
    healed = NetworkFaults(delay_ms_min=delay_ms_min, delay_ms_max=delay_ms_max)
    network_faults = (
        healed if quiet else _draw_network_faults(validator_count, delay_ms_min, delay_ms_max, rng)
    )
    faults = () if quiet else _draw_faults(validator_count, safety_phase_ms, rng)
    return Scenario(
        seed=seed,
        validator_count=validator_count,
        safety_phase_ms=safety_phase_ms,
        network_faults=network_faults,
        healed_network_faults=healed,
        faults=faults,
        byzantine=byzantine,
        submissions=_draw_submissions(honest, safety_phase_ms, rng),
        batch_txs_max=rng.randint(1, BATCH_TXS_MAX),
        window_blocks=rng.choice((1, 2, 4, 4, 4)),
        checkpoint_interval_blocks=rng.choice((2, 3, 5, 10, 100, 100)),
    )


def _draw_byzantine(
    validator_count: int, faults_max: int, rng: random.Random
) -> tuple[tuple[int, frozenset[Behaviour]], ...]:
    count = rng.choice((0, *range(1, faults_max + 1), faults_max))
    chosen = sorted(rng.sample(range(validator_count), count))
    byzantine = []
    for index in chosen:
        if rng.random() < 0.2:
            behaviours = frozenset({Behaviour.SILENT})
        else:
            behaviours = frozenset(rng.sample(ACTIVE_BEHAVIOURS, rng.randint(1, 3)))
        byzantine.append((index, behaviours))
    return tuple(byzantine)


def _draw_network_faults(
    validator_count: int, delay_ms_min: int, delay_ms_max: int, rng: random.Random
) -> NetworkFaults:
    drop_probability = rng.choice((0.0, rng.uniform(0.0, DROP_PROBABILITY_MAX)))
    targeted_types: tuple[str, ...] = ()
    if rng.random() < TARGETED_SHARE:
        targeted_types = tuple(rng.sample(TARGETED_TYPES, rng.randint(1, 2)))
    lossy_links: frozenset[tuple[int, int]] = frozenset()
    if rng.random() < LOSSY_LINKS_SHARE:
        links = [(a, b) for a in range(validator_count) for b in range(validator_count) if a != b]
        lossy_links = frozenset(rng.sample(links, rng.randint(1, len(links) // 2)))
    return NetworkFaults(
        drop_probability=drop_probability,
        targeted_types=targeted_types,
        targeted_drop_probability=rng.uniform(drop_probability, TARGETED_DROP_PROBABILITY_MAX),
        lossy_links=lossy_links,
        lossy_link_drop_probability=rng.uniform(drop_probability, LOSSY_LINK_DROP_PROBABILITY_MAX),
        duplicate_probability=rng.uniform(0.0, DUPLICATE_PROBABILITY_MAX),
        delay_ms_min=delay_ms_min,
        delay_ms_max=delay_ms_max,
        slow_probability=rng.uniform(0.0, SLOW_PROBABILITY_MAX),
        slow_delay_ms_max=rng.randint(delay_ms_max, SLOW_DELAY_MS_MAX),
    )


def _draw_faults(
    validator_count: int, safety_phase_ms: int, rng: random.Random
) -> tuple[TimedFault, ...]:
    timed: list[TimedFault] = []
    for _ in range(rng.randint(0, EPISODES_MAX)):
        start = rng.randrange(safety_phase_ms)
        replica = rng.randrange(validator_count)
        timed.append(TimedFault(start, Crash(replica)))
        timed.append(
            TimedFault(start + rng.randint(EPISODE_MS_MIN, EPISODE_MS_MAX), Restart(replica))
        )
    for _ in range(rng.randint(0, EPISODES_MAX)):
        start = rng.randrange(safety_phase_ms)
        replicas = list(range(validator_count))
        rng.shuffle(replicas)
        cut = rng.randint(1, validator_count - 1)
        groups = (tuple(sorted(replicas[:cut])), tuple(sorted(replicas[cut:])))
        timed.append(TimedFault(start, Partition(groups)))
        timed.append(TimedFault(start + rng.randint(EPISODE_MS_MIN, EPISODE_MS_MAX), Heal()))
    return tuple(sorted((f for f in timed if f.time_ms < safety_phase_ms), key=lambda f: f.time_ms))


def _draw_submissions(
    honest: list[int], safety_phase_ms: int, rng: random.Random
) -> tuple[Submission, ...]:
    count = rng.randint(TXS_MIN, TXS_MAX)
    after_heal = rng.randint(0, TXS_AFTER_HEAL_MAX)
    times = [rng.randrange(safety_phase_ms) for _ in range(count - after_heal)]
    times += [safety_phase_ms + rng.randrange(5_000) for _ in range(after_heal)]
    return tuple(Submission(t, rng.choice(honest)) for t in sorted(times))
