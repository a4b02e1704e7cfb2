"""One seeded run: n simulated nodes around real replicas, a network, faults and a checker.

The run has two phases, as in TigerBeetle's VOPR. In the safety phase the scenario's
faults play out (loss, delay, duplication, reordering, partitions, crashes, Byzantine
replicas) and only safety is checked. At `safety_phase_ms` everything heals except the
Byzantine replicas: partitions close, packets stop being lost, crashed replicas restart.
From then on every transaction submitted to an honest replica must be committed by every
honest replica within `liveness_ms_max`. The checker runs after every step of both phases.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from consensus.config import ReplicaConfig
from consensus.messages import ConsensusMessage
from tests.sim.byzantine import Adversary
from tests.sim.checker import Checker, InvariantViolation
from tests.sim.clock import WORLD, EventQueue
from tests.sim.model import KeyedHashAuth
from tests.sim.network import Network, NetworkStatistics, Packet
from tests.sim.node import NodeContractError, SimNode, TransactionSubmitted
from tests.sim.proofs import TX_PAYLOAD_BYTES, MemberSigner
from tests.sim.scenario import Crash, Heal, Partition, Restart, Scenario

CHAIN_ID: Final = "sim"
SECRET_BYTES: Final = 16
STEPS_MAX: Final = 2_000_000  # a run that takes more steps is stuck in a loop
EQUIVOCATIONS_REPORTED_MAX: Final = 3
HEARTBEAT_INTERVAL_MS: Final = 2_000  # after the heal, clients keep sending this often


@dataclass(frozen=True, slots=True)
class EndOfSafetyPhase:
    """Heal everything but the Byzantine replicas."""


@dataclass(frozen=True, slots=True)
class SubmissionDue:
    replica: int


@dataclass(frozen=True, slots=True)
class HeartbeatDue:
    """A client sends one more transaction to a random honest replica."""


@dataclass
class SimulationResult:
    seed: int
    validator_count: int
    failure: str | None = None
    failure_kind: str | None = None  # "liveness", "invariant", "contract", "exception", "steps"
    failure_time_ms: int | None = None
    steps: int = 0
    simulated_ms: int = 0
    blocks: int = 0  # the highest honest chain
    view_max: int = 0  # the highest view an honest replica reached
    views_entered: int = 0  # EnteredView actions of honest replicas
    liveness_ms: int | None = None  # from the heal until everything was committed
    equivocations: list[str] = field(default_factory=list)  # honest double PRE-PREPAREs
    network: NetworkStatistics = field(default_factory=NetworkStatistics)

    @property
    def ok(self) -> bool:
        return self.failure is None and not self.equivocations


class Simulation:
    """Drives the scenario; also the nodes' `Environment`."""

    def __init__(
        self,
        scenario: Scenario,
        rng: random.Random | None = None,
        trace: Callable[[str], None] | None = None,
    ) -> None:
        self.scenario = scenario
        self.rng = rng if rng is not None else random.Random(scenario.seed)
        self.queue = EventQueue()
        self.network = Network(self.rng, self.queue, scenario.validator_count)
        self.network.set_faults(scenario.network_faults)
        self._trace = trace
        count = scenario.validator_count
        secrets = tuple(self.rng.randbytes(SECRET_BYTES) for _ in range(count))
        self.verifier = KeyedHashAuth(CHAIN_ID, 0, secrets)
        self.members = MemberSigner(self.rng.randbytes(SECRET_BYTES))
        behaviours = dict(scenario.byzantine)
        self.nodes = [
            self._make_node(index, secrets, behaviours.get(index)) for index in range(count)
        ]
        honest = frozenset(i for i in range(count) if i not in behaviours)
        self.checker = Checker(count, honest, self.verifier, self.members)
        self.steps = 0
        self.healed_at_ms: int | None = None
        self.submissions_done = 0
        self.transactions_made = 0
        self._schedule_scenario()
        for node in self.nodes:
            node.start()

    def _make_node(self, index: int, secrets: tuple[bytes, ...], behaviours: object) -> SimNode:
        scenario = self.scenario
        config = ReplicaConfig(
            CHAIN_ID,
            scenario.validator_count,
            index,
            window_blocks=scenario.window_blocks,
            checkpoint_interval_blocks=scenario.checkpoint_interval_blocks,
        )
        adversary = None
        if behaviours is not None:
            adversary = Adversary(behaviours, self.rng)  # type: ignore[arg-type]
        node = SimNode(
            config,
            KeyedHashAuth(CHAIN_ID, index, secrets),
            self.verifier,
            self.members,
            self,
            scenario.batch_txs_max,
            adversary,
        )
        if self._trace is not None:
            node.trace = self.trace
        return node

    def _schedule_scenario(self) -> None:
        for timed in self.scenario.faults:
            assert timed.time_ms < self.scenario.safety_phase_ms
            self.queue.schedule(timed.time_ms, WORLD, timed.fault)
        for submission in self.scenario.submissions:
            self.queue.schedule(submission.time_ms, WORLD, SubmissionDue(submission.replica))
        self.queue.schedule(self.scenario.safety_phase_ms, WORLD, EndOfSafetyPhase())

    # --- Environment -----------------------------------------------------------------------

    def transmit(self, source: int, target: int, content: object) -> None:
        self.network.send(source, target, content)

    def node(self, index: int) -> SimNode:
        return self.nodes[index]

    def reachable(self, source: int, target: int) -> bool:
        return self.network.can_talk(source, target)

    def observe_sent(self, node: SimNode, message: ConsensusMessage) -> None:
        self.checker.on_sent(node, message)

    def trace(self, text: str) -> None:
        if self._trace is not None:
            self._trace(f"{self.queue.now_ms:>9}ms {text}")

    # --- running ---------------------------------------------------------------------------

    def step(self) -> None:
        """Deliver the next entry of the queue, then check every invariant."""
        entry = self.queue.pop()
        self.steps += 1
        if entry.target == WORLD:
            self._apply(entry.payload)
        else:
            node = self.nodes[entry.target]
            stale = entry.incarnation is not None and entry.incarnation != node.incarnation
            payload = entry.payload
            lost = isinstance(payload, Packet) and not self.network.arrives(payload)
            if node.up and not stale and not lost:
                node.deliver(payload)
        self.checker.after_step(self.nodes)

    def run_until(self, time_ms: int) -> None:
        """Step until the next entry is later than `time_ms` (for targeted tests)."""
        while (next_ms := self.queue.peek_time_ms()) is not None and next_ms <= time_ms:
            self.step()

    def finished(self) -> bool:
        return (
            self.healed_at_ms is not None
            and self.submissions_done == len(self.scenario.submissions)
            and self.checker.all_committed()
        )

    def run(self) -> SimulationResult:
        """Run to the end: every transaction committed everywhere, a failure, or the deadline."""
        result = SimulationResult(self.scenario.seed, self.scenario.validator_count)
        deadline_ms = self.scenario.safety_phase_ms + self.scenario.liveness_ms_max
        try:
            while not self.finished():
                next_ms = self.queue.peek_time_ms()
                if next_ms is None or next_ms > deadline_ms:
                    result.failure, result.failure_kind = self._liveness_failure(), "liveness"
                    break
                if self.steps >= STEPS_MAX:
                    result.failure = f"no end after {STEPS_MAX} steps"
                    result.failure_kind = "steps"
                    break
                self.step()
        except InvariantViolation as error:
            result.failure, result.failure_kind = str(error), "invariant"
        except NodeContractError as error:
            result.failure, result.failure_kind = str(error), "contract"
        except Exception:  # the replica (or the simulator) crashed: report it with the seed
            result.failure = "exception:\n" + traceback.format_exc()
            result.failure_kind = "exception"
        if result.failure is not None:
            result.failure_time_ms = self.queue.now_ms
        elif self.healed_at_ms is not None:
            result.liveness_ms = self.queue.now_ms - self.healed_at_ms
        self._summarise(result)
        return result

    def _summarise(self, result: SimulationResult) -> None:
        result.steps = self.steps
        result.simulated_ms = self.queue.now_ms
        honest = [node for node in self.nodes if node.honest]
        result.blocks = max(node.durable.height for node in honest)
        result.view_max = max(node.durable.view for node in honest)
        result.views_entered = sum(node.statistics.views_entered for node in honest)
        result.network = self.network.statistics
        result.equivocations = self.checker.equivocations[:EQUIVOCATIONS_REPORTED_MAX]

    def _liveness_failure(self) -> str:
        missing = self.checker.missing()
        lines = [
            f"LIVENESS: {sum(len(m) for m in missing.values())} (replica, transaction) pairs "
            f"not committed {self.scenario.liveness_ms_max} ms after the heal"
        ]
        for node in self.nodes:
            lines.append("  " + self.describe_node(node, len(missing.get(node.index, ()))))
        return "\n".join(lines)

    def describe_node(self, node: SimNode, missing: int) -> str:
        role = "honest" if node.honest else "byzantine"
        replica = node.replica
        if replica is None:
            state = "down"
        else:
            state = (
                f"view {replica.view} {replica.phase.value} primary {replica.primary} "
                f"syncing {replica.syncing}"
            )
        return (
            f"replica {node.index} ({role}): committed {node.durable.height}, {state}, "
            f"mempool {len(node.durable.mempool)}, missing {missing}"
        )

    # --- the world's own entries -----------------------------------------------------------

    def _apply(self, payload: object) -> None:
        if isinstance(payload, SubmissionDue):
            self.submissions_done += 1
            self._submit(payload.replica, obliged=True)
        elif isinstance(payload, HeartbeatDue):
            honest = [node.index for node in self.nodes if node.honest]
            self._submit(self.rng.choice(honest), obliged=False)
            self.queue.schedule(HEARTBEAT_INTERVAL_MS, WORLD, HeartbeatDue())
        elif isinstance(payload, EndOfSafetyPhase):
            self._heal_everything()
        elif isinstance(payload, Crash):
            if self.nodes[payload.replica].up:
                self.trace(f"CRASH n{payload.replica}")
                self.nodes[payload.replica].crash()
        elif isinstance(payload, Restart):
            if not self.nodes[payload.replica].up:
                self.trace(f"RESTART n{payload.replica}")
                self.nodes[payload.replica].start()
        elif isinstance(payload, Partition):
            self.trace(f"PARTITION {payload.groups}")
            self.network.partition(payload.groups)
        elif isinstance(payload, Heal):
            self.trace("HEAL partitions")
            self.network.heal()
        else:
            raise AssertionError(f"unknown world entry {payload!r}")

    def _submit(self, replica: int, obliged: bool) -> None:
        self.transactions_made += 1
        payload = self.transactions_made.to_bytes(4, "big") + self.rng.randbytes(
            TX_PAYLOAD_BYTES - 4
        )
        tx = self.members.sign(payload)
        self.checker.note_submitted(tx, self.queue.now_ms, obliged)
        kind = "tx" if obliged else "heartbeat tx"
        self.trace(f"SUBMIT {kind} {self.transactions_made} ({tx.hex()[:12]}) to n{replica}")
        node = self.nodes[replica]
        if node.up:
            node.deliver(TransactionSubmitted(tx))
        else:  # the client retries until the node is back; model that as accepted now
            node.durable.mempool[tx] = None

    def _heal_everything(self) -> None:
        self.trace("END OF SAFETY PHASE: heal partitions and loss, restart crashed replicas")
        self.healed_at_ms = self.queue.now_ms
        self.network.heal()
        self.network.set_faults(self.scenario.healed_network_faults)
        for node in self.nodes:
            if not node.up:
                node.start()
        self.queue.schedule(HEARTBEAT_INTERVAL_MS, WORLD, HeartbeatDue())
