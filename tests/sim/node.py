"""A simulated node: carries out a replica's actions the way the real node must.

The replica is the real `consensus.replica.Replica`. Around it the node keeps what a
process keeps: a durable store that survives crashes (votes, prepared certificates and
their blocks' transactions, the view, the committed chain with certificates, the accepted
transactions), and volatile state lost on a crash (the replica object, executed but
uncommitted blocks, timers, an outstanding batch request).

Contract with the replica, as `consensus/events.py` states it and as enforced here:
actions are carried out in order, synchronously (so a `PersistVote` is durable before any
later action); answers (`ExecutionResult`, `BatchReady`, ...) come back as later events.
A replica that asks for something impossible from an honest node (commit a block it never
executed, a certificate without a quorum) is a bug: `NodeContractError`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from consensus.config import ReplicaConfig
from consensus.events import (
    Action,
    BatchReady,
    BlocksFetched,
    Broadcast,
    CancelTimer,
    CommitBlock,
    EnteredView,
    Event,
    ExecuteProposal,
    ExecutionResult,
    FetchBlocks,
    FetchProposal,
    MessageReceived,
    PeerHeight,
    PersistVote,
    ProposalFetched,
    RequestBatch,
    RequestsPending,
    Send,
    SetTimer,
    Suspect,
    TimerFired,
    TimerKind,
)
from consensus.messages import ConsensusMessage, PreparedCertificate
from consensus.replica import RecoveredState, Replica
from tests.sim.clock import LOCAL_DELAY_MS, EventQueue
from tests.sim.model import KeyedHashAuth, ToyLedger, block_hash_of, toy_header
from tests.sim.network import Packet
from tests.sim.proofs import MemberSigner, certificate_problem
from tests.sim.trace import describe, short

if TYPE_CHECKING:
    from tests.sim.byzantine import Adversary

RELAY_INTERVAL_MS: Final = 1_000  # a node re-sends its uncommitted transactions this often
RELAY_TXS_MAX: Final = 64  # transactions per relay packet
FETCH_DELAY_MS_MIN: Final = 20  # state transfer and proposal fetches take this long ...
FETCH_DELAY_MS_MAX: Final = 300  # ... up to this
PROPOSAL_FETCH_RETRY_MS: Final = 500
PROPOSAL_FETCH_ATTEMPTS_MAX: Final = 20  # then give up (the replica cannot be told so)
TIMERS_RECORDED_MAX: Final = 1_000  # timers kept in the statistics, for tests
STARTUP_SYNC_HEIGHT: Final = 2**62  # at start a node fetches as far as its peers have blocks


class NodeContractError(Exception):
    """The replica asked its (honest) node for something no correct replica asks for."""


# --- what a node receives besides replica events -------------------------------------------


@dataclass(frozen=True, slots=True)
class TxRelay:
    """Transactions a node passes on to its peers (mempool gossip)."""

    txs: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class HeightAnnouncement:
    """A node's committed height, told to its peers on every relay tick (unproven)."""

    height: int


@dataclass(frozen=True, slots=True)
class TimerDue:
    kind: TimerKind
    generation: int


