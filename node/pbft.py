"""The PBFT driver: runs a `consensus.Replica` inside the node and carries out its actions.

It is the only place where the sans-I/O replica meets the world: peer messages are decoded
at the edge into consensus messages, timers become asyncio timers, `ExecuteProposal` runs
the ledger's build/check path, `PersistVote` is a synced LevelDB write, and `CommitBlock`
persists the block before waiting clients and subscribers are told.

The driver hands work to three lanes and does not wait for them, so the execution of the
next height overlaps the disk writes of this one (docs/performance.md, round 5):
- executions run one at a time on the execution thread; each result comes back as a
  later event, as the replica's contract allows (the simulator does the same);
- vote and block writes run in order on the commit thread (node/commit_queue.py);
- outgoing messages leave in order, each only once every vote persisted before it is on
  disk, so a vote is never seen before it is durable (a checkpoint also waits for its
  block).
State transfer and view changes first wait for all three to be done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

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
    PeerConnected,
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
from consensus.messages import (
    MESSAGE_TYPES,
    Checkpoint,
    MessageFormatError,
    from_wire,
    to_wire,
)
from consensus.quorum import commit_vote_payload
from consensus.replica import Replica
from node.block import CommitCertificate, CommittedBlock, Receipt, sign_commit_vote
from node.clock import wall_clock_ms
from node.commit_queue import CommitQueue
from node.consensus_log import ConsensusLog
from node.crypto import DOMAIN_COMMIT, DOMAIN_P2P, DOMAIN_TX, SignatureCheck, SigningKey, verify
from node.errors import ChanceryError
from node.invariants import require
from node.ledger import Parent, Proposal, ProposalRejected
from node.p2p.transport import PeerTransport, TransportError
from node.relay import TransactionRelay
from node.services import NodeServices
from node.sync import BlockSync
from node.transaction import Transaction, decode_envelope, peek_tx_id

log = logging.getLogger(__name__)

EVENT_QUEUE_EVENTS_MAX: Final = 20_000
PROPOSAL_FETCH_TIMEOUT_S: Final = 5.0
PENDING_PROPOSALS_MAX: Final = 256
PROPOSAL_FETCH_ROUNDS_MAX: Final = 20
PROPOSAL_FETCH_RETRY_S: Final = 0.5
# Pending transactions are relayed again every so often, at most this many at a time.
RELAY_AGAIN_AFTER_S: Final = 5.0
RELAY_AGAIN_TXS_MAX: Final = 1024
# At start, how long to wait for peers before asking them whether we are behind.
START_CATCH_UP_WAIT_S: Final = 3.0
# Each node tells its peers its committed height this often and on every (re)connection,
# so a replica back from a partition learns it is behind even when the network is quiet.
HEIGHT_ANNOUNCE_INTERVAL_S: Final = 2.0
# After a state transfer that got nothing, wait this long before the next may start.
SYNC_NO_PROGRESS_PAUSE_S: Final = 0.5
HEIGHT_MESSAGE_FIELDS: Final = frozenset({"type", "height"})


class Ed25519Authenticator:
    """`consensus.auth.Authenticator` with the validator keys from genesis."""

    def __init__(self, key: SigningKey, chain_id: str, validator_keys: Sequence[bytes]) -> None:
        self.key = key
        self.chain_id = chain_id
        self.validator_keys = tuple(validator_keys)

    def sign(self, payload: bytes) -> bytes:
        return self.key.sign(DOMAIN_P2P, payload)

    def sign_commit_vote(self, height: int, block_hash: bytes) -> bytes:
        return sign_commit_vote(self.key, self.chain_id, height, block_hash)

    def verify(self, signer: int, payload: bytes, signature: bytes) -> bool:
        if not 0 <= signer < len(self.validator_keys):
            return False
        return verify(self.validator_keys[signer], DOMAIN_P2P, payload, signature)

    def verify_commit_vote(self, signer: int, height: int, block_hash: bytes, vote: bytes) -> bool:
        if not 0 <= signer < len(self.validator_keys):
            return False
        payload = commit_vote_payload(self.chain_id, height, block_hash)
        return verify(self.validator_keys[signer], DOMAIN_COMMIT, payload, vote)


def replica_config(services: NodeServices) -> ReplicaConfig:
    consensus = services.config.consensus
    return ReplicaConfig(
        chain_id=services.genesis.chain_id,
        validator_count=len(services.genesis.validators),
        index=services.identity.index,
        window_blocks=consensus.window_blocks,
        checkpoint_interval_blocks=consensus.checkpoint_interval_blocks,
        view_timeout_ms=consensus.view_timeout_ms,
    )


class ConsensusDriver:
    """One replica, its event queue, and the node operations behind its actions."""

    def __init__(
        self,
        services: NodeServices,
        transport: PeerTransport,
        sync: BlockSync,
        commit_thread: ThreadPoolExecutor,
        execution_thread: ThreadPoolExecutor,
    ) -> None:
        self.services = services
        self.transport = transport
        self.sync = sync
        self.log = ConsensusLog(services.store)
        auth = Ed25519Authenticator(
            services.key, services.genesis.chain_id, services.genesis.validator_keys
        )
        self.replica = Replica(replica_config(services), auth, self.log.recover())
        self.chain_id = services.genesis.chain_id
        # Unbounded as a queue: `post` bounds what comes from outside, while the answers
        # to the driver's own actions (an execution's result) are never dropped.
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self._internal: deque[Event] = deque()
        self.pending: dict[bytes, Proposal] = {}
        self.batches: dict[int, list[Transaction]] = {}
        self._timers: dict[TimerKind, asyncio.TimerHandle] = {}
        self._batch_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._execution_thread = execution_thread
        self._commits = CommitQueue(commit_thread, self._fail)
        self._executions: set[asyncio.Task[None]] = set()
        # The last synced write of votes, and the chain of messages waiting for writes.
        self._votes_written: asyncio.Future[None] | None = None
        self._outbox: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()
        self.relay: TransactionRelay | None = None  # set by the runner
        # Test-only: a Byzantine build rewrites this node's outgoing actions (node.byzantine).
        self.action_filter: Callable[[list[Action]], list[Action]] | None = None
        for kind in MESSAGE_TYPES:
            transport.subscribe(kind, self._on_peer_message)
        transport.subscribe("height", self._on_peer_height)
        transport.on_request("get_proposal", self._serve_proposal)
        transport.on_connection_change(self._on_connection_change)
        sync.on_applied = self._on_blocks_applied
        self._update_status()

    # --- the event loop --------------------------------------------------------------------

    async def run(self) -> None:
        """Process events for ever, one at a time; actions are carried out in order."""
        self._spawn(self._watch_pending_requests())
        self._spawn(self._relay_again_while_pending())
        self._spawn(self._announce_height())
        await self._carry_out(self.replica.start())
        await self._catch_up_at_start()
        while True:
            await self._feed(await self._next_event())

    async def _next_event(self) -> Event:
        """The next queued event; raises at once if an execution or a write has failed."""
        if self.events.empty() and self._failure is None:
            getter = asyncio.ensure_future(self.events.get())
            failed = asyncio.ensure_future(self._failed.wait())
            await asyncio.wait((getter, failed), return_when=asyncio.FIRST_COMPLETED)
            failed.cancel()
            if not getter.done():
                getter.cancel()
                await asyncio.gather(getter, return_exceptions=True)
            elif self._failure is None:
                return getter.result()
            else:  # raised below; the event is not lost, the node stops
                self.events.put_nowait(getter.result())
        if self._failure is not None:
            raise self._failure  # a block that cannot be executed or written: crash loudly
        return self.events.get_nowait()

    def _fail(self, error: BaseException) -> None:
        if self._failure is None:
            self._failure = error
            self._failed.set()

    async def _feed(self, event: Event) -> None:
        self._internal.append(event)
        while self._internal:
            actions = self.replica.handle(self._internal.popleft())
            await self._carry_out(actions)
        self._update_status()

    def post(self, event: Event) -> None:
        """Queue an event from the outside (peer message, timer, batch); drop when full."""
        if self.events.qsize() >= EVENT_QUEUE_EVENTS_MAX:
            self.services.metrics.consensus_events_dropped.inc()
            return
        self.events.put_nowait(event)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        tasks = [
            *self._tasks,
            *self._executions,
            *([self._batch_task] if self._batch_task else []),
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Blocks already handed to the commit thread are final: let them reach the disk
        # before the store closes.
        with contextlib.suppress(Exception):
            await self._commits.drain()

    # --- actions ---------------------------------------------------------------------------

    async def _carry_out(self, actions: list[Action]) -> None:
        if self.action_filter is not None:
            actions = self.action_filter(actions)
        votes: list[PersistVote] = []
        for action in actions:
            # Consecutive votes are persisted together (one fsync). The driver does not wait
            # for the write: what could let a vote be seen (a message) waits for it instead.
            if isinstance(action, PersistVote):
                votes.append(action)
                continue
            if votes:
                self._persist(votes)
                votes = []
            await self._carry_out_one(action)
        if votes:
            self._persist(votes)

    def _persist(self, votes: list[PersistVote]) -> None:
        records = []
        for vote in votes:
            if vote.kind == "view" and vote.in_view_change:
                log.warning("view change to view %d at height %d", vote.view, vote.height)
            proposal = self.pending.get(vote.block_hash) if vote.kind == "prepared" else None
            txs = () if proposal is None else tuple(tx.envelope for tx in proposal.transactions)
            records.append((vote, txs))
        self._votes_written = self._commits.submit(lambda: self.log.persist(records))

    async def _carry_out_one(self, action: Action) -> None:
        if isinstance(action, Broadcast):
            wire = to_wire(action.message, self.chain_id)
            # A checkpoint tells peers this node holds the block, so it waits for the block.
            barrier = self._commits.tail if isinstance(action.message, Checkpoint) else None
            self._send_when_durable(lambda: self.transport.broadcast(wire), barrier)
        elif isinstance(action, Send):
            wire, peer = to_wire(action.message, self.chain_id), action.peer
            self._send_when_durable(lambda: self.transport.send(peer, wire))
        elif isinstance(action, SetTimer):
            self._set_timer(action.kind, action.delay_ms)
        elif isinstance(action, CancelTimer):
            handle = self._timers.pop(action.kind, None)
            if handle is not None:
                handle.cancel()
        elif isinstance(action, RequestBatch):
            self._request_batch(action.height)
        elif isinstance(action, ExecuteProposal):
            self._start_execution(action)
        elif isinstance(action, CommitBlock):
            self._commit(action)
        elif isinstance(action, FetchBlocks):
            await self._drain()
            log.info("fetching blocks up to %d from %s", action.target_height, action.peers)
            self._internal.append(await self._fetch_blocks(action))
        elif isinstance(action, FetchProposal):
            log.info("fetching proposal %s from %s", action.block_hash.hex()[:16], action.peers)
            self._spawn(self._fetch_proposal(action))
        elif isinstance(action, EnteredView):
            # The old view's speculative blocks go back to the mempool: blocks already
            # committed must be out of it first.
            await self._drain()
            self._entered_view(action)
        elif isinstance(action, Suspect):
            self.services.metrics.peer_suspicions.labels(
                peer=str(action.peer), code=action.code
            ).inc()

    def _send_when_durable(
        self, send: Callable[[], None], barrier: asyncio.Future[None] | None = None
    ) -> None:
        """Send now if every vote persisted so far is on disk (and `barrier` is done),
        else once they are; messages leave in the order the replica sent them."""
        if barrier is None:
            barrier = self._votes_written
        if self._outbox is None and (barrier is None or barrier.done()):
            send()
            return
        self._outbox = asyncio.ensure_future(self._send_later(self._outbox, barrier, send))
        self._outbox.add_done_callback(self._outbox_done)

    async def _send_later(
        self,
        previous: asyncio.Future[None] | None,
        barrier: asyncio.Future[None] | None,
        send: Callable[[], None],
    ) -> None:
        try:
            if previous is not None:
                await previous
            if barrier is not None:
                await barrier
            send()
        finally:
            # The last send clears the outbox as it ends, not in a done callback a loop
            # turn later: `_outbox` is never a finished send, which a drain would await
            # without yielding, for ever (a node silent after a view change).
            if self._outbox is asyncio.current_task():
                self._outbox = None

    def _outbox_done(self, task: asyncio.Future[None]) -> None:
        if task is self._outbox:  # cancelled before it ever ran
            self._outbox = None
        if not task.cancelled() and (error := task.exception()) is not None:
            self._fail(error)

    async def _drain(self) -> None:
        """Wait for every execution, write and send under way (before the store or the
        pending blocks are changed under them)."""
        while self._executions:
            await asyncio.gather(*self._executions)
        await self._commits.drain()
        while self._outbox is not None:
            await self._outbox

    async def _run_in_execution_thread(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            self._execution_thread, function, *args
        )

    def _set_timer(self, kind: TimerKind, delay_ms: int) -> None:
        previous = self._timers.pop(kind, None)
        if previous is not None:
            previous.cancel()
        loop = asyncio.get_running_loop()
        self._timers[kind] = loop.call_later(delay_ms / 1000, self.post, TimerFired(kind))

    # --- batches (primary) -----------------------------------------------------------------

    def _request_batch(self, height: int) -> None:
        if self._batch_task is not None:
            self._batch_task.cancel()
        self._batch_task = asyncio.ensure_future(self._cut_batch(height))

    async def _cut_batch(self, height: int) -> None:
        """Wait for transactions, then up to `batch_interval_ms` to fill the block."""
        mempool = self.services.mempool
        params = self.services.genesis.params
        await mempool.wait_not_empty()
        consensus = self.services.config.consensus
        txs_max = min(params.max_block_txs, consensus.batch_txs_max)
        if mempool.queued_count < txs_max and consensus.batch_interval_ms > 0:
            await asyncio.sleep(consensus.batch_interval_ms / 1000)
        batch = mempool.take_batch(txs_max, params.max_block_bytes)
        self.batches = {height: batch}
        self.post(BatchReady(height, tuple(tx.envelope for tx in batch)))

    # --- execution -------------------------------------------------------------------------

    def _parent(self, parent_hash: bytes) -> Parent | None:
        # The pending proposal first: a block being written stays pending until its write
        # returned, while the store's tip fields may be half updated.
        store = self.services.store
        proposal = self.pending.get(parent_hash)
        if proposal is not None:
            return proposal.as_parent(store)
        if parent_hash == store.last_block_hash:
            return self.services.ledger.tip()
        return None

    def _start_execution(self, action: ExecuteProposal) -> None:
        """Execute on the execution thread while the driver goes on; the result comes back
        as a later event, as the replica's contract allows (consensus/events.py)."""
        task = asyncio.ensure_future(self._execute_and_report(action))
        self._executions.add(task)
        task.add_done_callback(self._execution_done)

    async def _execute_and_report(self, action: ExecuteProposal) -> None:
        self.events.put_nowait(await self._execute(action))

    def _execution_done(self, task: asyncio.Task[None]) -> None:
        self._executions.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self._fail(error)

    async def _execute(self, action: ExecuteProposal) -> ExecutionResult:
        parent = self._parent(action.parent_hash)
        if parent is None or parent.height != action.height - 1:
            return ExecutionResult(action.view, action.height, False, reason="local.unknown_parent")
        try:
            if action.header is None:
                proposal = await self._build(action, parent)
            else:
                proposal = await self._check(action, parent)
        except ProposalRejected as rejected:
            return ExecutionResult(action.view, action.height, False, reason=rejected.code)
        if len(self.pending) >= PENDING_PROPOSALS_MAX:
            self._prune_pending(self.services.store.height)
        self.pending[proposal.block_hash] = proposal
        return ExecutionResult(
            action.view,
            action.height,
            True,
            proposal.block_hash,
            action.parent_hash,
            proposal.header_bytes,
            tuple(tx.envelope for tx in proposal.transactions),
        )

    async def _build(self, action: ExecuteProposal, parent: Parent) -> Proposal:
        store = self.services.store
        batch = [
            tx
            for tx in self.batches.pop(action.height, [])
            if not parent.has_pending_tx(tx.tx_id) and not store.has_tx(tx.tx_id)
        ]
        if not batch:
            raise ProposalRejected("local.empty_batch", "every transaction is already in a block")
        ledger = self.services.ledger
        return await self._run_in_execution_thread(
            ledger.build_proposal,
            parent,
            batch,
            wall_clock_ms(),
            self.services.identity.index,
            action.view,
        )

    async def _check(self, action: ExecuteProposal, parent: Parent) -> Proposal:
        """Re-execute a proposal: its transactions' signatures, header and every root."""
        header = action.header
        assert header is not None
        transactions = await self._decode_proposed(action.txs)
        proposal: Proposal = await self._run_in_execution_thread(
            self.services.ledger.check_proposal, header, transactions, parent, wall_clock_ms()
        )
        expected = (
            action.expected_block_hash,
            action.expected_proposer,
            action.expected_header_view,
        )
        if action.expected_block_hash not in (None, proposal.block_hash):
            raise ProposalRejected("proposal.hash", "header does not hash to the block hash")
        if expected[1] is not None and proposal.header.proposer != expected[1]:
            raise ProposalRejected("proposal.proposer", "header names another proposer")
        if expected[2] is not None and proposal.header.view != expected[2]:
            raise ProposalRejected("proposal.view", "header names another view")
        return proposal

    async def _decode_proposed(self, envelopes: Sequence[bytes]) -> list[Transaction]:
        """Envelopes -> transactions; reuse verified mempool entries, verify the rest."""
        tx_ids = [peek_tx_id(envelope) for envelope in envelopes]
        known = [self._mempool_copy(e, t) for e, t in zip(envelopes, tx_ids, strict=True)]
        if any(tx is None for tx in known):
            # Some are still being admitted from a peer's relay: take them from there.
            await self.services.admission.admissions_under_way()
            known = [
                tx if tx is not None else self._mempool_copy(e, t)
                for tx, e, t in zip(known, envelopes, tx_ids, strict=True)
            ]
        decoded: list[Transaction] = []
        unverified: list[Transaction] = []
        for envelope, tx in zip(envelopes, known, strict=True):
            if tx is None:
                try:
                    tx = decode_envelope(envelope)
                except ChanceryError as error:
                    raise ProposalRejected("proposal.malformed_tx", error.message) from None
                unverified.append(tx)
            decoded.append(tx)
        checks = [
            SignatureCheck(tx.signer, DOMAIN_TX, tx.body_bytes, tx.signature) for tx in unverified
        ]
        if not all(await self.services.verifier.verify_many(checks)):
            raise ProposalRejected("proposal.bad_tx_signature", "a transaction signature fails")
        return decoded

    def _mempool_copy(self, envelope: bytes, tx_id: bytes | None) -> Transaction | None:
        """The mempool's verified copy of `envelope`, if it holds exactly that one."""
        tx = self.services.mempool.get(tx_id) if tx_id is not None else None
        return tx if tx is not None and tx.envelope == envelope else None

    # --- commit ----------------------------------------------------------------------------

    def _commit(self, action: CommitBlock) -> None:
        """Hand the block to the commit thread and go on (node/commit_queue.py).

        The proposal stays pending, as the parent of the next height, until the write has
        returned; `_after_commit` prunes it.
        """
        proposal = self.pending.get(action.block_hash)
        require(proposal is not None, f"commit of block {action.block_hash.hex()} never executed")
        assert proposal is not None
        certificate = CommitCertificate(action.block_hash, action.height, action.signatures)
        started = time.monotonic()
        self._commits.submit(
            lambda: self._commit_and_forget(proposal, certificate),
            lambda block: self._after_commit([(block, proposal.output.receipts)], started),
        )

    def _commit_and_forget(
        self, proposal: Proposal, certificate: CommitCertificate
    ) -> CommittedBlock:
        block = self.services.ledger.commit(proposal, certificate)
        self.log.forget_prepared(block.height)
        return block

    def _after_commit(
        self, committed: list[tuple[CommittedBlock, tuple[Receipt, ...]]], started: float
    ) -> None:
        """The blocks are durable: update the mempool and metrics, then tell everyone."""
        services = self.services
        metrics = services.metrics
        now = time.monotonic()
        for block, receipts in committed:
            for tx_id in block.tx_ids:
                admitted = services.mempool.admitted_at_s.get(tx_id)
                if admitted is not None:
                    metrics.commit_latency.observe(now - admitted)
            services.mempool.remove_committed(block.tx_ids)
            metrics.block_height.set(block.height)
            metrics.committed_txs.inc(len(block.tx_ids))
            metrics.failed_txs.inc(sum(1 for receipt in receipts if not receipt.ok))
            metrics.block_txs.observe(len(block.tx_ids))
            services.notifier.publish(block, receipts)
        metrics.block_commit_seconds.observe(now - started)
        self._prune_pending(services.store.height)

    def _prune_pending(self, committed_height: int) -> None:
        self.pending = {h: p for h, p in self.pending.items() if p.height > committed_height}

    # --- state transfer and proposals from peers -------------------------------------------

    async def _fetch_blocks(self, action: FetchBlocks) -> BlocksFetched:
        await self._commit_proven(action)
        before = self.services.store.height
        if before < action.target_height:
            peers = list(action.peers) or sorted(self.transport.connected_peers())
            await self._sync(action.target_height, peers)
            if self.services.store.height == before:
                # Nobody could serve: the replica will ask again at once; do not let that
                # become a loop hammering the peers.
                await asyncio.sleep(SYNC_NO_PROGRESS_PAUSE_S)
        return self._synced_to()

    async def _sync(self, target_height: int | None, peers: Sequence[int]) -> None:
        """State transfer up to `target_height` (None: as far as the peers have blocks)."""
        await self._drain()
        status = self.services.consensus
        status.syncing = True
        self._update_status()
        try:
            await self.sync.catch_up(target_height, peers)
        except (TransportError, ProposalRejected) as exc:
            log.warning("state transfer stopped: %s", exc)
        finally:
            status.syncing = False

    def _synced_to(self) -> BlocksFetched:
        store = self.services.store
        summary = store.get_block_summary(store.height)
        signatures = summary[3].signatures if summary is not None else ()
        return BlocksFetched(store.height, store.last_block_hash, signatures)

    async def _commit_proven(self, action: FetchBlocks) -> None:
        """Commit blocks we executed ourselves whose certificates a VIEW-CHANGE proved."""
        for height, block_hash, signatures in sorted(action.proven):
            proposal = self.pending.get(block_hash)
            if height != self.services.store.height + 1 or proposal is None:
                continue
            self._commit(CommitBlock(height, block_hash, signatures))
            await self._drain()

    def _on_blocks_applied(self, blocks: Sequence[CommittedBlock]) -> None:
        receipts = [tuple(Receipt.decode(r) for r in block.receipts) for block in blocks]
        self._after_commit(list(zip(blocks, receipts, strict=True)), time.monotonic())

    async def _catch_up_at_start(self) -> None:
        """A node that was down may be far behind an idle network that will never tell it:
        ask the peers it can reach for blocks before taking part."""
        peers = self.services.genesis.validators
        others = [v.index for v in peers if v.index != self.services.identity.index]
        if not others:
            return
        await self.transport.wait_until_connected(others, START_CATCH_UP_WAIT_S)
        connected = sorted(self.transport.connected_peers())
        if connected:
            log.info("catching up from %s before taking part", connected)
            await self._sync(None, connected)
            await self._feed(self._synced_to())
        log.info("at height %d, taking part in consensus", self.services.store.height)

    async def _fetch_proposal(self, action: FetchProposal) -> None:
        """Ask each peer in turn, a few rounds apart, until one has the block's txs."""
        request = {"type": "get_proposal", "block_hash": action.block_hash}
        for _ in range(PROPOSAL_FETCH_ROUNDS_MAX):
            for peer in action.peers:
                try:
                    answer = await self.transport.request(peer, request, PROPOSAL_FETCH_TIMEOUT_S)
                except TransportError:
                    continue
                txs = answer.get("txs")
                if isinstance(txs, list) and all(isinstance(tx, bytes) for tx in txs):
                    self.post(ProposalFetched(action.block_hash, tuple(txs)))
                    return
            await asyncio.sleep(PROPOSAL_FETCH_RETRY_S)

    async def _serve_proposal(self, peer: int, request: dict[str, Any]) -> dict[str, Any]:
        block_hash = request.get("block_hash")
        proposal = self.pending.get(block_hash) if isinstance(block_hash, bytes) else None
        if proposal is not None:
            return {"txs": [tx.envelope for tx in proposal.transactions]}
        known = self.replica.proposals.get(block_hash) if isinstance(block_hash, bytes) else None
        if known is not None:
            return {"txs": list(known.txs)}
        raise TransportError("p2p.not_found", "no such proposal here")

    # --- views, peers, status --------------------------------------------------------------

    def _entered_view(self, action: EnteredView) -> None:
        """Speculative blocks of the old view are void: their transactions go back."""
        self._prune_pending(10**18)
        self.batches.clear()
        if self._batch_task is not None:
            self._batch_task.cancel()
            self._batch_task = None
        self.services.mempool.requeue_all_proposed()
        self.services.metrics.view.set(action.view)
        if action.view > 0:
            self.services.metrics.view_changes.inc()
        log.info(
            "entered view %d (primary %d) at height %d",
            action.view,
            action.primary,
            action.committed_height,
        )

    def _on_peer_message(self, peer: int, raw: dict[str, Any]) -> None:
        try:
            message = from_wire(raw, self.chain_id)
        except MessageFormatError:
            self.services.metrics.peer_suspicions.labels(peer=str(peer), code="malformed").inc()
            return
        self.post(MessageReceived(peer, message))

    def _on_peer_height(self, peer: int, raw: dict[str, Any]) -> None:
        height = raw.get("height")
        if (
            raw.keys() != HEIGHT_MESSAGE_FIELDS
            or not isinstance(height, int)
            or isinstance(height, bool)
            or height < 0
        ):
            self.services.metrics.peer_suspicions.labels(peer=str(peer), code="malformed").inc()
            return
        self.post(PeerHeight(peer, height))

    def _height_message(self) -> dict[str, Any]:
        return {"type": "height", "height": self.services.store.height}

    async def _announce_height(self) -> None:
        while True:
            await asyncio.sleep(HEIGHT_ANNOUNCE_INTERVAL_S)
            self.transport.broadcast(self._height_message())

    def _on_connection_change(self, peer: int, connected: bool) -> None:
        peers = self.services.consensus.connected_peers
        if connected:
            peers.add(peer)
            self.transport.send(peer, self._height_message())
            self._relay_pending_to_latecomer()
            self.post(PeerConnected(peer))
        else:
            peers.discard(peer)
        self.services.metrics.peers_connected.set(len(peers))

    def _update_status(self) -> None:
        status = self.services.consensus
        status.view = self.replica.view
        status.primary = self.replica.primary

    async def _relay_again_while_pending(self) -> None:
        """Relay is best effort (a peer may be down or not yet connected): transactions still
        pending after a while go out again, so every validator ends up with them."""
        while True:
            await asyncio.sleep(RELAY_AGAIN_AFTER_S)
            stale = self.services.mempool.oldest_pending(RELAY_AGAIN_AFTER_S, RELAY_AGAIN_TXS_MAX)
            if stale and self.relay is not None:
                self.relay.relay([tx.envelope for tx in stale])

    def _relay_pending_to_latecomer(self) -> None:
        """What was relayed while a link was down never arrived: a peer that (re)connects
        gets the pending transactions now rather than at the next re-relay round, before a
        progress timer here can blame a primary that never saw them. (Relay broadcasts; the
        peers that hold them already refuse them by tx_id, before any signature check.)"""
        pending = self.services.mempool.oldest_pending(0.0, RELAY_AGAIN_TXS_MAX)
        if pending and self.relay is not None:
            self.relay.relay([tx.envelope for tx in pending])

    async def _watch_pending_requests(self) -> None:
        """Tell the replica when the mempool turns non-empty and when it drains."""
        mempool = self.services.mempool
        while True:
            await mempool.wait_not_empty()
            self.post(RequestsPending(True))
            await mempool.wait_empty()
            self.post(RequestsPending(False))


def commit_thread() -> ThreadPoolExecutor:
    """The one thread that writes votes and blocks, strictly in order."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")


def execution_thread() -> ThreadPoolExecutor:
    """The one thread that executes proposals, one at a time, while blocks below are
    being written on the commit thread."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="execute")
