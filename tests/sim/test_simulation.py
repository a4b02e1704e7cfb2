"""The seeded simulation as tests: a sweep of random scenarios and targeted ones.

The sweep runs `SWEEP_SEEDS` seeds (even seeds with 4 replicas, odd with 7) on all cores
and asserts safety on every one of them; liveness is asserted separately. A failure names
the seed and the command that replays it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import pytest

from consensus.messages import Commit
from tests.sim.byzantine import Behaviour
from tests.sim.network import NetworkFaults
from tests.sim.run import Summary, failure_report, run_seeds
from tests.sim.scenario import Crash, Heal, Partition, Restart, Scenario, Submission, TimedFault
from tests.sim.simulation import Simulation, SimulationResult

SWEEP_SEEDS: Final = int(os.environ.get("CHANCERY_SIM_SEEDS", "1000"))
REPORTED_FAILURES_MAX: Final = 15
ROOT: Final = Path(__file__).resolve().parents[2]
LAN: Final = NetworkFaults(delay_ms_min=2, delay_ms_max=20)

# --- the seeded sweep --------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep() -> Summary:
    return run_seeds(range(SWEEP_SEEDS), "both", jobs=os.cpu_count() or 1)


def _report(failures: Sequence[SimulationResult]) -> str:
    shown = "\n".join(failure_report(r) for r in failures[:REPORTED_FAILURES_MAX])
    more = len(failures) - REPORTED_FAILURES_MAX
    return shown + (f"\n... and {more} more" if more > 0 else "")


def test_sweep_keeps_every_safety_invariant(sweep: Summary) -> None:
    print(sweep.text())
    assert sweep.seeds == SWEEP_SEEDS
    assert sweep.blocks > SWEEP_SEEDS and sweep.views_max_total > SWEEP_SEEDS, "it did work"
    unsafe = [r for r in sweep.failures if r.failure_kind not in (None, "liveness")]
    assert not unsafe, _report(unsafe)


def test_sweep_no_honest_primary_equivocates(sweep: Summary) -> None:
    equivocating = [r for r in sweep.failures if r.equivocations]
    assert not equivocating, _report(equivocating)


def test_sweep_commits_everything_after_the_faults_heal(sweep: Summary) -> None:
    stalled = [r for r in sweep.failures if r.failure_kind == "liveness"]
    assert not stalled, _report(stalled)


def test_a_seed_replays_identically_whatever_the_hash_seed() -> None:
    """The printed replay command reproduces a run exactly, in another process."""
    digests = set()
    for hash_seed in ("1", "2"):
        environment = {**os.environ, "PYTHONHASHSEED": hash_seed}
        command = [sys.executable, "-m", "tests.sim.run", "--seed", "11", "--n", "7", "--verbose"]
        output = subprocess.run(
            command, cwd=ROOT, env=environment, capture_output=True, check=False
        ).stdout
        assert output.count(b"\n") > 1000
        digests.add(hashlib.sha256(output).hexdigest())
    assert len(digests) == 1


# --- targeted scenarios ------------------------------------------------------------------


def _scenario(
    validator_count: int = 4,
    *,
    seed: int = 1,
    safety_phase_ms: int = 20_000,
    byzantine: dict[int, set[Behaviour]] | None = None,
    faults: Sequence[TimedFault] = (),
    submissions: Sequence[Submission] = (),
    network: NetworkFaults = LAN,
) -> Scenario:
    return Scenario(
        seed=seed,
        validator_count=validator_count,
        safety_phase_ms=safety_phase_ms,
        network_faults=network,
        healed_network_faults=LAN,
        faults=tuple(faults),
        byzantine=tuple(sorted((i, frozenset(b)) for i, b in (byzantine or {}).items())),
        submissions=tuple(submissions),
    )


def _steady(
    replicas: Sequence[int], count: int, start_ms: int = 100, every_ms: int = 300
) -> list[Submission]:
    return [Submission(start_ms + k * every_ms, replicas[k % len(replicas)]) for k in range(count)]


def _honest_views(simulation: Simulation) -> list[int]:
    return [node.durable.view for node in simulation.nodes if node.honest]


def _honest_blamed(simulation: Simulation) -> set[tuple[int, int, str]]:
    """(suspecting replica, suspected replica, code) where both are honest."""
    return {
        (node.index, peer, code)
        for node in simulation.nodes
        if node.honest
        for peer, code in node.statistics.suspicions
        if simulation.nodes[peer].honest
    }


def _assert_ok(result: SimulationResult) -> None:
    assert result.ok, failure_report(result)


def test_equivocating_primary_is_replaced_and_the_chain_moves_on() -> None:
    scenario = _scenario(byzantine={0: {Behaviour.EQUIVOCATE}}, submissions=_steady((1, 2, 3), 20))
    simulation = Simulation(scenario)
    result = simulation.run()
    _assert_ok(result)
    assert min(_honest_views(simulation)) >= 1, "the equivocating primary of view 0 was voted out"
    suspicions = [
        code
        for node in simulation.nodes
        if node.honest
        for (peer, code), _ in node.statistics.suspicions.items()
        if peer == 0
    ]
    assert suspicions, "someone noticed replica 0"
    assert result.blocks >= 1


def test_silent_primary_is_replaced_within_the_view_timeout() -> None:
    first_submission_ms = 100
    scenario = _scenario(
        byzantine={0: {Behaviour.SILENT}},
        submissions=_steady((1, 2, 3), 6, start_ms=first_submission_ms),
    )
    simulation = Simulation(scenario)
    # The backups' progress timer is 2 s; the view change itself takes a few round trips.
    simulation.run_until(first_submission_ms + 2_000 + 1_000)
    assert all(node.durable.height >= 1 for node in simulation.nodes if node.honest)
    assert _honest_views(simulation) == [1, 1, 1]
    _assert_ok(simulation.run())


@pytest.mark.parametrize("validator_count", [4, 7])
def test_forged_and_huge_views_move_no_honest_replica(validator_count: int) -> None:
    faults_max = (validator_count - 1) // 3
    liars = range(validator_count - faults_max, validator_count)  # not the primary of view 0
    behaviours = {Behaviour.HUGE_VIEW, Behaviour.FORGE, Behaviour.STALE_VIEW}
    scenario = _scenario(
        validator_count,
        byzantine={index: behaviours for index in liars},
        submissions=_steady(range(validator_count - faults_max), 20),
    )
    simulation = Simulation(scenario)
    result = simulation.run()
    _assert_ok(result)
    assert set(_honest_views(simulation)) == {0}, "no view change storm"
    assert all(node.statistics.views_entered == 0 for node in simulation.nodes if node.honest)
    codes = {code for node in simulation.nodes for _, code in node.statistics.suspicions}
    forgeries = {"view_too_far", "bad_view_change", "bad_new_view", "bad_commit_vote"}
    assert forgeries | {"sender_mismatch"} <= codes, "every forgery was caught and dropped"


def test_timeouts_back_off_while_new_primaries_fail() -> None:
    """Primaries of views 0 and 1 are silent: each failed view change waits twice as long."""
    scenario = _scenario(
        7,
        byzantine={0: {Behaviour.SILENT}, 1: {Behaviour.SILENT}},
        submissions=_steady((2, 3, 4, 5, 6), 10),
    )
    simulation = Simulation(scenario)
    result = simulation.run()
    _assert_ok(result)
    assert set(_honest_views(simulation)) == {2}
    for node in simulation.nodes[2:]:
        delays = [delay for _, kind, delay in node.statistics.timers_set if kind == "new_view"]
        # A wait restarted when f+1 VIEW-CHANGEs arrive is set twice at the same delay.
        assert list(dict.fromkeys(delays))[:2] == [4_000, 8_000], delays


def test_crash_in_the_middle_of_a_view_change_keeps_the_votes() -> None:
    """Replica 2 votes, enters a view change that cannot finish, crashes and restarts."""
    scenario = _scenario(
        safety_phase_ms=30_000,
        faults=[
            TimedFault(3_000, Partition(((0, 1), (2, 3)))),
            TimedFault(9_000, Crash(2)),
            TimedFault(12_000, Restart(2)),
        ],
        submissions=_steady((0, 1, 2, 3), 16, every_ms=300),
    )
    simulation = Simulation(scenario)
    node = simulation.nodes[2]
    simulation.run_until(8_999)
    assert node.durable.in_view_change and node.durable.view >= 1
    assert node.durable.votes, "replica 2 voted before the partition"
    votes_before = dict(node.durable.votes)
    view_before = node.durable.view
    simulation.run_until(12_000)
    assert node.replica is not None
    assert node.replica.view == view_before
    assert node.replica.phase.value == "view_change"
    assert votes_before.items() <= node.replica.votes.items()
    _assert_ok(simulation.run())  # the checker saw no second vote for any (height, view)


def test_replica_cut_off_for_many_blocks_catches_up_by_state_transfer() -> None:
    scenario = _scenario(
        safety_phase_ms=30_000,
        faults=[TimedFault(200, Partition(((0, 1, 2), (3,)))), TimedFault(25_000, Heal())],
        submissions=_steady((0, 1, 2), 30, every_ms=500) + _steady((1,), 4, start_ms=26_000),
    )
    simulation = Simulation(scenario)
    simulation.run_until(24_999)
    behind = simulation.nodes[0].durable.height - simulation.nodes[3].durable.height
    assert behind > 2 * scenario.window_blocks
    result = simulation.run()
    assert simulation.nodes[3].statistics.fetched_blocks > 0
    _assert_ok(result)


def test_replica_that_timed_out_alone_rejoins_after_the_heal() -> None:
    """Replica 3, cut off with work pending, times out into view changes nobody joins."""
    scenario = _scenario(
        safety_phase_ms=20_000,
        faults=[TimedFault(200, Partition(((0, 1, 2), (3,)))), TimedFault(15_000, Heal())],
        submissions=_steady((0, 1, 2, 3), 12, every_ms=500),
    )
    simulation = Simulation(scenario)
    simulation.run_until(14_999)
    lone = simulation.nodes[3]
    assert lone.replica is not None and lone.replica.view >= 1, "it asked for a view change"
    assert _honest_views(simulation)[:3] == [0, 0, 0], "nobody followed it"
    _assert_ok(simulation.run())


def test_seven_validators_with_two_crashed_still_commit() -> None:
    scenario = _scenario(
        7,
        safety_phase_ms=20_000,
        faults=[TimedFault(0, Crash(5)), TimedFault(0, Crash(6))],
        submissions=_steady((0, 1, 2, 3, 4), 20),
    )
    simulation = Simulation(scenario)
    simulation.run_until(19_999)
    assert not simulation.nodes[5].up and not simulation.nodes[6].up
    submitted = len(simulation.checker.submitted)
    for index in range(5):
        assert simulation.checker.progress[index].obliged_committed == submitted
    _assert_ok(simulation.run())


def test_restarted_primary_does_not_propose_twice_at_one_height() -> None:
    """Primary 0 proposes blocks it never sees committed, is cut off, crashes and comes
    back in the same view (the partition keeps it from catching up at start)."""
    scenario = _scenario(
        safety_phase_ms=10_000,
        faults=[
            TimedFault(1_000, Partition(((0,), (1, 2, 3)))),
            TimedFault(1_500, Crash(0)),
            TimedFault(2_000, Restart(0)),
        ],
        submissions=_steady((0, 1, 2, 3), 12, every_ms=150),
    )
    simulation = Simulation(scenario)

    def no_commits_reach_replica_0(source: int, target: int, content: object) -> bool:
        return isinstance(content, Commit) and target == 0

    simulation.network.drop_rule = no_commits_reach_replica_0
    simulation.run_until(1_499)
    assert simulation.nodes[0].durable.height == 0
    assert any(key[1] == 0 for key in simulation.nodes[0].durable.votes), "it proposed"
    simulation.network.drop_rule = None
    _assert_ok(simulation.run())  # the checker sees every PRE-PREPARE replica 0 sends


def test_no_honest_replica_is_blamed_for_helping_a_latecomer() -> None:
    """Replica 0 asks for view 1 after the others entered it; they pass on the NEW-VIEW."""
    scenario = _scenario(
        safety_phase_ms=10_000,
        faults=[TimedFault(1_000, Partition(((0,), (1, 2, 3)))), TimedFault(3_600, Heal())],
        submissions=[Submission(1_200, 1), Submission(2_000, 0)],
    )
    simulation = Simulation(scenario)
    _assert_ok(simulation.run())
    assert not _honest_blamed(simulation)


def test_byzantine_replica_cannot_stall_view_changes_with_a_certificate_it_withholds() -> None:
    """Only Byzantine replica 0 receives COMMITs for a while, so only it has a commit
    certificate; it shows the certificate in its VIEW-CHANGEs but serves no blocks."""
    scenario = _scenario(
        safety_phase_ms=6_000,
        byzantine={0: {Behaviour.STALE_VIEW}},
        submissions=_steady((1, 2, 3), 6, every_ms=200),
    )
    simulation = Simulation(scenario)

    def commits_reach_only_replica_0(source: int, target: int, content: object) -> bool:
        return isinstance(content, Commit) and target != 0 and simulation.queue.now_ms < 5_000

    simulation.network.drop_rule = commits_reach_only_replica_0
    simulation.run_until(5_000)
    assert simulation.nodes[0].durable.height > 0
    assert all(node.durable.height == 0 for node in simulation.nodes[1:])
    _assert_ok(simulation.run())


def test_backup_that_committed_less_accepts_the_new_view() -> None:
    """Replica 3 misses the COMMITs of three blocks (it holds their prepared certificates);
    then primary 0 is cut off and replica 1, which committed them, leads view 1."""
    scenario = _scenario(
        safety_phase_ms=20_000,
        faults=[TimedFault(3_000, Partition(((0,), (1, 2, 3))))],
        submissions=[Submission(t, 1) for t in (100, 600, 1_100, 3_500)],
    )
    simulation = Simulation(scenario)

    def commits_miss_replica_3(source: int, target: int, content: object) -> bool:
        return isinstance(content, Commit) and target == 3 and simulation.queue.now_ms < 3_000

    simulation.network.drop_rule = commits_miss_replica_3
    simulation.run_until(2_999)
    assert simulation.nodes[1].durable.height == 3
    assert simulation.nodes[3].durable.height == 0
    simulation.run_until(19_999)
    assert not _honest_blamed(simulation)
    assert [node.durable.view for node in simulation.nodes[1:]] == [1, 1, 1]
    assert simulation.nodes[3].durable.height == 4, "view 1 commits with replicas 1, 2 and 3"
    _assert_ok(simulation.run())
