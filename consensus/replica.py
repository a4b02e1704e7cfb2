"""The PBFT replica: a sans-I/O state machine. `handle(event)` returns the actions to take.

Normal case: the primary of view v (v mod n) proposes a block per height (PRE-PREPARE, with
its header's roots already computed); every replica re-executes it on its parent and, if
every root matches, votes PREPARE; 2f+1 PREPAREs make a prepared certificate and the
replica votes COMMIT; 2f+1 COMMITs of one view are the block's commit certificate. Up to
`window_blocks` heights are in flight, each executed on top of the one below.

View change: a replica whose pending work made no progress for the (backed-off) timeout,
or whose primary proposed garbage or two blocks for one height, sends VIEW-CHANGE for the
next view with its prepared certificates. It joins a higher view only on its own timeout
or on f+1 VIEW-CHANGEs, so one faulty node cannot drag the others along. The new primary
sends NEW-VIEW with 2f+1 VIEW-CHANGEs as proof and re-proposes every prepared block; the
backups recompute that plan from the proof and accept nothing else.

Safety rules kept here: one PREPARE and one COMMIT per (height, view), persisted before
they are sent; COMMIT at a height only after COMMIT (or commit) at the height below;
blocks are committed strictly in height order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum

from consensus.auth import Authenticator
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
    Checkpoint,
    Commit,
    ConsensusMessage,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    ViewChange,
    signing_payload,
)
from consensus.view_change import NewViewPlan, plan_new_view, view_change_problem

BACKOFF_DOUBLINGS_MAX = 6
RECENT_COMMITTED_MAX = 256


class Phase(Enum):
    NORMAL = "normal"
    VIEW_CHANGE = "view_change"


@dataclass(frozen=True, slots=True)
class RecoveredState:
    """What a replica persisted before a crash (the node reads it back from LevelDB)."""

    view: int = 0
    in_view_change: bool = False
    committed_height: int = 0
    committed_hash: bytes = b""
    committed_signatures: tuple[tuple[int, bytes], ...] = ()
    votes: dict[tuple[int, int, str], bytes] = field(default_factory=dict)
    prepared: dict[int, PreparedCertificate] = field(default_factory=dict)
    # The transactions of each prepared block: a NEW-VIEW may have to re-propose it, and
    # after a crash this replica may be the only one left that has them.
    prepared_txs: dict[bytes, tuple[bytes, ...]] = field(default_factory=dict)


@dataclass
class Slot:
    """One height in the current view."""

    pre_prepare: PrePrepare | None = None
    reproposal: bool = False
    executing: bool = False
    executed_hash: bytes | None = None
    prepares: dict[bytes, dict[int, Prepare]] = field(default_factory=dict)
    commits: dict[bytes, dict[int, Commit]] = field(default_factory=dict)
    sent_commit: bool = False
    fetching: bool = False


class Replica:
    """One validator's consensus state. Single owner: only `handle` changes it."""

    def __init__(
        self, config: ReplicaConfig, auth: Authenticator, recovered: RecoveredState
    ) -> None:
        self.config = config
        self.auth = auth
        self.view = recovered.view
        self.phase = Phase.VIEW_CHANGE if recovered.in_view_change else Phase.NORMAL
        self.committed_height = recovered.committed_height
        self.committed_hash = recovered.committed_hash
        self.committed_signatures = recovered.committed_signatures
        self.votes: dict[tuple[int, int, str], bytes] = dict(recovered.votes)
        self.prepared: dict[int, PreparedCertificate] = {
            h: c for h, c in recovered.prepared.items() if h > self.committed_height
        }
        self.slots: dict[int, Slot] = {}
        # Hashes of the last committed heights: to vote for re-proposals of them.
        self.recent_committed: dict[int, bytes] = {
            recovered.committed_height: recovered.committed_hash
        }
        self.proposals: dict[bytes, PrePrepare] = {
            certificate.block_hash: PrePrepare(
                certificate.view,
                certificate.height,
                certificate.block_hash,
                certificate.parent_hash,
                certificate.header,
                recovered.prepared_txs[certificate.block_hash],
                config.primary(certificate.view),
            )
            for certificate in self.prepared.values()
            if certificate.block_hash in recovered.prepared_txs
        }
        self.view_changes: dict[int, dict[int, ViewChange]] = {}
        self.checkpoints: dict[int, dict[bytes, set[int]]] = {}
        self.stable_checkpoint = 0
        self.future: list[tuple[int, ConsensusMessage]] = []
        self.far_ahead: dict[int, int] = {}
        self.peer_heights: dict[int, int] = {}  # the committed height each peer last claimed
        self.last_height_fetch: tuple[int, int] | None = None  # (from, to) of the last fetch
        self.ahead: list[PrePrepare | Prepare | Commit] = []
        self.commits_elsewhere: dict[tuple[int, bytes], set[int]] = {}
        self.pending_requests = False
        self.consecutive_view_changes = 1 if recovered.in_view_change else 0
        self.progress_timer_armed = False
        self.batch_requested_for: int | None = None
        self.own_proposal_for: int | None = None
        self.syncing = False
        self.pending_new_view: tuple[NewViewPlan, tuple[PrePrepare, ...]] | None = None
        self.fetching_proposals: set[bytes] = set()
        self.last_new_view: NewView | None = None
        self._actions: list[Action] = []

    # --- entry points --------------------------------------------------------------------

    @property
    def primary(self) -> int:
        return self.config.primary(self.view)

    @property
    def is_primary(self) -> bool:
        return self.primary == self.config.index

    @property
    def active(self) -> bool:
        return self.phase is Phase.NORMAL

    def start(self) -> list[Action]:
        """The first actions after construction (or recovery)."""
        if self.phase is Phase.VIEW_CHANGE:
            self._send_view_change()
        else:
            self._maybe_propose()
        return self._take()

    def handle(self, event: Event) -> list[Action]:
        """Apply one event; return the actions to carry out, in order."""
        handler = self._event_handlers()[type(event)]
        handler(event)
        self._update_progress_timer()
        return self._take()

    def _event_handlers(self) -> dict[type, Callable]:  # type: ignore[type-arg]
        return {
            MessageReceived: self._on_message_received,
            TimerFired: self._on_timer,
            BatchReady: self._on_batch_ready,
            ExecutionResult: self._on_execution_result,
            ProposalFetched: self._on_proposal_fetched,
            BlocksFetched: self._on_blocks_fetched,
            RequestsPending: self._on_requests_pending,
            PeerConnected: self._on_peer_connected,
            PeerHeight: self._on_peer_height,
        }

    def _take(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    def _emit(self, action: Action) -> None:
        self._actions.append(action)

    def _sign(self, message: ConsensusMessage) -> ConsensusMessage:
        signature = self.auth.sign(signing_payload(message, self.config.chain_id))
        return replace(message, signature=signature)  # type: ignore[type-var]

    def _suspect(self, peer: int, code: str) -> None:
        self._emit(Suspect(peer, code))

    # --- messages ------------------------------------------------------------------------

    def _on_message_received(self, event: MessageReceived) -> None:
        message = event.message
        # A NEW-VIEW may come from any replica helping a latecomer: it is signed by the
        # primary that made it. Everything else comes straight from its sender.
        relayed_ok = isinstance(message, NewView)
        if (message.sender != event.peer and not relayed_ok) or not (
            0 <= message.sender < self.config.validator_count
        ):
            self._suspect(event.peer, "sender_mismatch")
            return
        if message.sender == self.config.index:
            return
        payload = signing_payload(message, self.config.chain_id)
        if not self.auth.verify(message.sender, payload, message.signature):
            self._suspect(event.peer, "bad_signature")
            return
        self._dispatch(message)

    def _dispatch(self, message: ConsensusMessage) -> None:
        if isinstance(message, PrePrepare):
            self._on_pre_prepare(message)
        elif isinstance(message, Prepare):
            self._on_prepare(message)
        elif isinstance(message, Commit):
            self._on_commit(message)
        elif isinstance(message, Checkpoint):
            self._on_checkpoint(message)
        elif isinstance(message, ViewChange):
            self._on_view_change(message)
        else:
            self._on_new_view(message)

    def _admit_view_message(self, message: PrePrepare | Prepare | Commit) -> Slot | None:
        """The slot a normal-case message belongs to, or None if it is not for now."""
        window_top = self.committed_height + self.config.window_blocks
        if message.height > window_top:
            if (
                message.view == self.view
                and message.height <= window_top + self.config.window_blocks
            ):
                # Just ahead: peers a few commits further on. Kept (bounded) and replayed as
                # our own commits advance; nothing would retransmit it.
                self._keep_ahead(message)
                return None
            # Whatever its view: f+1 peers this far ahead means we are behind.
            self._suspect(message.sender, "outside_window")
            self._note_far_ahead(message.sender, message.height)
            return None
        installing = not self.active or self.pending_new_view is not None
        if message.view > self.view or (message.view == self.view and installing):
            self._buffer_future(message)  # replayed once the view is installed
            return None
        if message.view < self.view or message.height <= self.committed_height:
            return None  # stale: normal under view changes and commits
        return self.slots.setdefault(message.height, Slot())

    def _keep_ahead(self, message: PrePrepare | Prepare | Commit) -> None:
        if len(self.ahead) >= self.config.future_messages_max:
            self.ahead.pop(0)
        self.ahead.append(message)

    def _replay_ahead(self) -> None:
        """Dispatch kept messages that now fall inside the window (of this view only)."""
        window_top = self.committed_height + self.config.window_blocks
        ready = [m for m in self.ahead if m.view == self.view and m.height <= window_top]
        self.ahead = [m for m in self.ahead if m.view == self.view and m.height > window_top]
        for message in ready:
            self._dispatch(message)

    def _buffer_future(self, message: ConsensusMessage) -> None:
        view = getattr(message, "view", self.view)
        if view > self.view + self.config.view_lookahead_max:
            self._suspect(message.sender, "view_too_far")
            return
        if len(self.future) >= self.config.future_messages_max:
            self.future.pop(0)
        self.future.append((view, message))
        self._join_if_peers_work_ahead()

    def _join_if_peers_work_ahead(self) -> None:
        """f+1 replicas voting in a higher view means an honest one is in it: ask to join.

        A replica that was down or cut off while the others changed view sends VIEW-CHANGE
        for that view; the replicas already in it answer with their NEW-VIEW.
        """
        senders_by_view: dict[int, set[int]] = {}
        for view, message in self.future:
            if view > self.view and not isinstance(message, ViewChange | NewView):
                senders_by_view.setdefault(view, set()).add(message.sender)
        joinable = [v for v, s in senders_by_view.items() if len(s) > self.config.faults_max]
        if joinable:
            self._start_view_change(max(joinable))

    def _on_pre_prepare(self, message: PrePrepare) -> None:
        if message.sender != self.config.primary(message.view):
            self._suspect(message.sender, "pre_prepare_not_primary")
            return
        slot = self._admit_view_message(message)
        if slot is None:
            return
        if slot.pre_prepare is not None:
            if slot.pre_prepare.block_hash != message.block_hash:
                self._suspect(message.sender, "equivocation")
                self._start_view_change(self.view + 1)
            return
        voted = self.votes.get((message.height, self.view, "prepare"))
        if voted is not None and voted != message.block_hash:
            return  # voted otherwise before a crash: never contradict a vote
        slot.pre_prepare = message
        self.proposals[message.block_hash] = message
        self._try_execute()

    def _on_prepare(self, message: Prepare) -> None:
        slot = self._admit_view_message(message)
        if slot is None:
            return
        if self._double_vote(slot.prepares, message.sender, message.block_hash):
            self._suspect(message.sender, "double_prepare")
            return
        slot.prepares.setdefault(message.block_hash, {})[message.sender] = message
        self._check_prepared(message.height)

    def _on_commit(self, message: Commit) -> None:
        if not self.auth.verify_commit_vote(
            message.sender, message.height, message.block_hash, message.vote
        ):
            self._suspect(message.sender, "bad_commit_vote")
            return
        if message.view != self.view or not self.active:
            self._note_commit_elsewhere(message)
        slot = self._admit_view_message(message)
        if slot is None:
            return
        if self._double_vote(slot.commits, message.sender, message.block_hash):
            self._suspect(message.sender, "double_commit")
            return
        slot.commits.setdefault(message.block_hash, {})[message.sender] = message
        self._check_committed()
        self._fetch_if_certified_elsewhere(message.height)

    @staticmethod
    def _double_vote(
        votes: dict[bytes, dict[int, Prepare]] | dict[bytes, dict[int, Commit]],
        sender: int,
        block_hash: bytes,
    ) -> bool:
        return any(sender in senders for other, senders in votes.items() if other != block_hash)

    # --- execution and voting ------------------------------------------------------------

    def _parent_hash(self, height: int) -> bytes | None:
        if height == self.committed_height + 1:
            return self.committed_hash
        below = self.slots.get(height - 1)
        return None if below is None else below.executed_hash

    def _try_execute(self) -> None:
        """Ask for execution of accepted proposals, in height order, each on its parent."""
        height = self.committed_height + 1
        while (slot := self.slots.get(height)) is not None and slot.pre_prepare is not None:
            if not slot.executing and slot.executed_hash is None:
                parent = self._parent_hash(height)
                if parent is None:
                    return
                proposal = slot.pre_prepare
                if proposal.parent_hash != parent:
                    self._reject_proposal("wrong_parent")
                    return
                slot.executing = True
                fixed = slot.reproposal
                self._emit(
                    ExecuteProposal(
                        self.view,
                        height,
                        parent,
                        proposal.txs,
                        proposal.header,
                        None if fixed else self.primary,
                        None if fixed else self.view,
                        proposal.block_hash,
                    )
                )
            height += 1

    def _reject_proposal(self, code: str) -> None:
        self._suspect(self.primary, f"bad_proposal:{code}")
        self._start_view_change(self.view + 1)

    def _on_execution_result(self, result: ExecutionResult) -> None:
        if result.view != self.view or not self.active:
            return
        if result.height <= self.committed_height:
            return  # committed meanwhile (state transfer): the result is moot
        slot = self.slots.setdefault(result.height, Slot())
        own = self.own_proposal_for == result.height and slot.pre_prepare is None
        if not result.ok:
            if own:
                self.own_proposal_for = None  # our own batch failed to build: try again
                self._maybe_propose()
            else:
                self._reject_proposal(result.reason or "execution")
            return
        if own:
            self.own_proposal_for = None
            key = (result.height, self.view, "prepare")
            if self.votes.get(key, result.block_hash) != result.block_hash:
                return  # proposed otherwise before a crash: never sign a second proposal here
            # The proposal is this replica's vote: durable before it leaves.
            self.votes[key] = result.block_hash
            self._emit(PersistVote(self.view, result.height, "prepare", result.block_hash))
            proposal = self._sign(
                PrePrepare(
                    self.view,
                    result.height,
                    result.block_hash,
                    result.parent_hash,
                    result.header,
                    result.txs,
                    self.config.index,
                )
            )
            assert isinstance(proposal, PrePrepare)
            slot.pre_prepare = proposal
            self.proposals[proposal.block_hash] = proposal
            self._emit(Broadcast(proposal))
        slot.executing = False
        slot.executed_hash = result.block_hash
        self._send_prepare(result.height, result.block_hash)
        self._check_prepared(result.height)
        self._try_execute()
        self._maybe_propose()

    def _send_prepare(self, height: int, block_hash: bytes) -> None:
        key = (height, self.view, "prepare")
        voted = self.votes.get(key)
        if voted is not None and voted != block_hash:
            return
        if voted is None:
            self.votes[key] = block_hash
            self._emit(PersistVote(self.view, height, "prepare", block_hash))
        prepare = self._sign(Prepare(self.view, height, block_hash, self.config.index))
        assert isinstance(prepare, Prepare)
        self.slots[height].prepares.setdefault(block_hash, {})[self.config.index] = prepare
        self._emit(Broadcast(prepare))

    def _check_prepared(self, height: int) -> None:
        """Vote COMMIT once prepared, and only after COMMIT (or commit) below."""
        while True:
            slot = self.slots.get(height)
            if slot is None or slot.sent_commit or slot.executed_hash is None:
                return
            below = self.slots.get(height - 1)
            if height - 1 > self.committed_height and (below is None or not below.sent_commit):
                return
            prepares = slot.prepares.get(slot.executed_hash, {})
            if len(prepares) < self.config.quorum or slot.pre_prepare is None:
                return
            self._send_commit(height, slot, prepares)
            height += 1

    def _send_commit(self, height: int, slot: Slot, prepares: dict[int, Prepare]) -> None:
        block_hash = slot.executed_hash
        assert block_hash is not None and slot.pre_prepare is not None
        key = (height, self.view, "commit")
        if self.votes.get(key, block_hash) != block_hash:
            return
        chosen = tuple(prepares[s] for s in sorted(prepares)[: self.config.quorum])
        certificate = PreparedCertificate(
            self.view,
            height,
            block_hash,
            slot.pre_prepare.parent_hash,
            slot.pre_prepare.header,
            chosen,
        )
        self.prepared[height] = certificate
        self.votes[key] = block_hash
        slot.sent_commit = True
        self._emit(PersistVote(self.view, height, "prepared", block_hash, certificate))
        self._emit(PersistVote(self.view, height, "commit", block_hash))
        vote = self.auth.sign_commit_vote(height, block_hash)
        commit = self._sign(Commit(self.view, height, block_hash, vote, self.config.index))
        assert isinstance(commit, Commit)
        slot.commits.setdefault(block_hash, {})[self.config.index] = commit
        self._emit(Broadcast(commit))
        self._check_committed()

    def _check_committed(self) -> None:
        """Commit every height in order whose block we executed and 2f+1 committed."""
        while (slot := self.slots.get(self.committed_height + 1)) is not None:
            block_hash = slot.executed_hash
            commits = slot.commits.get(block_hash, {}) if block_hash is not None else {}
            if block_hash is None or len(commits) < self.config.quorum:
                return
            signers = sorted(commits)[: self.config.quorum]
            signatures = tuple((s, commits[s].vote) for s in signers)
            self._commit(self.committed_height + 1, block_hash, signatures)

    def _commit(
        self, height: int, block_hash: bytes, signatures: tuple[tuple[int, bytes], ...]
    ) -> None:
        self._emit(CommitBlock(height, block_hash, signatures))
        self._advance_committed(height, block_hash, signatures)
        self.consecutive_view_changes = 0
        self.progress_timer_armed = False  # re-armed below with a fresh deadline if needed
        self._replay_ahead()
        if height % self.config.checkpoint_interval_blocks == 0:
            checkpoint = self._sign(Checkpoint(height, block_hash, self.config.index))
            self._record_checkpoint(height, block_hash, self.config.index)
            self._emit(Broadcast(checkpoint))
        self._maybe_propose()

    def _advance_committed(
        self, height: int, block_hash: bytes, signatures: tuple[tuple[int, bytes], ...]
    ) -> None:
        self.committed_height = height
        self.committed_hash = block_hash
        self.committed_signatures = signatures
        self.recent_committed[height] = block_hash
        if len(self.recent_committed) > RECENT_COMMITTED_MAX:
            del self.recent_committed[min(self.recent_committed)]
        for old in [h for h in self.slots if h <= height]:
            del self.slots[old]
        self.proposals = {k: p for k, p in self.proposals.items() if p.height > height}
        for old in [h for h in self.prepared if h <= height]:
            del self.prepared[old]
        self.far_ahead = {p: h for p, h in self.far_ahead.items() if h > height}
        self.commits_elsewhere = {k: v for k, v in self.commits_elsewhere.items() if k[0] > height}

    def _note_commit_elsewhere(self, message: Commit) -> None:
        """Commit votes of another view still prove a block: 2f+1 of them are a certificate.
        A replica out of step with its peers' view follows their chain this way."""
        window_top = self.committed_height + self.config.window_blocks
        if not self.committed_height < message.height <= window_top:
            return
        key = (message.height, message.block_hash)
        senders = self.commits_elsewhere.setdefault(key, set())
        senders.add(message.sender)
        if len(senders) >= self.config.quorum and not self.syncing:
            self._fetch_blocks(message.height, tuple(sorted(senders)))

    def _fetch_if_certified_elsewhere(self, height: int) -> None:
        """2f+1 valid commit votes make a block final even if we never executed it."""
        slot = self.slots.get(height)
        busy = slot is None or slot.executing or slot.fetching or self.syncing
        if busy or slot.executed_hash is not None:  # type: ignore[union-attr]
            return
        for senders in slot.commits.values():
            if len(senders) >= self.config.quorum:
                slot.fetching = True
                self._fetch_blocks(height, tuple(sorted(senders)))
                return

    # --- the primary ---------------------------------------------------------------------

    def _next_proposal_height(self) -> int:
        height = self.committed_height + 1
        while (slot := self.slots.get(height)) is not None and slot.pre_prepare is not None:
            height += 1
        return height

    def _maybe_propose(self) -> None:
        """Primary: keep one batch request outstanding while the window has room."""
        if not self.active or not self.is_primary or self.syncing:
            return
        if self.batch_requested_for is not None or self.own_proposal_for is not None:
            return
        height = self._next_proposal_height()
        if height > self.committed_height + self.config.window_blocks:
            return
        if self._parent_hash(height) is None:
            return  # the block below is not executed yet
        self.batch_requested_for = height
        self._emit(RequestBatch(height))

    def _on_batch_ready(self, event: BatchReady) -> None:
        if event.height != self.batch_requested_for:
            return
        self.batch_requested_for = None
        parent = self._parent_hash(event.height)
        if not self.active or not self.is_primary or parent is None or not event.txs:
            self._maybe_propose()
            return
        self.own_proposal_for = event.height
        self._emit(
            ExecuteProposal(
                self.view, event.height, parent, event.txs, None, self.config.index, self.view
            )
        )

    def _on_requests_pending(self, event: RequestsPending) -> None:
        self.pending_requests = event.pending
        self._maybe_propose()

    # --- checkpoints and falling behind --------------------------------------------------

    def _on_checkpoint(self, message: Checkpoint) -> None:
        if message.height <= self.stable_checkpoint:
            return
        if message.height > self.committed_height + self.config.window_blocks:
            self._note_far_ahead(message.sender, message.height)
            return
        self._record_checkpoint(message.height, message.block_hash, message.sender)

    def _record_checkpoint(self, height: int, block_hash: bytes, sender: int) -> None:
        by_hash = self.checkpoints.setdefault(height, {})
        if any(sender in senders for senders in by_hash.values()):
            return
        senders = by_hash.setdefault(block_hash, set())
        senders.add(sender)
        if len(senders) >= self.config.quorum and height <= self.committed_height:
            self._stabilise(height)

    def _stabilise(self, height: int) -> None:
        """2f+1 agree on the block at `height`: forget everything below it."""
        self.stable_checkpoint = height
        self.checkpoints = {h: c for h, c in self.checkpoints.items() if h > height}
        self.votes = {key: v for key, v in self.votes.items() if key[0] > height}
        self._emit(PersistVote(self.view, height, "checkpoint"))

    def _note_far_ahead(self, sender: int, height: int) -> None:
        """f+1 replicas beyond our window means at least one honest one is: catch up."""
        self.far_ahead[sender] = max(height, self.far_ahead.get(sender, 0))
        horizon = self.committed_height + self.config.window_blocks
        ahead = sorted((h for h in self.far_ahead.values() if h > horizon), reverse=True)
        if len(ahead) > self.config.faults_max and not self.syncing:
            target = ahead[self.config.faults_max] - 1
            peers = tuple(sorted(p for p, h in self.far_ahead.items() if h > horizon))
            self._fetch_blocks(target, peers)

    def _fetch_blocks(
        self,
        target: int,
        peers: tuple[int, ...],
        proven: tuple[tuple[int, bytes, tuple[tuple[int, bytes], ...]], ...] = (),
    ) -> None:
        self.syncing = True
        self._emit(FetchBlocks(target, peers, proven))

    def _fetch_base(self, plan: NewViewPlan, target: int | None = None) -> None:
        """Catch up to a NEW-VIEW's base block (or `target`); the base's certificate lets
        the node commit it from its own executed copy if no peer will serve it."""
        proven = ((plan.base_height, plan.base_hash, plan.base_signatures),)
        primary = (self.primary,) if self.primary != self.config.index else ()
        peers = tuple(dict.fromkeys(primary + plan.base_sources))
        self._fetch_blocks(max(plan.base_height, target or 0), peers, proven)

    def _on_blocks_fetched(self, event: BlocksFetched) -> None:
        self.syncing = False
        if event.height > self.committed_height:
            self._advance_committed(event.height, event.block_hash, event.signatures)
            self.batch_requested_for = None
            self.own_proposal_for = None
        if self.pending_new_view is not None:
            plan, pre_prepares = self.pending_new_view
            self.pending_new_view = None
            self._install_new_view(plan, pre_prepares)
        elif not self.active and self.is_primary:
            self._try_new_view()
        self._try_execute()
        self._check_committed()
        self._maybe_propose()

    # --- timers and view change ----------------------------------------------------------

    def _timeout_ms(self) -> int:
        doublings = min(self.consecutive_view_changes, BACKOFF_DOUBLINGS_MAX)
        return min(self.config.view_timeout_ms * 2**doublings, self.config.view_timeout_ms_max)

    def _has_work(self) -> bool:
        in_flight = any(slot.pre_prepare is not None for slot in self.slots.values())
        return self.pending_requests or in_flight

    def _update_progress_timer(self) -> None:
        if self.active and self._has_work():
            if not self.progress_timer_armed:
                self.progress_timer_armed = True
                self._emit(SetTimer(TimerKind.PROGRESS, self._timeout_ms()))
        elif self.progress_timer_armed:
            self.progress_timer_armed = False
            self._emit(CancelTimer(TimerKind.PROGRESS))

    def _on_timer(self, event: TimerFired) -> None:
        if event.kind is TimerKind.PROGRESS:
            self.progress_timer_armed = False
            if self.active and self._has_work():
                self._start_view_change(self.view + 1)
        elif not self.active:
            self._on_new_view_timeout()

    def _on_new_view_timeout(self) -> None:
        """No NEW-VIEW in time. Move on only if f+1 (an honest one among them) want this view;
        alone, re-send the VIEW-CHANGE and wait, so that replicas that timed out later catch
        up with this one instead of every replica climbing views on its own."""
        if len(self.view_changes.get(self.view, {})) > self.config.faults_max:
            self._start_view_change(self.view + 1)
        else:
            self._send_view_change()

    def _start_view_change(self, new_view: int) -> None:
        if new_view <= self.view and not self.active:
            return
        self.view = new_view
        self.phase = Phase.VIEW_CHANGE
        self.consecutive_view_changes += 1
        self.slots.clear()
        self.batch_requested_for = None
        self.own_proposal_for = None
        self.pending_new_view = None
        self.progress_timer_armed = False
        self._emit(CancelTimer(TimerKind.PROGRESS))
        self._emit(PersistVote(new_view, self.committed_height, "view", in_view_change=True))
        self._send_view_change()

    def _send_view_change(self) -> None:
        prepared = tuple(
            self.prepared[h]
            for h in sorted(self.prepared)
            if h > self.committed_height and self.prepared[h].view < self.view
        )
        view_change = self._sign(
            ViewChange(
                self.view,
                self.committed_height,
                self.committed_hash,
                self.committed_signatures,
                prepared,
                self.config.index,
            )
        )
        assert isinstance(view_change, ViewChange)
        self.view_changes.setdefault(self.view, {})[self.config.index] = view_change
        self._emit(Broadcast(view_change))
        self._emit(SetTimer(TimerKind.NEW_VIEW, self._timeout_ms()))
        if self.is_primary:
            self._try_new_view()

    def _on_view_change(self, message: ViewChange) -> None:
        if message.new_view < self.view or (message.new_view == self.view and self.active):
            self._help_latecomer(message.sender)
            return
        if message.new_view > self.view + self.config.view_lookahead_max:
            self._suspect(message.sender, "view_too_far")
            return
        problem = view_change_problem(message, self.config, self.auth)
        if problem is not None:
            self._suspect(message.sender, "bad_view_change")
            return
        asking = self.view_changes.setdefault(message.new_view, {})
        had_f_plus_one = len(asking) > self.config.faults_max
        asking[message.sender] = message
        if message.new_view == self.view and not self.active and not had_f_plus_one:
            self._restart_new_view_wait_at_f_plus_one()
        self._join_if_f_plus_one()
        if message.new_view == self.view and not self.active and self.is_primary:
            self._try_new_view()

    def _restart_new_view_wait_at_f_plus_one(self) -> None:
        """The wait for NEW-VIEW that ends in moving on counts from the moment f+1 replicas
        want this view, not from our own VIEW-CHANGE: a VIEW-CHANGE that reaches us late (a
        peer's queue flushed when a link comes back) is often followed on the same link by
        the NEW-VIEW that ended that view change, and a timer about to fire would otherwise
        take us a view beyond everyone. At most once per view, so a peer cannot keep us
        waiting: the count of VIEW-CHANGEs for a view only grows."""
        if len(self.view_changes[self.view]) > self.config.faults_max:
            self._emit(SetTimer(TimerKind.NEW_VIEW, self._timeout_ms()))

    def _help_latecomer(self, peer: int) -> None:
        """A peer still asks for a view we have entered: send it our NEW-VIEW. It re-asks on
        its own (backed-off) timeout, so each answer can make up for a lost one; one answer
        per request keeps a Byzantine peer from getting more out of us than it sends (the
        per-peer send queue bounds the rest)."""
        if self.active and self.last_new_view is not None:
            self._emit(Send(peer, self.last_new_view))

    def _on_peer_height(self, event: PeerHeight) -> None:
        """f+1 peers that say they committed beyond us include an honest one: fetch up to
        the highest height f+1 of them claim. While our own slots are busy the normal case
        is catching up already, unless the peers are beyond the window."""
        if event.peer == self.config.index:
            return
        self.peer_heights[event.peer] = event.height
        if self.syncing:
            return
        ahead = sorted(h for h in self.peer_heights.values() if h > self.committed_height)
        if len(ahead) <= self.config.faults_max:
            return
        target = ahead[-1 - self.config.faults_max]
        busy = any(slot.pre_prepare is not None for slot in self.slots.values())
        if busy and target <= self.committed_height + self.config.window_blocks:
            return
        attempt = (self.committed_height, target)
        if attempt == self.last_height_fetch:
            return  # tried from here already: wait for a claim of more, or our own progress
        self.last_height_fetch = attempt
        peers = tuple(sorted(p for p, h in self.peer_heights.items() if h >= target))
        self._fetch_blocks(target, peers)

    def _on_peer_connected(self, event: PeerConnected) -> None:
        """A NEW-VIEW sent while the link was down never arrived: send it again now."""
        if self.view > 0:
            self._help_latecomer(event.peer)

    def _join_if_f_plus_one(self) -> None:
        """Move to a higher view only when f+1 replicas (one of them honest) want it."""
        wanted: dict[int, int] = {}
        for view, senders in self.view_changes.items():
            if view > self.view:
                for sender in senders:
                    if sender != self.config.index:
                        wanted[sender] = max(view, wanted.get(sender, 0))
        views = sorted(wanted.values(), reverse=True)
        if len(views) > self.config.faults_max:
            self._start_view_change(views[self.config.faults_max])

    def _try_new_view(self) -> None:
        """New primary: with 2f+1 VIEW-CHANGEs, the proposals they need and the base block,
        send NEW-VIEW."""
        collected = self.view_changes.get(self.view, {})
        if len(collected) < self.config.quorum or self.syncing:
            return
        chosen = tuple(collected[s] for s in sorted(collected)[: self.config.quorum])
        plan = plan_new_view(chosen)
        if plan.base_height > self.committed_height:
            self._fetch_base(plan)
            return
        pre_prepares = []
        for certificate in plan.reproposals:
            if certificate.height <= self.committed_height:
                continue
            known = self.proposals.get(certificate.block_hash)
            if known is None:
                self._fetch_proposal(certificate)
                return
            pre_prepares.append(
                self._sign(
                    PrePrepare(
                        self.view,
                        certificate.height,
                        certificate.block_hash,
                        certificate.parent_hash,
                        certificate.header,
                        known.txs,
                        self.config.index,
                    )
                )
            )
        new_view = self._sign(
            NewView(
                self.view,
                chosen,
                tuple(pre_prepares),  # type: ignore[arg-type]
                self.config.index,
            )
        )
        assert isinstance(new_view, NewView)
        self._emit(Broadcast(new_view))
        self.last_new_view = new_view
        self._install_new_view(plan, tuple(pre_prepares))  # type: ignore[arg-type]

    def _fetch_proposal(self, certificate: PreparedCertificate) -> None:
        if certificate.block_hash in self.fetching_proposals:
            return
        self.fetching_proposals.add(certificate.block_hash)
        peers = tuple(
            sorted(p.sender for p in certificate.prepares if p.sender != self.config.index)
        )
        self._emit(FetchProposal(certificate.block_hash, certificate.height, peers))

    def _on_proposal_fetched(self, event: ProposalFetched) -> None:
        self.fetching_proposals.discard(event.block_hash)
        for certificate in self.prepared.values():
            if certificate.block_hash == event.block_hash:
                break
        else:
            certificate = self._certificate_in_view_changes(event.block_hash)
        if certificate is None:
            return
        self.proposals[event.block_hash] = PrePrepare(
            certificate.view,
            certificate.height,
            certificate.block_hash,
            certificate.parent_hash,
            certificate.header,
            event.txs,
            self.config.index,
        )
        if not self.active and self.is_primary:
            self._try_new_view()

    def _certificate_in_view_changes(self, block_hash: bytes) -> PreparedCertificate | None:
        for view_change in self.view_changes.get(self.view, {}).values():
            for certificate in view_change.prepared:
                if certificate.block_hash == block_hash:
                    return certificate
        return None

    def _on_new_view(self, message: NewView) -> None:
        if message.view < self.view or (message.view == self.view and self.active):
            return
        if message.sender != self.config.primary(message.view):
            self._suspect(message.sender, "new_view_not_primary")
            return
        plan = self._check_new_view(message)
        if plan is None:
            self._suspect(message.sender, "bad_new_view")
            return
        if message.view > self.view:
            self.view = message.view
        self.last_new_view = message
        self._install_new_view(plan, message.pre_prepares)

    def _check_new_view(self, message: NewView) -> NewViewPlan | None:
        """The plan the NEW-VIEW's proof implies, if its re-proposals match it exactly."""
        senders = {vc.sender for vc in message.view_changes}
        if len(senders) != len(message.view_changes) or len(senders) < self.config.quorum:
            return None
        for view_change in message.view_changes:
            payload = signing_payload(view_change, self.config.chain_id)
            if view_change.new_view != message.view or not self.auth.verify(
                view_change.sender, payload, view_change.signature
            ):
                return None
            if view_change_problem(view_change, self.config, self.auth) is not None:
                return None
        plan = plan_new_view(message.view_changes)
        expected = [c for c in plan.reproposals if c.height > self.committed_height]
        offered = [p for p in message.pre_prepares if p.height > self.committed_height]
        # The primary leaves out re-proposals it has committed already; this replica then
        # fetches those certified blocks. What it does offer must be the rest of the plan.
        skipped = len(expected) - len(offered)
        if skipped < 0:
            return None
        expected = expected[skipped:]
        for certificate, proposal in zip(expected, offered, strict=True):
            same = (
                proposal.view,
                proposal.height,
                proposal.block_hash,
                proposal.parent_hash,
                proposal.header,
                proposal.sender,
            ) == (
                message.view,
                certificate.height,
                certificate.block_hash,
                certificate.parent_hash,
                certificate.header,
                message.sender,
            )
            payload = signing_payload(proposal, self.config.chain_id)
            if not same or not self.auth.verify(proposal.sender, payload, proposal.signature):
                return None
        return plan

    def _install_new_view(self, plan: NewViewPlan, pre_prepares: tuple[PrePrepare, ...]) -> None:
        """Enter the view: adopt the re-proposals as this view's accepted proposals."""
        self.phase = Phase.NORMAL
        self.slots.clear()
        self.batch_requested_for = None
        self.own_proposal_for = None
        self.view_changes = {v: c for v, c in self.view_changes.items() if v > self.view}
        self._emit(CancelTimer(TimerKind.NEW_VIEW))
        self._emit(PersistVote(self.view, self.committed_height, "view"))
        offered = {p.block_hash for p in pre_prepares}
        skipped = [
            c.height
            for c in plan.reproposals
            if c.height > self.committed_height and c.block_hash not in offered
        ]
        needed = max([plan.base_height, *skipped])
        if needed > self.committed_height:
            # Get the base block (and any re-proposals the primary had committed and left
            # out) first: EnteredView voids the node's speculative blocks, and its own
            # executed copy of the base may be the only one it can commit.
            self.pending_new_view = (plan, pre_prepares)
            self._fetch_base(plan, needed)
            return
        self._emit(EnteredView(self.view, self.primary, self.committed_height))
        for proposal in pre_prepares:
            if proposal.height > self.committed_height:
                self.slots[proposal.height] = Slot(pre_prepare=proposal, reproposal=True)
                self.proposals[proposal.block_hash] = proposal
            elif self.recent_committed.get(proposal.height) == proposal.block_hash:
                self._vote_for_committed(proposal)
        self._replay_future()
        self._try_execute()
        self._maybe_propose()

    def _vote_for_committed(self, proposal: PrePrepare) -> None:
        """Vote for a re-proposed block we already committed, so replicas that have not can
        reach 2f+1: the same block, so the votes cannot contradict anything."""
        height, block_hash = proposal.height, proposal.block_hash
        for kind in ("prepare", "commit"):
            key = (height, self.view, kind)
            if self.votes.get(key, block_hash) != block_hash:
                return
            self.votes[key] = block_hash
            self._emit(PersistVote(self.view, height, kind, block_hash))
        prepare = self._sign(Prepare(self.view, height, block_hash, self.config.index))
        vote = self.auth.sign_commit_vote(height, block_hash)
        commit = self._sign(Commit(self.view, height, block_hash, vote, self.config.index))
        self._emit(Broadcast(prepare))
        self._emit(Broadcast(commit))

    def _replay_future(self) -> None:
        ready = [m for v, m in self.future if v == self.view]
        self.future = [(v, m) for v, m in self.future if v > self.view]
        for message in ready:
            self._dispatch(message)
