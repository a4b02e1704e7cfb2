"""Cross-replica invariants, checked after every step, from outside the nodes.

Safety (must hold whatever the faults, with at most f Byzantine replicas):
  - no two honest replicas commit different blocks at one height, and no replica, not
    even a Byzantine one, holds a valid commit certificate for another block there;
  - every honest chain links: block h names block h-1 as its parent;
  - every committed block carries 2f+1 distinct valid commit votes;
  - every committed transaction was signed by a member and submitted, and a chain holds it
    at most once;
  - an honest replica never sends two different PREPAREs or COMMITs for one height and
    view, across crashes too, and each vote it sends is durable before it leaves;
  - an honest replica's durable view never goes back; a running replica's committed
    height and hash are its ledger's.
Protocol (recorded, the run goes on): an honest primary never sends two different
PRE-PREPAREs for one height and view.
Liveness (after the faults heal): every transaction submitted to an honest replica is
committed by every honest replica within `LIVENESS_MS_MAX` simulated milliseconds. Clients
keep submitting "heartbeat" transactions after the heal (traffic, so that a replica that
is behind hears of it); those are checked for safety but liveness does not wait for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from consensus.messages import Commit, ConsensusMessage, NewView, Prepare, PrePrepare
from tests.sim.model import GENESIS_HASH, KeyedHashAuth
from tests.sim.node import CommittedBlock, SimNode
from tests.sim.proofs import MemberSigner, certificate_problem

# The protocol's worst case after a heal, with timeouts doubling from 2 s to a 30 s cap:
# a backed-off timeout already running (30 s), then up to f+1 = 3 (n = 7) consecutive
# views whose primary is Byzantine or still catching up (30 s each), then the new view's
# commits. 1,900 seeds measured a slowest recovery of 92 s; one took just over 120 s.
LIVENESS_MS_MAX: Final = 180_000


class InvariantViolation(Exception):
    """A broken invariant: the run stops and reports it with its seed."""


@dataclass
class ChainProgress:
    """How far one honest replica's chain has been checked."""

    checked_height: int = 0
    txs: set[bytes] = field(default_factory=set)
    obliged_committed: int = 0
    durable_view: int = 0


