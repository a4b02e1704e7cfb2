"""The ledger: the committed chain plus the one path every block takes to it.

validate header -> execute into a `BlockOutput` -> compare every root -> persist atomically.
The single-validator producer and (next) the PBFT replica drive the same three steps:
`build_proposal` on the proposer, `check_proposal` on every replica, `commit` once a
certificate exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from contracts.runtime import ContractRegistry
from node.block import (
    BLOCK_VERSION,
    BlockHeader,
    CommitCertificate,
    CommittedBlock,
    certificate_problem,
    sha256,
)
from node.execution import BlockContext, BlockOutput, execute_block
from node.genesis import Genesis
from node.invariants import require
from node.storage import ChainStore
from node.transaction import Transaction


class ProposalRejected(Exception):
    """A proposal this replica will not vote for; `code` says why (for peer suspicion)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Proposal:
    """A header with its transactions and the execution output its roots came from."""

    header: BlockHeader
    header_bytes: bytes
    block_hash: bytes
    transactions: tuple[Transaction, ...]
    output: BlockOutput

    def to_committed(self, certificate: CommitCertificate) -> CommittedBlock:
        return CommittedBlock(
            header=self.header,
            header_bytes=self.header_bytes,
            block_hash=self.block_hash,
            tx_ids=tuple(tx.tx_id for tx in self.transactions),
            envelopes=tuple(tx.envelope for tx in self.transactions),
            receipts=self.output.receipt_bytes,
            commit=certificate,
        )


class Ledger:
    """Executes and commits blocks on top of the committed tip in `store`."""

    def __init__(self, genesis: Genesis, store: ChainStore, registry: ContractRegistry) -> None:
        self.genesis = genesis
        self.store = store
        self.registry = registry

    @property
    def height(self) -> int:
        return self.store.height

    def next_timestamp_ms(self, clock_ms: int) -> int:
        """Block timestamps strictly increase even if the local clock steps back."""
        previous = self.store.get_block_summary(self.store.height)
        require(previous is not None, "tip block missing")
        assert previous is not None
        return max(clock_ms, previous[0].timestamp + 1)

    def build_proposal(
        self, transactions: Sequence[Transaction], timestamp_ms: int, proposer: int, view: int
    ) -> Proposal:
        """Execute `transactions` on the tip and build the header with the resulting roots."""
        height = self.store.height + 1
        context = BlockContext(
            height, timestamp_ms, self.store.last_block_hash, self.genesis.params.tx_window_ms
        )
        output = execute_block(
            self.registry, self.store, self.store.state_root, context, transactions
        )
        header = BlockHeader(
            chain_id=self.genesis.chain_id,
            height=height,
            prev_hash=self.store.last_block_hash,
            proposer=proposer,
            receipts_root=output.receipts_root,
            state_root=output.state_root,
            timestamp=timestamp_ms,
            tx_root=output.tx_root,
            validators_hash=self.genesis.validators_hash,
            version=BLOCK_VERSION,
            view=view,
        )
        header_bytes = header.encode()
        return Proposal(header, header_bytes, sha256(header_bytes), tuple(transactions), output)

    def commit(self, proposal: Proposal, certificate: CommitCertificate) -> CommittedBlock:
        """Persist `proposal` with its certificate (blocking: one synced LevelDB batch)."""
        problem = certificate_problem(
            certificate,
            self.genesis.chain_id,
            proposal.block_hash,
            proposal.header.height,
            self.genesis.validator_keys,
        )
        require(problem is None, f"commit with an invalid certificate: {problem}")
        block = proposal.to_committed(certificate)
        self.store.commit_block(block, proposal.output.writes)
        return block
