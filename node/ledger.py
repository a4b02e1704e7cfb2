"""The ledger: the committed chain plus the one path every block takes to it.

validate header -> execute into a `BlockOutput` -> compare every root -> persist atomically.
The proposer runs `build_proposal`, every replica runs `check_proposal` on what it is
asked to vote for, state transfer runs `apply_proven_block` on fetched blocks, and
`commit` persists a proposal once a certificate exists. Proposals may stack on pending
(not yet committed) parents, so several heights can be in flight at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from contracts.runtime import ContractRegistry, StateReader
from node.block import (
    BLOCK_VERSION,
    BlockFormatError,
    BlockHeader,
    CommitCertificate,
    CommittedBlock,
    certificate_problem,
    compute_receipts_root,
    compute_tx_root,
    decode_write_set,
    sha256,
    state_root_after,
)
from node.errors import ChanceryError
from node.execution import BlockContext, BlockOutput, OverlayState, execute_block
from node.genesis import Genesis
from node.invariants import require
from node.storage import ChainStore
from node.transaction import Transaction, decode_envelope


@dataclass(frozen=True, slots=True)
class FetchedBlock:
    """A block as state transfer received it, every envelope signature already verified.

    `envelopes` are re-encoded canonically and `tx_ids` are their bodies' hashes; the rest
    is as the peer sent it, to be checked against the certificate.
    """

    header_bytes: bytes
    tx_ids: tuple[bytes, ...]
    envelopes: tuple[bytes, ...]
    receipts: tuple[bytes, ...]
    write_set: bytes | None  # None: sent bare (too big for a response); only replayable
    certificate: CommitCertificate


class ProposalRejected(Exception):
    """A proposal this replica will not vote for; `code` says why (for peer suspicion)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class PendingLayer:
    """One executed block not yet in the store: its height, hash, transactions and writes."""

    height: int
    block_hash: bytes
    tx_ids: frozenset[bytes]
    writes: Mapping[bytes, bytes | None]


def layered_state(base: StateReader, layers: Sequence[PendingLayer]) -> StateReader:
    """`base` (the committed store) with the pending layers' writes on top, oldest first."""
    state = base
    for layer in layers:
        state = OverlayState(state, layer.writes)
    return state


@dataclass(frozen=True)
class Parent:
    """What a new block builds on: the committed tip or a pending proposal."""

    height: int
    block_hash: bytes
    state_root: bytes
    timestamp_ms: int
    state: StateReader
    # The pending blocks between the store and this parent (this one included), oldest
    # first: bounded by the window, because layers the store has caught up with are
    # dropped (see `Proposal.as_parent`).
    pending: tuple[PendingLayer, ...] = ()

    def has_pending_tx(self, tx_id: bytes) -> bool:
        """True if a pending ancestor (not yet in the store) holds `tx_id`."""
        return any(tx_id in layer.tx_ids for layer in self.pending)


@dataclass(frozen=True, slots=True)
class Proposal:
    """A header with its transactions and the execution output its roots came from."""

    header: BlockHeader
    header_bytes: bytes
    block_hash: bytes
    transactions: tuple[Transaction, ...]
    output: BlockOutput
    parent_pending: tuple[PendingLayer, ...]

    @classmethod
    def on_parent(
        cls,
        parent: Parent,
        header: BlockHeader,
        header_bytes: bytes,
        transactions: Sequence[Transaction],
        output: BlockOutput,
    ) -> Proposal:
        return cls(
            header,
            header_bytes,
            sha256(header_bytes),
            tuple(transactions),
            output,
            parent.pending,
        )

    @property
    def height(self) -> int:
        return self.header.height

    def as_parent(self, store: ChainStore) -> Parent:
        """This pending block as the parent of the next height, over the committed `store`.

        Layers at or below the store's height are in the store already and are dropped:
        otherwise every proposal built on a pending one would carry all of the chain's
        history since the pipeline last ran empty (memory and lookups growing with age).
        """
        own = PendingLayer(
            self.header.height,
            self.block_hash,
            frozenset(tx.tx_id for tx in self.transactions),
            self.output.writes,
        )
        layers = tuple(
            layer for layer in (*self.parent_pending, own) if layer.height > store.height
        )
        return Parent(
            self.header.height,
            self.block_hash,
            self.header.state_root,
            self.header.timestamp,
            layered_state(store, layers),
            layers,
        )

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