class Checker:
    def __init__(
        self,
        validator_count: int,
        honest: frozenset[int],
        verifier: KeyedHashAuth,
        members: MemberSigner,
    ) -> None:
        self.validator_count = validator_count
        self.honest = honest
        self.verifier = verifier
        self.members = members
        self.canonical: list[bytes] = [GENESIS_HASH]  # the agreed hash at each height
        self.first_committer: list[str] = ["genesis"]
        self.progress = {index: ChainProgress() for index in sorted(honest)}
        # A Byzantine ledger proves nothing, but a valid certificate in it does: it must
        # not certify another block than the honest replicas commit (auditors accept it).
        self.byzantine_checked = {i: 0 for i in range(validator_count) if i not in honest}
        self.submitted: dict[bytes, int] = {}  # tx -> when it was submitted (ms)
        self.obliged: set[bytes] = set()  # what liveness waits for (not the heartbeats)
        self.sent: dict[tuple[int, str, int, int], bytes] = {}  # (who, kind, h, v) -> hash
        self.equivocations: list[str] = []  # honest double PRE-PREPAREs (not fatal)

    # --- hooks -----------------------------------------------------------------------------

    def note_submitted(self, tx: bytes, time_ms: int, obliged: bool = True) -> None:
        """A client submitted `tx`; if `obliged`, the liveness check waits for it."""
        assert self.members.signed(tx)
        self.submitted[tx] = time_ms
        if obliged:
            self.obliged.add(tx)

    def on_sent(self, node: SimNode, message: ConsensusMessage) -> None:
        """An honest replica sends `message`: one proposal and one vote of each kind per
        (height, view), and a vote is durable before it leaves."""
        if isinstance(message, NewView):
            for proposal in message.pre_prepares:
                self._one_per_height_and_view(node, "pre_prepare", proposal)
        elif isinstance(message, PrePrepare):
            self._one_per_height_and_view(node, "pre_prepare", message)
        elif isinstance(message, Prepare | Commit):
            kind = "prepare" if isinstance(message, Prepare) else "commit"
            self._one_per_height_and_view(node, kind, message)
            durable = node.durable.votes.get((message.height, message.view, kind))
            pruned = message.height <= node.durable.pruned_height
            if durable != message.block_hash and not pruned:
                raise InvariantViolation(
                    f"replica {node.index} sent {kind.upper()} h{message.height} "
                    f"v{message.view} before it was durable"
                )

    def _one_per_height_and_view(
        self, node: SimNode, kind: str, message: PrePrepare | Prepare | Commit
    ) -> None:
        key = (node.index, kind, message.height, message.view)
        earlier = self.sent.setdefault(key, message.block_hash)
        if earlier == message.block_hash:
            return
        text = (
            f"replica {node.index} sent two different {kind.upper()}s at height "
            f"{message.height} view {message.view}: {earlier.hex()[:12]} then "
            f"{message.block_hash.hex()[:12]}"
        )
        if kind != "pre_prepare":
            raise InvariantViolation(text)
        # An honest primary that equivocates breaks the protocol but not yet agreement
        # (backups vote once per height and view): note it, keep checking the run.
        self.equivocations.append(text)

    def after_step(self, nodes: Sequence[SimNode]) -> None:
        for index, progress in self.progress.items():
            node = nodes[index]
            self._check_chain(node, progress)
            self._check_node(node, progress)
        for index, checked in self.byzantine_checked.items():
            self.byzantine_checked[index] = self._check_certified(nodes[index], checked)

    # --- checks ----------------------------------------------------------------------------

    def _check_chain(self, node: SimNode, progress: ChainProgress) -> None:
        blocks = node.durable.blocks
        while progress.checked_height < len(blocks):
            block = blocks[progress.checked_height]
            height = progress.checked_height + 1
            where = f"replica {node.index} height {height}"
            if block.height != height:
                raise InvariantViolation(f"{where}: block says height {block.height}")
            parent = GENESIS_HASH if height == 1 else blocks[height - 2].block_hash
            if (
                block.parent_hash != parent
                or node.durable.ledger.committed[height] != block.block_hash
            ):
                raise InvariantViolation(f"{where}: block does not extend the chain below")
            problem = certificate_problem(
                self.verifier, self.validator_count, height, block.block_hash, block.signatures
            )
            if problem is not None:
                raise InvariantViolation(f"{where}: bad commit certificate: {problem}")
            self._check_agreement(f"replica {node.index}", height, block)
            for tx in block.txs:
                self._check_transaction(where, tx, progress)
            progress.checked_height = height

    def _check_certified(self, node: SimNode, checked: int) -> int:
        """Check a Byzantine replica's newly certified blocks; return how far it got."""
        blocks = node.durable.blocks
        while checked < len(blocks):
            block = blocks[checked]
            problem = certificate_problem(
                self.verifier,
                self.validator_count,
                block.height,
                block.block_hash,
                block.signatures,
            )
            if problem is not None or block.height != checked + 1:
                return len(blocks) + 1  # nothing it holds from here on proves anything
            self._check_agreement(f"Byzantine replica {node.index}", block.height, block)
            checked += 1
        return checked

    def _check_agreement(self, holder: str, height: int, block: CommittedBlock) -> None:
        """One certified block per height, whoever holds it."""
        if height == len(self.canonical):
            self.canonical.append(block.block_hash)
            self.first_committer.append(f"{holder} (signed by {_signers(block)})")
        elif self.canonical[height] != block.block_hash:
            raise InvariantViolation(
                f"SAFETY: two blocks certified at height {height}: {holder} has "
                f"{block.block_hash.hex()[:12]} (signed by {_signers(block)}), "
                f"{self.first_committer[height]} has {self.canonical[height].hex()[:12]}"
            )

    def _check_transaction(self, where: str, tx: bytes, progress: ChainProgress) -> None:
        if not self.members.signed(tx) or tx not in self.submitted:
            raise InvariantViolation(f"{where}: committed a transaction no member submitted")
        if tx in progress.txs:
            raise InvariantViolation(f"{where}: transaction {tx.hex()[:12]} committed twice")
        progress.txs.add(tx)
        if tx in self.obliged:
            progress.obliged_committed += 1

    def _check_node(self, node: SimNode, progress: ChainProgress) -> None:
        if node.durable.view < progress.durable_view:
            raise InvariantViolation(
                f"replica {node.index}: durable view went back from {progress.durable_view} "
                f"to {node.durable.view}"
            )
        progress.durable_view = node.durable.view
        replica = node.replica
        if replica is None:
            return
        ledger = node.durable.ledger
        if replica.syncing and ledger.height > replica.committed_height:
            # A state transfer under way may commit blocks before BlocksFetched tells the
            # replica; what it already knows must still match the chain.
            behind_ok = ledger.committed[replica.committed_height] == replica.committed_hash
            if behind_ok:
                return
        if (replica.committed_height, replica.committed_hash) != (
            ledger.height,
            ledger.committed[-1],
        ):
            raise InvariantViolation(
                f"replica {node.index}: replica says committed {replica.committed_height}, "
                f"its ledger has {ledger.height}"
            )

    # --- liveness --------------------------------------------------------------------------

    def all_committed(self) -> bool:
        """Whether every honest replica committed every obliged transaction."""
        expected = len(self.obliged)
        return all(p.obliged_committed == expected for p in self.progress.values())

    def missing(self) -> dict[int, list[bytes]]:
        """Per honest replica, the obliged transactions it has not committed."""
        return {
            index: [tx for tx in self.submitted if tx in self.obliged and tx not in progress.txs]
            for index, progress in self.progress.items()
            if progress.obliged_committed < len(self.obliged)
        }


def _signers(block: CommittedBlock) -> list[int]:
    return [signer for signer, _ in block.signatures]
