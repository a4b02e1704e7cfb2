"""Byzantine replicas: a real replica whose outgoing messages an adversary rewrites.

The adversary holds only its own replica's secret. It can sign anything as itself, and
nothing as anyone else: a message "from" another replica carries a signature made with
the wrong key, which every honest replica must drop. Behaviours combine; each extra
misbehaviour fires on a share of opportunities so the replica also does honest work.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import replace
from enum import Enum
from typing import TYPE_CHECKING, Final

from consensus.messages import (
    Commit,
    ConsensusMessage,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    ViewChange,
    signing_payload,
)
from consensus.view_change import plan_new_view, view_change_problem
from tests.sim.model import block_hash_of, toy_header

if TYPE_CHECKING:
    from tests.sim.node import SimNode

EXTRA_PROBABILITY: Final = 0.2  # per outgoing message, per enabled extra behaviour
TICK_PROBABILITY: Final = 0.5  # per relay tick, for spontaneous misbehaviour
BOTH_VERSIONS_PROBABILITY: Final = 0.3  # one peer gets both versions (detectable)
JUNK_TX_PROBABILITY: Final = 0.2  # an equivocated block carries an unsigned transaction
HISTORY_MAX: Final = 64  # own past messages kept for replays
HUGE_VIEW_OFFSETS: Final = (10**6, 2**40, 2**62)


class Behaviour(Enum):
    SILENT = "silent"  # sends nothing at all, relays no transactions
    EQUIVOCATE = "equivocate"  # as primary, different PRE-PREPAREs to different peers
    DOUBLE_VOTE = "double_vote"  # PREPARE/COMMIT for two hashes at one height and view
    UNKNOWN_VOTES = "unknown_votes"  # votes for blocks nobody proposed
    FORGE = "forge"  # messages and proofs signed "as" others with its own (wrong) key
    STALE_VIEW = "stale_view"  # replays its old messages, votes in past views
    HUGE_VIEW = "huge_view"  # VIEW-CHANGEs for far-future (and near-future) views
    HIDE_PREPARED = "hide_prepared"  # VIEW-CHANGEs without its prepared certificates
    SELECTIVE_NEW_VIEW = "selective_new_view"  # as new primary, a different valid NEW-VIEW
    # (another choice of 2f+1 VIEW-CHANGEs) to each group of peers


ACTIVE_BEHAVIOURS: Final = tuple(b for b in Behaviour if b is not Behaviour.SILENT)


class Adversary:
    """Rewrites one Byzantine replica's outgoing messages."""

    def __init__(self, behaviours: frozenset[Behaviour], rng: random.Random) -> None:
        assert behaviours, "a Byzantine replica misbehaves somehow"
        assert Behaviour.SILENT not in behaviours or len(behaviours) == 1
        self.behaviours = behaviours
        self.rng = rng
        self.history: deque[ConsensusMessage] = deque(maxlen=HISTORY_MAX)
        self.alternatives: dict[tuple[int, int], bytes] = {}
        self.sent_misbehaviours = 0
        self.announcements = 0

    @property
    def relays(self) -> bool:
        return Behaviour.SILENT not in self.behaviours

    def transform(
        self, node: SimNode, peers: tuple[int, ...], message: ConsensusMessage
    ) -> list[tuple[int, ConsensusMessage]]:
        """What actually leaves the replica in place of `message` to `peers`."""
        if Behaviour.SILENT in self.behaviours:
            return []
        out: list[tuple[int, ConsensusMessage]] = [(peer, message) for peer in peers]
        if Behaviour.EQUIVOCATE in self.behaviours and isinstance(message, PrePrepare):
            out = self._split(peers, message, self._alternative_block(node, message))
        elif Behaviour.DOUBLE_VOTE in self.behaviours and isinstance(message, Prepare | Commit):
            out = self._split(peers, message, self._other_vote(node, message))
        elif Behaviour.HIDE_PREPARED in self.behaviours and isinstance(message, ViewChange):
            out = [(peer, self._hidden(node, message)) for peer in peers]
        elif Behaviour.SELECTIVE_NEW_VIEW in self.behaviours and isinstance(message, NewView):
            out = self._split(peers, message, self._other_new_view(node, message))
        for behaviour in Behaviour:  # not the frozenset: its order changes with the hash seed
            if behaviour in self.behaviours and self.rng.random() < EXTRA_PROBABILITY:
                out.extend(
                    (peer, extra)
                    for extra in self._extras(node, behaviour, message)
                    for peer in peers
                )
        self.history.append(message)
        return out

    def announced_height(self, height: int) -> int | None:
        """The committed height this replica claims: none when silent, far ahead or behind
        when it lies about views, the truth otherwise."""
        # Alternate lies with the truth by a counter, not `rng`: drawing from it here would
        # shift every other random choice of the existing seeds.
        self.announcements += 1
        if Behaviour.SILENT in self.behaviours:
            return None
        if Behaviour.HUGE_VIEW in self.behaviours and self.announcements % 2:
            return height + HUGE_VIEW_OFFSETS[self.announcements % len(HUGE_VIEW_OFFSETS)]
        if Behaviour.STALE_VIEW in self.behaviours and self.announcements % 2:
            return height // 2
        return height

    def on_tick(self, node: SimNode) -> None:
        """Spontaneous misbehaviour, once per relay tick."""
        if Behaviour.SILENT in self.behaviours or self.rng.random() >= TICK_PROBABILITY:
            return
        peers = tuple(p for p in range(node.config.validator_count) if p != node.index)
        for behaviour in (Behaviour.HUGE_VIEW, Behaviour.STALE_VIEW, Behaviour.FORGE):
            if behaviour in self.behaviours:
                for extra in self._extras(node, behaviour, None):
                    for peer in peers:
                        node.environment.transmit(node.index, peer, extra)

    # --- two versions of one message -------------------------------------------------------

    def _split(
        self, peers: tuple[int, ...], original: ConsensusMessage, other: ConsensusMessage | None
    ) -> list[tuple[int, ConsensusMessage]]:
        if other is None or len(peers) < 2:
            return [(peer, original) for peer in peers]
        shuffled = list(peers)
        self.rng.shuffle(shuffled)
        cut = self.rng.randint(1, len(shuffled) - 1)
        out = [(p, original) for p in shuffled[:cut]] + [(p, other) for p in shuffled[cut:]]
        if self.rng.random() < BOTH_VERSIONS_PROBABILITY:
            out.append((shuffled[-1], original))
        self.sent_misbehaviours += 1
        return out

    def _alternative_block(self, node: SimNode, proposal: PrePrepare) -> PrePrepare | None:
        """A second block for the same height and view, valid unless it carries junk."""
        txs = proposal.txs
        if self.rng.random() < JUNK_TX_PROBABILITY:
            alternative = (*txs, self.rng.randbytes(20))
        elif len(txs) >= 2:
            alternative = txs[:-1]
        else:
            others = [tx for tx in node.durable.mempool if tx not in txs]
            if not others:
                return None
            alternative = (*txs, self.rng.choice(others))
        header = toy_header(
            proposal.height, proposal.parent_hash, alternative, node.index, proposal.view
        )
        block_hash = block_hash_of(header)
        self.alternatives[(proposal.view, proposal.height)] = block_hash
        other = replace(proposal, block_hash=block_hash, header=header, txs=alternative)
        return self._sign(node, other)

    def _other_vote(self, node: SimNode, vote: Prepare | Commit) -> ConsensusMessage:
        block_hash = self.alternatives.get((vote.view, vote.height), self.rng.randbytes(32))
        return self._vote(node, vote.view, vote.height, block_hash, isinstance(vote, Commit))

    def _hidden(self, node: SimNode, change: ViewChange) -> ConsensusMessage:
        """The VIEW-CHANGE without prepared certificates, perhaps naming an older block."""
        blocks = node.durable.blocks
        if blocks and self.rng.random() < 0.5:
            older = self.rng.choice(blocks)
            change = replace(
                change,
                committed_height=older.height,
                committed_hash=older.block_hash,
                committed_signatures=older.signatures,
            )
        return self._sign(node, replace(change, prepared=()))

    def _other_new_view(self, node: SimNode, new_view: NewView) -> ConsensusMessage | None:
        """A NEW-VIEW from another choice of 2f+1 valid VIEW-CHANGEs, re-proposing its plan."""
        replica = node.replica
        assert replica is not None
        collected = [
            change
            for change in replica.view_changes.get(new_view.view, {}).values()
            if view_change_problem(change, node.config, node.auth) is None
        ]
        if len(collected) <= node.config.quorum:
            collected = list(new_view.view_changes)
        self.rng.shuffle(collected)
        chosen = sorted(collected[: node.config.quorum], key=lambda change: change.sender)
        plan = plan_new_view(chosen)
        proposals = []
        for certificate in plan.reproposals:
            txs = node.known_block_txs(certificate.block_hash)
            if txs is None:
                return None
            proposal = PrePrepare(
                new_view.view,
                certificate.height,
                certificate.block_hash,
                certificate.parent_hash,
                certificate.header,
                txs,
                node.index,
            )
            proposals.append(self._sign(node, proposal))
        other = NewView(new_view.view, tuple(chosen), tuple(proposals), node.index)  # type: ignore[arg-type]
        return self._sign(node, other)

    # --- extra messages --------------------------------------------------------------------

    def _extras(
        self, node: SimNode, behaviour: Behaviour, message: ConsensusMessage | None
    ) -> list[ConsensusMessage]:
        replica = node.replica
        if replica is None:
            return []
        self.sent_misbehaviours += 1
        if behaviour is Behaviour.UNKNOWN_VOTES:
            height = replica.committed_height + self.rng.randint(1, node.config.window_blocks)
            commit = self.rng.random() < 0.5
            return [self._vote(node, replica.view, height, self.rng.randbytes(32), commit)]
        if behaviour is Behaviour.FORGE:
            return [self._forgery(node, message)]
        if behaviour is Behaviour.STALE_VIEW:
            return self._stale(node, message)
        if behaviour is Behaviour.HUGE_VIEW:
            offset = self.rng.choice(
                (
                    *HUGE_VIEW_OFFSETS,
                    node.config.view_lookahead_max + 1,
                    self.rng.randint(1, node.config.view_lookahead_max),
                )
            )
            return [self._view_change(node, replica.view + offset)]
        self.sent_misbehaviours -= 1
        return []

    def _stale(self, node: SimNode, message: ConsensusMessage | None) -> list[ConsensusMessage]:
        if message is not None and isinstance(message, Prepare | Commit) and message.view > 0:
            commit = isinstance(message, Commit)
            block_hash = message.block_hash
            return [self._vote(node, message.view - 1, message.height, block_hash, commit)]
        if self.history:
            return [self.rng.choice(list(self.history))]  # a valid old message, replayed
        return []

    def _forgery(self, node: SimNode, message: ConsensusMessage | None) -> ConsensusMessage:
        """Something that claims more than this replica can sign."""
        replica = node.replica
        assert replica is not None
        others = [p for p in range(node.config.validator_count) if p != node.index]
        victim = self.rng.choice(others)
        choice = self.rng.randrange(6)
        if choice == 0 and message is not None:  # another sender, signed with our key
            return self._sign(node, replace(message, sender=victim))  # type: ignore[type-var]
        if choice == 5 and message is not None:  # our own message, a made-up signature
            return replace(message, signature=self.rng.randbytes(64))  # type: ignore[type-var]
        if choice == 1:  # a commit vote that is not ours
            block_hash = self.rng.randbytes(32)
            height = replica.committed_height + 1
            commit = Commit(replica.view, height, block_hash, self.rng.randbytes(64), node.index)
            return self._sign(node, commit)
        if choice == 2:  # a VIEW-CHANGE claiming a prepared block nobody prepared
            return self._view_change(node, replica.view + 1, forged_prepared=True)
        if choice == 3:  # a VIEW-CHANGE claiming commits nobody made
            return self._view_change(node, replica.view + 1, forged_commit=True)
        return self._forged_new_view(node)

    def _forged_new_view(self, node: SimNode) -> ConsensusMessage:
        """A NEW-VIEW whose proof is VIEW-CHANGEs signed "as" others with our key."""
        replica = node.replica
        assert replica is not None
        view = replica.view + 1
        while node.config.primary(view) != node.index:
            view += 1
        proofs = []
        for sender in range(node.config.quorum):
            change = self._view_change(node, view)
            assert isinstance(change, ViewChange)
            proofs.append(self._sign(node, replace(change, sender=sender)))
        forged = NewView(view, tuple(proofs), (), node.index)  # type: ignore[arg-type]
        return self._sign(node, forged)

    # --- building and signing --------------------------------------------------------------

    def _view_change(
        self,
        node: SimNode,
        new_view: int,
        forged_prepared: bool = False,
        forged_commit: bool = False,
    ) -> ConsensusMessage:
        replica = node.replica
        assert replica is not None
        height, block_hash = replica.committed_height, replica.committed_hash
        signatures = replica.committed_signatures
        prepared: tuple[PreparedCertificate, ...] = ()
        if forged_commit:
            height, block_hash = height + self.rng.randint(1, 5), self.rng.randbytes(32)
            signatures = tuple((s, self.rng.randbytes(64)) for s in range(node.config.quorum))
        if forged_prepared:
            prepared = (self._forged_certificate(node, new_view - 1, height + 1, block_hash),)
        change = ViewChange(new_view, height, block_hash, signatures, prepared, node.index)
        return self._sign(node, change)

    def _forged_certificate(
        self, node: SimNode, view: int, height: int, parent_hash: bytes
    ) -> PreparedCertificate:
        block_hash = self.rng.randbytes(32)
        prepares = tuple(
            self._sign(node, Prepare(view, height, block_hash, sender))
            for sender in range(node.config.quorum)
        )
        header = toy_header(height, parent_hash, (), node.index, view)
        return PreparedCertificate(view, height, block_hash, parent_hash, header, prepares)  # type: ignore[arg-type]

    def _vote(
        self, node: SimNode, view: int, height: int, block_hash: bytes, commit: bool
    ) -> ConsensusMessage:
        if commit:
            vote = node.auth.sign_commit_vote(height, block_hash)
            return self._sign(node, Commit(view, height, block_hash, vote, node.index))
        return self._sign(node, Prepare(view, height, block_hash, node.index))

    @staticmethod
    def _sign(node: SimNode, message: ConsensusMessage) -> ConsensusMessage:
        signature = node.auth.sign(signing_payload(message, node.config.chain_id))
        return replace(message, signature=signature)  # type: ignore[type-var]