class PendingHistory:
    """Block hashes below a parent: its pending ancestors' from their layers, the rest
    from the committed store (`ChainHistory` for execution)."""

    def __init__(self, store: ChainStore, parent: Parent) -> None:
        self._store = store
        self._parent = parent

    def block_hash_at(self, height: int) -> bytes:
        if height == self._parent.height:
            return self._parent.block_hash
        for layer in self._parent.pending:
            if layer.height == height:
                return layer.block_hash
        block_hash = self._store.block_hash_at(height)
        require(block_hash is not None, f"block {height} is neither pending nor stored")
        assert block_hash is not None  # for the type checker; require() crashes first
        return block_hash


def _reject(code: str, message: str) -> ProposalRejected:
    return ProposalRejected(code, message)


class Ledger:
    """Executes, checks and commits blocks; the committed chain lives in `store`."""

    def __init__(self, genesis: Genesis, store: ChainStore, registry: ContractRegistry) -> None:
        self.genesis = genesis
        self.store = store
        self.registry = registry

    @property
    def height(self) -> int:
        return self.store.height

    def tip(self) -> Parent:
        """The committed tip as a parent."""
        summary = self.store.get_block_summary(self.store.height)
        require(summary is not None, "tip block missing")
        assert summary is not None  # for the type checker; require() crashes first
        return Parent(
            self.store.height,
            self.store.last_block_hash,
            self.store.state_root,
            summary[0].timestamp,
            self.store,
        )

    def _execute(
        self, parent: Parent, transactions: Sequence[Transaction], timestamp_ms: int
    ) -> BlockOutput:
        context = BlockContext(
            parent.height + 1,
            timestamp_ms,
            parent.block_hash,
            self.genesis.params.tx_window_ms,
            PendingHistory(self.store, parent),
        )
        return execute_block(self.registry, parent.state, parent.state_root, context, transactions)

    def build_proposal(
        self,
        parent: Parent,
        transactions: Sequence[Transaction],
        clock_ms: int,
        proposer: int,
        view: int,
    ) -> Proposal:
        """Execute `transactions` on `parent` and build the header with the resulting roots.

        The timestamp is the clock, or one past the parent's if the clock is behind it.
        """
        timestamp_ms = max(clock_ms, parent.timestamp_ms + 1)
        output = self._execute(parent, transactions, timestamp_ms)
        header = BlockHeader(
            chain_id=self.genesis.chain_id,
            height=parent.height + 1,
            prev_hash=parent.block_hash,
            proposer=proposer,
            receipts_root=output.receipts_root,
            state_root=output.state_root,
            timestamp=timestamp_ms,
            tx_root=output.tx_root,
            validators_hash=self.genesis.validators_hash,
            version=BLOCK_VERSION,
            view=view,
        )
        return Proposal.on_parent(parent, header, header.encode(), transactions, output)

    def check_header(
        self, header_bytes: bytes, parent: Parent, clock_ms: int | None
    ) -> BlockHeader:
        """Validate a proposed header against its parent, one condition per line.

        `clock_ms` None skips the drift check (historical blocks in state transfer).

        Raises:
            ProposalRejected: naming the first condition that fails.
        """
        try:
            header = BlockHeader.decode(header_bytes)
        except BlockFormatError as exc:
            raise _reject("proposal.malformed", str(exc)) from None
        if header.chain_id != self.genesis.chain_id:
            raise _reject("proposal.wrong_chain", "header names another chain")
        if header.version != BLOCK_VERSION:
            raise _reject("proposal.version", f"header version {header.version}")
        if header.height != parent.height + 1:
            raise _reject("proposal.height", f"height {header.height} on parent {parent.height}")
        if header.prev_hash != parent.block_hash:
            raise _reject("proposal.parent", "prev_hash is not the parent's hash")
        if header.validators_hash != self.genesis.validators_hash:
            raise _reject("proposal.validators", "validators_hash differs from genesis")
        if not 0 <= header.proposer < len(self.genesis.validators):
            raise _reject("proposal.proposer", "proposer is not a validator index")
        if header.timestamp <= parent.timestamp_ms:
            raise _reject("proposal.timestamp", "timestamp not after the parent's")
        drift_ms = self.genesis.params.max_clock_drift_ms
        if clock_ms is not None and header.timestamp > clock_ms + drift_ms:
            raise _reject("proposal.timestamp", "timestamp too far ahead of this node's clock")
        return header

    def check_transactions(self, transactions: Sequence[Transaction], parent: Parent) -> None:
        """Limits and replay: counts, bytes, chain, and no tx seen before on this branch.

        Signatures are the caller's to verify (on the thread pool, before this).

        Raises:
            ProposalRejected: naming the offending transaction.
        """
        params = self.genesis.params
        if len(transactions) > params.max_block_txs:
            raise _reject("proposal.too_many_txs", f"{len(transactions)} transactions")
        if sum(tx.size_bytes for tx in transactions) > params.max_block_bytes:
            raise _reject("proposal.too_large", "block over max_block_bytes")
        seen: set[bytes] = set()
        for tx in transactions:
            if tx.body.chain_id != self.genesis.chain_id:
                raise _reject("proposal.wrong_chain_tx", f"tx {tx.tx_id.hex()} of another chain")
            if tx.tx_id in seen or parent.has_pending_tx(tx.tx_id):
                raise _reject("proposal.duplicate_tx", f"tx {tx.tx_id.hex()} repeated")
            if self.store.has_tx(tx.tx_id):
                raise _reject("proposal.duplicate_tx", f"tx {tx.tx_id.hex()} already committed")
            seen.add(tx.tx_id)

    def check_proposal(
        self,
        header_bytes: bytes,
        transactions: Sequence[Transaction],
        parent: Parent,
        clock_ms: int | None,
    ) -> Proposal:
        """Re-execute a proposed block and accept it only if every root matches.

        Raises:
            ProposalRejected: bad header, bad transactions, or roots that differ.
        """
        header = self.check_header(header_bytes, parent, clock_ms)
        self.check_transactions(transactions, parent)
        output = self._execute(parent, transactions, header.timestamp)
        if output.tx_root != header.tx_root:
            raise _reject("proposal.tx_root", "tx_root differs from the transactions")
        if output.receipts_root != header.receipts_root:
            raise _reject("proposal.receipts_root", "receipts_root differs from execution")
        if output.state_root != header.state_root:
            raise _reject("proposal.state_root", "state_root differs from execution")
        return Proposal.on_parent(parent, header, header_bytes, transactions, output)

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
        self.store.commit_block(block, proposal.output.writes, proposal.output.write_set)
        return block

    def replay_certified_block(self, block: FetchedBlock) -> CommittedBlock:
        """State transfer when the envelopes are not corroborated: check the certificate,
        re-execute the block and compare every root, then commit it.

        Re-execution ties each envelope's signer to the certified roots (it decides whose
        org and roles the call ran with), which corroboration by other peers otherwise does.

        Raises:
            ProposalRejected: the certificate, a transaction or a root does not hold up.
        """
        certificate = block.certificate
        block_hash = sha256(block.header_bytes)
        problem = certificate_problem(
            certificate,
            self.genesis.chain_id,
            block_hash,
            self.store.height + 1,
            self.genesis.validator_keys,
        )
        if problem is not None:
            raise _reject("sync.bad_certificate", problem)
        try:
            transactions = [decode_envelope(envelope) for envelope in block.envelopes]
        except ChanceryError as error:  # signatures verified, so only the body can be bad
            raise _reject("proposal.tx_root", f"undecodable body: {error.message}") from None
        proposal = self.check_proposal(block.header_bytes, transactions, self.tip(), None)
        return self.commit(proposal, certificate)

    def apply_proven_blocks(
        self, blocks: Sequence[FetchedBlock]
    ) -> tuple[list[CommittedBlock], ProposalRejected | None]:
        """State transfer: commit consecutive fetched blocks once their certificates prove
        every part; returns the blocks committed and, if one did not hold up, why.

        Nothing is re-executed. The certificate's 2f+1 signatures on the header mean at least
        f+1 honest validators executed the block and got its roots; here each root is tied to
        what the peer sent: `tx_root` to the bodies' hashes, `receipts_root` to the receipts,
        and `state_root`, chained from this node's own root, to the write set. No root covers
        the envelopes' signers: the caller has verified every signature and had f other
        validators confirm the envelopes' digest (else it replays the block instead).
        Replaying from genesis with the contracts is the auditor's job (`chancery audit`).

        The blocks that hold up, up to the first that does not, go to disk in one synced
        batch (the blocks before a bad one were each proven on their own).
        """
        parent = self.tip()
        proven: list[tuple[CommittedBlock, dict[bytes, bytes | None], bytes]] = []
        rejection: ProposalRejected | None = None
        for block in blocks:
            try:
                committed, writes = self._prove(block, parent)
            except ProposalRejected as refused:
                rejection = refused
                break
            assert block.write_set is not None  # _prove refuses bare blocks
            proven.append((committed, writes, block.write_set))
            header = committed.header
            parent = Parent(
                header.height,
                committed.block_hash,
                header.state_root,
                header.timestamp,
                self.store,
            )
        self.store.commit_blocks(proven)
        return [committed for committed, _, _ in proven], rejection

    def _prove(
        self, block: FetchedBlock, parent: Parent
    ) -> tuple[CommittedBlock, dict[bytes, bytes | None]]:
        """Check one fetched block against its certificate on top of `parent`.

        Raises:
            ProposalRejected: the certificate or a root does not hold up.
        """
        block_hash = sha256(block.header_bytes)
        problem = certificate_problem(
            block.certificate,
            self.genesis.chain_id,
            block_hash,
            parent.height + 1,
            self.genesis.validator_keys,
        )
        if problem is not None:
            raise _reject("sync.bad_certificate", problem)
        header = self.check_header(block.header_bytes, parent, clock_ms=None)
        if len(block.tx_ids) > self.genesis.params.max_block_txs:
            raise _reject("proposal.too_many_txs", f"{len(block.tx_ids)} transactions")
        if len(block.receipts) != len(block.tx_ids):
            raise _reject("proposal.receipts_root", "one receipt per transaction")
        if compute_tx_root(block.tx_ids) != header.tx_root:
            raise _reject("proposal.tx_root", "tx_root differs from the transactions")
        if compute_receipts_root(block.receipts) != header.receipts_root:
            raise _reject("proposal.receipts_root", "receipts_root differs from the receipts")
        if block.write_set is None:  # the caller replays bare blocks; this is a bug
            raise _reject("proposal.state_root", "a bare block has no write set to prove")
        if state_root_after(parent.state_root, block.write_set) != header.state_root:
            raise _reject("proposal.state_root", "state_root differs from the write set")
        try:
            writes = decode_write_set(block.write_set)
        except BlockFormatError as exc:  # a certified root over a malformed set: never honest
            raise _reject("proposal.state_root", str(exc)) from None
        committed = CommittedBlock(
            header=header,
            header_bytes=block.header_bytes,
            block_hash=block_hash,
            tx_ids=block.tx_ids,
            envelopes=block.envelopes,
            receipts=block.receipts,
            commit=block.certificate,
        )
        return committed, writes