@dataclass(frozen=True, slots=True)
class BlocksDue:
    """A state transfer asked for by `FetchBlocks` completes now."""

    target_height: int
    peers: tuple[int, ...]
    proven: tuple[tuple[int, bytes, tuple[tuple[int, bytes], ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class ProposalDue:
    """A `FetchProposal` lookup is answered now (or retried)."""

    block_hash: bytes
    peers: tuple[int, ...]
    attempt: int


@dataclass(frozen=True, slots=True)
class RelayDue:
    """Time to re-send uncommitted transactions."""


@dataclass(frozen=True, slots=True)
class TransactionSubmitted:
    """A client hands this node a signed transaction."""

    tx: bytes


@dataclass(frozen=True, slots=True)
class CommittedBlock:
    height: int
    block_hash: bytes
    parent_hash: bytes
    txs: tuple[bytes, ...]
    signatures: tuple[tuple[int, bytes], ...]


@dataclass
class DurableState:
    """Everything a node keeps across a crash."""

    view: int = 0
    in_view_change: bool = False
    votes: dict[tuple[int, int, str], bytes] = field(default_factory=dict)
    prepared: dict[int, PreparedCertificate] = field(default_factory=dict)
    prepared_txs: dict[bytes, tuple[bytes, ...]] = field(default_factory=dict)
    ledger: ToyLedger = field(default_factory=ToyLedger)
    blocks: list[CommittedBlock] = field(default_factory=list)
    block_by_hash: dict[bytes, CommittedBlock] = field(default_factory=dict)
    mempool: dict[bytes, None] = field(default_factory=dict)  # accepted, not committed
    pruned_height: int = 0  # votes and certificates at or below it were dropped

    @property
    def height(self) -> int:
        return self.ledger.height

    def tip(self) -> tuple[int, bytes, tuple[tuple[int, bytes], ...]]:
        signatures = self.blocks[-1].signatures if self.blocks else ()
        return self.ledger.height, self.ledger.committed[-1], signatures


class Environment(Protocol):
    """What a node needs from the simulation around it."""

    rng: random.Random
    queue: EventQueue

    def transmit(self, source: int, target: int, content: object) -> None: ...

    def node(self, index: int) -> SimNode: ...

    def reachable(self, source: int, target: int) -> bool: ...

    def observe_sent(self, node: SimNode, message: ConsensusMessage) -> None: ...


@dataclass
class NodeStatistics:
    suspicions: dict[tuple[int, str], int] = field(default_factory=dict)
    views_entered: int = 0
    fetch_blocks: int = 0
    fetched_blocks: int = 0
    fetch_proposals: int = 0
    crashes: int = 0
    timers_set: list[tuple[int, str, int]] = field(default_factory=list)  # (time, kind, delay)


class SimNode:
    """One validator process around a real `Replica`."""

    def __init__(
        self,
        config: ReplicaConfig,
        auth: KeyedHashAuth,
        verifier: KeyedHashAuth,
        members: MemberSigner,
        environment: Environment,
        batch_txs_max: int,
        adversary: Adversary | None = None,
    ) -> None:
        assert batch_txs_max >= 1
        self.config = config
        self.index = config.index
        self.auth = auth
        self.verifier = verifier
        self.members = members
        self.environment = environment
        self.batch_txs_max = batch_txs_max
        self.adversary = adversary
        self.durable = DurableState()
        self.statistics = NodeStatistics()
        self.replica: Replica | None = None
        self.incarnation = 0
        self.trace: Callable[[str], None] | None = None
        self._reset_volatile()

    @property
    def honest(self) -> bool:
        return self.adversary is None

    @property
    def up(self) -> bool:
        return self.replica is not None

    def _reset_volatile(self) -> None:
        self.durable.ledger.pending.clear()
        self.block_txs: dict[bytes, tuple[bytes, ...]] = dict(self.durable.prepared_txs)
        self.batch_waiting: int | None = None
        self.relay_cursor = 0
        self.reported_pending = False
        self.timer_generation: dict[TimerKind, int] = {kind: 0 for kind in TimerKind}

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start (or restart) the replica from what is durable.

        Like the real node (ARCHITECTURE.md, "Persistence and recovery"), a node first
        catches up from any reachable peer, then builds the replica from what it has.
        """
        assert self.replica is None
        self.incarnation += 1
        self._reset_volatile()
        self._transfer_blocks(STARTUP_SYNC_HEIGHT, ())
        height, committed_hash, signatures = self.durable.tip()
        recovered = RecoveredState(
            view=self.durable.view,
            in_view_change=self.durable.in_view_change,
            committed_height=height,
            committed_hash=committed_hash,
            committed_signatures=signatures,
            votes=dict(self.durable.votes),
            prepared=dict(self.durable.prepared),
            prepared_txs=dict(self.durable.prepared_txs),
        )
        self.replica = Replica(self.config, self.auth, recovered)
        self._carry_out(self.replica.start())
        self._schedule(RELAY_INTERVAL_MS, RelayDue())
        self._after_delivery()

    def crash(self) -> None:
        """Lose the process: the replica and everything volatile; keep `durable`."""
        assert self.replica is not None
        self.replica = None
        self.incarnation += 1
        self.statistics.crashes += 1
        self._reset_volatile()

    # --- delivery --------------------------------------------------------------------------

    def deliver(self, payload: object) -> None:
        """Take one entry addressed to this node (the simulation checked its incarnation)."""
        assert self.replica is not None
        if isinstance(payload, Packet):
            self._on_packet(payload)
        elif isinstance(payload, TimerDue):
            if payload.generation == self.timer_generation[payload.kind]:
                self._handle(TimerFired(payload.kind))
        elif isinstance(payload, BlocksDue):
            self._catch_up(payload)
            height, block_hash, signatures = self.durable.tip()
            self._handle(BlocksFetched(height, block_hash, signatures))
        elif isinstance(payload, ProposalDue):
            self._on_proposal_due(payload)
        elif isinstance(payload, RelayDue):
            self._relay()
            self._announce_height()
            self._schedule(RELAY_INTERVAL_MS, RelayDue())
        elif isinstance(payload, TransactionSubmitted):
            self._accept((payload.tx,))
            self._relay((payload.tx,))
        else:
            self._handle(payload)  # type: ignore[arg-type]
        self._after_delivery()

    def _on_packet(self, packet: Packet) -> None:
        if isinstance(packet.content, TxRelay):
            self._accept(packet.content.txs)
        elif isinstance(packet.content, HeightAnnouncement):
            self._handle(PeerHeight(packet.source, packet.content.height))
        else:
            message: ConsensusMessage = packet.content  # type: ignore[assignment]
            self._handle(MessageReceived(packet.source, message))

    def _handle(self, event: Event) -> None:
        assert self.replica is not None
        if self.trace is not None:
            self.trace(f"n{self.index} <- {describe(event)}")
        self._carry_out(self.replica.handle(event))

    def _after_delivery(self) -> None:
        """What a node does between events: cut a waiting batch, report pending work."""
        if self.replica is None:
            return
        self._answer_batch_request()
        pending = bool(self.durable.mempool)
        if pending != self.reported_pending:
            self.reported_pending = pending
            self._schedule(LOCAL_DELAY_MS, RequestsPending(pending))

    def _schedule(self, delay_ms: int, payload: object) -> None:
        self.environment.queue.schedule(delay_ms, self.index, payload, self.incarnation)

    # --- actions ---------------------------------------------------------------------------

    def _carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            if self.trace is not None:
                self.trace(f"n{self.index} -> {describe(action)}")
            handler = _ACTION_HANDLERS[type(action)]
            handler(self, action)

    def _broadcast(self, action: Broadcast) -> None:
        peers = tuple(p for p in range(self.config.validator_count) if p != self.index)
        self._transmit(peers, action.message)

    def _send(self, action: Send) -> None:
        self._transmit((action.peer,), action.message)

    def _transmit(self, peers: tuple[int, ...], message: ConsensusMessage) -> None:
        if self.adversary is not None:
            for peer, variant in self.adversary.transform(self, peers, message):
                self.environment.transmit(self.index, peer, variant)
            return
        self.environment.observe_sent(self, message)
        for peer in peers:
            self.environment.transmit(self.index, peer, message)

    def _set_timer(self, action: SetTimer) -> None:
        self.timer_generation[action.kind] += 1
        if len(self.statistics.timers_set) < TIMERS_RECORDED_MAX:
            now_ms = self.environment.queue.now_ms
            self.statistics.timers_set.append((now_ms, action.kind.value, action.delay_ms))
        self._schedule(action.delay_ms, TimerDue(action.kind, self.timer_generation[action.kind]))

    def _cancel_timer(self, action: CancelTimer) -> None:
        self.timer_generation[action.kind] += 1

    def _request_batch(self, action: RequestBatch) -> None:
        self.batch_waiting = action.height  # answered once transactions are eligible

    def _answer_batch_request(self) -> None:
        if self.batch_waiting is None:
            return
        in_blocks: set[bytes] = set()
        for _, _, txs in self.durable.ledger.pending.values():
            in_blocks.update(txs)
        committed = self.durable.ledger.committed_txs
        eligible = [
            tx for tx in self.durable.mempool if tx not in in_blocks and tx not in committed
        ]
        if eligible:
            batch = tuple(eligible[: self.batch_txs_max])
            self._schedule(LOCAL_DELAY_MS, BatchReady(self.batch_waiting, batch))
            self.batch_waiting = None

    def _execute_proposal(self, action: ExecuteProposal) -> None:
        if action.header is None:
            reason, block_hash, header, txs = self._build(action)
        else:
            header, txs = action.header, action.txs
            block_hash = action.expected_block_hash or block_hash_of(header)
            reason = self._unsigned_problem(txs) or self.durable.ledger.execute(
                action.height,
                action.parent_hash,
                txs,
                header,
                action.expected_proposer,
                action.expected_header_view,
                action.expected_block_hash,
            )
        if reason is None:
            self.block_txs[block_hash] = txs
            result = ExecutionResult(
                action.view, action.height, True, block_hash, action.parent_hash, header, txs
            )
        else:
            result = ExecutionResult(action.view, action.height, False, reason=reason)
        self._schedule(LOCAL_DELAY_MS, result)

    def _build(self, action: ExecuteProposal) -> tuple[str | None, bytes, bytes, tuple[bytes, ...]]:
        """This node proposes: drop what is committed or in pending ancestors, then build."""
        ledger = self.durable.ledger
        done = ledger.ancestors_txs(action.parent_hash)
        txs = tuple(tx for tx in action.txs if tx not in done and tx not in ledger.committed_txs)
        if not txs:
            return "local.empty_batch", b"", b"", ()
        header = toy_header(action.height, action.parent_hash, txs, self.index, action.view)
        reason = self._unsigned_problem(txs) or ledger.execute(
            action.height, action.parent_hash, txs, header, None, None, None
        )
        return reason, block_hash_of(header), header, txs

    def _unsigned_problem(self, txs: tuple[bytes, ...]) -> str | None:
        if all(self.members.signed(tx) for tx in txs):
            return None
        return "tx.bad_signature"

    def _persist_vote(self, action: PersistVote) -> None:
        durable = self.durable
        if action.kind in ("prepare", "commit"):
            durable.votes[(action.height, action.view, action.kind)] = action.block_hash
        elif action.kind == "prepared":
            assert action.certificate is not None
            txs = self.block_txs.get(action.block_hash)
            if txs is None:
                self._contract_error(f"prepared certificate for unexecuted {short(action)}")
                return
            durable.prepared[action.height] = action.certificate
            durable.prepared_txs[action.block_hash] = txs
        elif action.kind == "view":
            durable.view = action.view
            durable.in_view_change = action.in_view_change
        elif action.kind == "checkpoint":
            self._prune_durable(action.height)
        else:
            self._contract_error(f"unknown PersistVote kind {action.kind!r}")

    def _prune_durable(self, height: int) -> None:
        durable = self.durable
        durable.pruned_height = max(durable.pruned_height, height)
        durable.votes = {key: v for key, v in durable.votes.items() if key[0] > height}
        kept = {h: c for h, c in durable.prepared.items() if h > height}
        durable.prepared = kept
        hashes = {c.block_hash for c in kept.values()}
        durable.prepared_txs = {h: t for h, t in durable.prepared_txs.items() if h in hashes}

    def _commit_block(self, action: CommitBlock) -> None:
        ledger = self.durable.ledger
        entry = ledger.pending.get(action.block_hash)
        if entry is None:
            problem = "the block was never executed here (or EnteredView voided it)"
        elif entry[0] != action.height or action.height != ledger.height + 1:
            problem = f"a block of height {entry[0]} on a ledger at {ledger.height}"
        elif entry[1] != ledger.committed[-1]:
            problem = "its parent is not the last committed block"
        else:
            problem = certificate_problem(
                self.verifier,
                self.config.validator_count,
                action.height,
                action.block_hash,
                action.signatures,
            )
        if problem is not None or entry is None:
            self._contract_error(f"{describe(action)}: {problem}")
            return
        txs = ledger.commit(action.height, action.block_hash)
        self._record_committed(
            CommittedBlock(action.height, action.block_hash, entry[1], txs, action.signatures)
        )

    def _record_committed(self, block: CommittedBlock) -> None:
        durable = self.durable
        durable.blocks.append(block)
        durable.block_by_hash[block.block_hash] = block
        for tx in block.txs:
            durable.mempool.pop(tx, None)
        pending = durable.ledger.pending
        for stale in [h for h, entry in pending.items() if entry[0] <= block.height]:
            del pending[stale]

    def _fetch_blocks(self, action: FetchBlocks) -> None:
        self.statistics.fetch_blocks += 1
        # As the real node does: a block this node executed itself, proven committed by a
        # certificate the replica saw, is committed without asking anyone.
        for height, block_hash, signatures in sorted(action.proven):
            ledger = self.durable.ledger
            if height == ledger.height + 1 and block_hash in ledger.pending:
                self._commit_block(CommitBlock(height, block_hash, signatures))
        delay_ms = self.environment.rng.randint(FETCH_DELAY_MS_MIN, FETCH_DELAY_MS_MAX)
        self._schedule(delay_ms, BlocksDue(action.target_height, action.peers, action.proven))

    def _fetch_proposal(self, action: FetchProposal) -> None:
        self.statistics.fetch_proposals += 1
        delay_ms = self.environment.rng.randint(FETCH_DELAY_MS_MIN, FETCH_DELAY_MS_MAX)
        self._schedule(delay_ms, ProposalDue(action.block_hash, action.peers, 0))

    def _entered_view(self, action: EnteredView) -> None:
        self.statistics.views_entered += 1
        pending = self.durable.ledger.pending
        for void in [h for h, entry in pending.items() if entry[0] > action.committed_height]:
            del pending[void]  # their transactions are eligible for batches again

    def _suspect(self, action: Suspect) -> None:
        key = (action.peer, action.code)
        self.statistics.suspicions[key] = self.statistics.suspicions.get(key, 0) + 1

    def _contract_error(self, text: str) -> None:
        if self.honest:
            raise NodeContractError(f"replica {self.index}: {text}")

    # --- state transfer, proposal lookup, mempool ------------------------------------------

    def _catch_up(self, due: BlocksDue) -> None:
        """Commit proven blocks executed here, fetch the rest from peers, until stuck."""
        while self.durable.height < due.target_height:
            before = self.durable.height
            self._commit_proven(due.proven)
            self._transfer_blocks(due.target_height, due.peers)
            if self.durable.height == before:
                return

    def _commit_proven(
        self, proven: tuple[tuple[int, bytes, tuple[tuple[int, bytes], ...]], ...]
    ) -> None:
        """The next block, if this node executed it and the replica saw its certificate."""
        ledger = self.durable.ledger
        for height, block_hash, signatures in proven:
            entry = ledger.pending.get(block_hash)
            if height != ledger.height + 1 or entry is None or entry[1] != ledger.committed[-1]:
                continue
            problem = certificate_problem(
                self.verifier, self.config.validator_count, height, block_hash, signatures
            )
            if problem is not None:
                self._contract_error(f"FetchBlocks proves block {height} wrongly: {problem}")
                return
            txs = ledger.commit(height, block_hash)
            self._record_committed(CommittedBlock(height, block_hash, entry[1], txs, signatures))

    def _transfer_blocks(self, target_height: int, peers: tuple[int, ...]) -> None:
        """Copy certified blocks up to `target_height`, asked peers first, then any peer."""
        others = tuple(p for p in range(self.config.validator_count) if p not in peers)
        for peer in peers + others:
            if self.durable.height >= target_height:
                return
            source = self._serving_peer(peer)
            if source is not None:
                self._copy_blocks_from(source, target_height)

    def _serving_peer(self, peer: int) -> SimNode | None:
        """A peer that answers fetches: up, reachable and honest (a Byzantine one stays mute)."""
        if peer == self.index or not self.environment.reachable(self.index, peer):
            return None
        source = self.environment.node(peer)
        return source if source.up and source.honest else None

    def _copy_blocks_from(self, source: SimNode, target_height: int) -> None:
        durable = self.durable
        last = min(target_height, source.durable.height)
        for block in source.durable.blocks[durable.height : last]:
            problem = certificate_problem(
                self.verifier,
                self.config.validator_count,
                block.height,
                block.block_hash,
                block.signatures,
            )
            if problem is None and block.parent_hash != durable.ledger.committed[-1]:
                problem = "does not extend our chain"
            if problem is None and self._unsigned_problem(block.txs) is not None:
                problem = "carries an unsigned transaction"
            if problem is not None:
                self._contract_error(
                    f"state transfer from {source.index}: block {block.height} {problem}"
                )
                return
            durable.ledger.pending.pop(block.block_hash, None)
            durable.ledger.committed.append(block.block_hash)
            for tx in block.txs:
                durable.ledger.committed_txs[tx] = block.height
            self._record_committed(block)
            self.statistics.fetched_blocks += 1

    def _on_proposal_due(self, due: ProposalDue) -> None:
        txs = self._lookup_block_txs(due.block_hash, due.peers)
        if txs is not None:
            self._handle(ProposalFetched(due.block_hash, txs))
        elif due.attempt + 1 < PROPOSAL_FETCH_ATTEMPTS_MAX:
            retry = ProposalDue(due.block_hash, due.peers, due.attempt + 1)
            self._schedule(PROPOSAL_FETCH_RETRY_MS, retry)

    def _lookup_block_txs(
        self, block_hash: bytes, peers: tuple[int, ...]
    ) -> tuple[bytes, ...] | None:
        found = self.known_block_txs(block_hash)
        for peer in peers:
            if found is not None:
                return found
            source = self._serving_peer(peer)
            if source is not None:
                found = source.known_block_txs(block_hash)
        return found

    def known_block_txs(self, block_hash: bytes) -> tuple[bytes, ...] | None:
        """The transactions of a block this node executed, persisted or committed."""
        txs = self.block_txs.get(block_hash)
        if txs is None and block_hash in self.durable.block_by_hash:
            txs = self.durable.block_by_hash[block_hash].txs
        return txs

    def _accept(self, txs: tuple[bytes, ...]) -> None:
        durable = self.durable
        for tx in txs:
            if self.members.signed(tx) and tx not in durable.ledger.committed_txs:
                durable.mempool[tx] = None

    def _announce_height(self) -> None:
        """As the real node does every few seconds; a Byzantine node may lie."""
        height: int | None = self.durable.height
        if self.adversary is not None:
            height = self.adversary.announced_height(self.durable.height)
        if height is None:
            return
        for peer in range(self.config.validator_count):
            if peer != self.index:
                self.environment.transmit(self.index, peer, HeightAnnouncement(height))

    def _relay(self, txs: tuple[bytes, ...] | None = None) -> None:
        """Pass `txs` on (a new submission), or, on the periodic tick, the next slice of
        the mempool (round robin, so no transaction waits behind `RELAY_TXS_MAX` others)."""
        if self.adversary is not None:
            if txs is None:
                self.adversary.on_tick(self)
            if not self.adversary.relays:
                return
        if txs is None:
            pending = tuple(self.durable.mempool)
            if len(pending) > RELAY_TXS_MAX:
                start = self.relay_cursor % len(pending)
                pending = (pending[start:] + pending[:start])[:RELAY_TXS_MAX]
                self.relay_cursor = start + RELAY_TXS_MAX
            txs = pending
        if not txs:
            return
        for peer in range(self.config.validator_count):
            if peer != self.index:
                self.environment.transmit(self.index, peer, TxRelay(txs))


_ACTION_HANDLERS: Final[dict[type, Callable[[SimNode, Action], None]]] = {
    Broadcast: SimNode._broadcast,  # type: ignore[dict-item]
    Send: SimNode._send,  # type: ignore[dict-item]
    SetTimer: SimNode._set_timer,  # type: ignore[dict-item]
    CancelTimer: SimNode._cancel_timer,  # type: ignore[dict-item]
    RequestBatch: SimNode._request_batch,  # type: ignore[dict-item]
    ExecuteProposal: SimNode._execute_proposal,  # type: ignore[dict-item]
    PersistVote: SimNode._persist_vote,  # type: ignore[dict-item]
    CommitBlock: SimNode._commit_block,  # type: ignore[dict-item]
    FetchBlocks: SimNode._fetch_blocks,  # type: ignore[dict-item]
    FetchProposal: SimNode._fetch_proposal,  # type: ignore[dict-item]
    EnteredView: SimNode._entered_view,  # type: ignore[dict-item]
    Suspect: SimNode._suspect,  # type: ignore[dict-item]
}
