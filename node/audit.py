"""The auditor: replay a chain from genesis and report the first place it does not hold up.

`ChainAuditor.run` is fed a stream of blocks (`SourceBlock`: the export map of API.md's
`GET /v1/blocks`, plus what a data directory keeps beside it) and knows nothing of where
they come from (`node.audit_sources` reads a node's export stream or a copy of its data
directory). Each block goes through one fixed order of checks, and the first that fails
ends the audit with a `Divergence`:

1. shape: the block map has exactly `commit`, `header`, `receipts`, `txs` of the right types;
   height 0 must be the genesis file's block, byte for byte;
2. header: decodes canonically; `chain_id`, `version`, `height`, `prev_hash` (the hash
   chain), `validators_hash`, `proposer`, `timestamp` (strictly increasing);
3. certificate: names this header's hash and height, and carries 2f+1 valid commit votes of
   distinct genesis validators (`node.block.certificate_problem`);
4. block limits (`max_block_txs`, `max_block_bytes`), then every envelope: decodes, is the
   canonical encoding, its signature verifies, it names this chain; no `tx_id` repeats
   anywhere in the chain; a data directory's stored `tx_ids` are the bodies' hashes;
5. `tx_root` over the `tx_id`s;
6. replay with the built-in contracts (`node.execution.execute_block`, from the genesis
   state, with the header's height, timestamp and `prev_hash`): one receipt per
   transaction, each byte for byte (naming the first field that differs), then
   `receipts_root`, then `state_root`;
7. a data directory's records beside the block: the write set `w:<h>` (naming the first key
   that differs from the replay's) and the envelopes digest `e:<h>`. After the last block,
   `node.audit_sources` checks the chain metadata, the `t:` index and the whole state.

Signatures (the envelopes' and the certificates') are verified on a thread pool (libsodium
releases the GIL), up to `lookahead_blocks` blocks ahead of the replay, which runs on the
calling thread in height order. docs/audit.md has the measured rates, and why the overlap
is only partial (the interpreter lock).

Memory: the replayed state is a dict in memory (about 215 bytes per state key), and every
`tx_id` is kept with its position, to refuse a repeated one and to check a data directory's
`t:` index (about 150 bytes per transaction). Measured on 100,000 `add_member` calls (two
state keys each): 58 MB, so about 600 bytes per transaction, 600 MB for a million.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, Final

from consensus.quorum import quorum_size
from contracts.runtime import ContractRegistry
from node.block import (
    BLOCK_VERSION,
    HASH_BYTES,
    BlockFormatError,
    BlockHeader,
    CommitCertificate,
    Receipt,
    certificate_problem,
    compute_tx_root,
    decode_write_set,
    encode_write_set,
    envelopes_digest,
    sha256,
    to_json_value,
)
from node.crypto import DOMAIN_TX, verify
from node.encoding import EncodingError, canonical_packb, unpackb_strict
from node.errors import ChanceryError
from node.execution import BlockContext, BlockOutput, execute_block
from node.genesis import Genesis
from node.transaction import Transaction, build_transaction, split_envelope

# Blocks whose signatures may be verified ahead of the replay, and their transactions:
# the bound on what the pipeline holds in memory besides the state.
LOOKAHEAD_BLOCKS_DEFAULT: Final = 32
LOOKAHEAD_TXS_MAX: Final = 20_000
# Envelopes per job on the verify pool: large blocks are split so every thread gets work.
VERIFY_CHUNK_TXS: Final = 256
EXPORT_FIELDS: Final = frozenset({"commit", "header", "receipts", "txs"})
RECEIPT_FIELDS: Final = ("tx_id", "ok", "error", "result", "events")
TX_INDEX_BITS: Final = 32  # a position is `height << TX_INDEX_BITS | index`
# A value quoted in the one-paragraph report is cut after this many characters.
RENDERED_CHARS_MAX: Final = 200


@dataclass(frozen=True, slots=True)
class Divergence:
    """The first thing in the chain that does not hold up, exactly where it is.

    `check` is a stable code (docs/audit.md lists them); `expected` is what the genesis
    file, the parent block or the replay says, `found` what the chain has (JSON values,
    bytes as hex).
    """

    height: int
    check: str
    message: str
    expected: Any = None
    found: Any = None
    tx_index: int | None = None
    tx_id: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "tx_index": self.tx_index,
            "tx_id": None if self.tx_id is None else self.tx_id.hex(),
            "check": self.check,
            "expected": to_json_value(self.expected),
            "found": to_json_value(self.found),
            "message": self.message,
        }

    def describe(self) -> str:
        """One paragraph for people."""
        where = f"at height {self.height}"
        if self.tx_index is not None:
            where += f", transaction {self.tx_index}"
        if self.tx_id is not None:
            where += f" (tx_id {self.tx_id.hex()})"
        text = f"DIVERGENCE {where}: check {self.check} failed: {self.message}."
        if self.expected is not None:
            text += f" Expected {_render(self.expected)}; found {_render(self.found)}."
        elif self.found is not None:
            text += f" Found {_render(self.found)}."
        return text


def _render(value: Any) -> str:
    """A value in a sentence: JSON, long ones cut short (`--json` has them in full)."""
    text = json.dumps(to_json_value(value), separators=(",", ":"))
    if len(text) > RENDERED_CHARS_MAX:
        text = f"{text[:RENDERED_CHARS_MAX]}... ({len(text)} characters)"
    return text


@dataclass(frozen=True, slots=True)
class StoredRecords:
    """What a data directory keeps beside a block, to be checked against the replay.

    The `t:` index is checked once at the end, in one sequential scan (see
    `AuditResult.tx_positions`): a random read per transaction would cost more than its
    replay.
    """

    tx_ids: Any
    write_set: bytes | None
    envelopes_digest: bytes | None


@dataclass(frozen=True, slots=True)
class SourceBlock:
    """One block as a source delivered it: `record` is the export map as decoded (not yet
    trusted in any way); `height` is where in the stream it came (0 first)."""

    height: int
    record: Any
    stored: StoredRecords | None = None


# A source yields blocks in height order from 0, or a Divergence for a block it could not
# even read (a corrupt record), which ends the audit there.
SourceItem = SourceBlock | Divergence


@dataclass(frozen=True)
class AuditResult:
    """How far the audit got and, unless the chain is clean, where it diverged."""

    blocks: int
    transactions: int
    seconds: float
    divergence: Divergence | None
    height: int  # the last height that held up (-1: none)
    block_hash: bytes
    state_root: bytes
    state: dict[bytes, bytes] = field(repr=False)
    # tx_id -> its position `height << TX_INDEX_BITS | index`, in chain order.
    tx_positions: dict[bytes, int] = field(repr=False)

    @property
    def clean(self) -> bool:
        return self.divergence is None

    @property
    def tx_per_s(self) -> float:
        return self.transactions / self.seconds if self.seconds > 0 else 0.0


# --- work done on the verify pool (no chain state: only the block itself) ----------------


@dataclass(frozen=True, slots=True)
class _Head:
    """A block's header and certificate, checked as far as the block alone allows."""

    header: BlockHeader | None
    block_hash: bytes
    header_problem: Divergence | None
    certificate: CommitCertificate | None
    certificate_problem: Divergence | None


@dataclass(frozen=True, slots=True)
class _Opened:
    """A chunk of envelopes: the transactions up to the first bad one, and why it is bad."""

    transactions: list[Transaction]
    problem: Divergence | None


@dataclass(frozen=True, slots=True)
class _Authority:
    """What the pool needs of the genesis file to check certificates (small to pickle)."""

    chain_id: str
    validator_keys: tuple[bytes, ...]
    genesis_certificate: CommitCertificate

    @classmethod
    def of(cls, genesis: Genesis) -> _Authority:
        certificate = genesis.genesis_block().commit
        return cls(genesis.chain_id, genesis.validator_keys, certificate)


def _check_head(authority: _Authority, height: int, header_bytes: bytes, commit: Any) -> _Head:
    block_hash = sha256(header_bytes)
    header: BlockHeader | None = None
    header_problem: Divergence | None = None
    try:
        header = BlockHeader.decode(header_bytes)
    except BlockFormatError as exc:
        header_problem = Divergence(height, "header.decode", str(exc), found=header_bytes)
    try:
        certificate = CommitCertificate.from_wire(commit)
    except BlockFormatError as exc:
        problem = Divergence(height, "certificate.decode", str(exc))
        return _Head(header, block_hash, header_problem, None, problem)
    return _Head(
        header,
        block_hash,
        header_problem,
        certificate,
        _certificate_divergence(authority, height, block_hash, certificate),
    )


def _certificate_divergence(
    authority: _Authority, height: int, block_hash: bytes, certificate: CommitCertificate
) -> Divergence | None:
    if height == 0:  # the genesis file is height 0's authority: its certificate is empty
        if certificate != authority.genesis_certificate:
            return Divergence(
                height,
                "certificate.genesis",
                "the genesis block's certificate is not the empty one the genesis file gives",
                expected=authority.genesis_certificate.to_json(),
                found=certificate.to_json(),
            )
        return None
    if certificate.block_hash != block_hash:
        return Divergence(
            height,
            "certificate.block_hash",
            "the certificate names another block than this header hashes to: the header or "
            "the certificate was changed after the validators signed",
            expected=block_hash,
            found=certificate.block_hash,
        )
    if certificate.height != height:
        return Divergence(
            height,
            "certificate.height",
            "the certificate names another height",
            expected=height,
            found=certificate.height,
        )
    keys = authority.validator_keys
    problem = certificate_problem(certificate, authority.chain_id, block_hash, height, keys)
    if problem is None:
        return None
    return Divergence(
        height,
        "certificate.signatures",
        problem,
        expected=f"{quorum_size(len(keys))} valid commit votes of distinct validators "
        f"0..{len(keys) - 1}",
        found=[[index, signature] for index, signature in certificate.signatures],
    )


def _open_envelopes(
    chain_id: str, height: int, first_index: int, envelopes: list[bytes]
) -> _Opened:
    """Decode and verify a chunk of a block's envelopes (blocking; runs on the pool)."""
    transactions: list[Transaction] = []
    for offset, envelope in enumerate(envelopes):
        index = first_index + offset
        opened = _open_envelope(chain_id, height, index, envelope)
        if isinstance(opened, Divergence):
            return _Opened(transactions, opened)
        transactions.append(opened)
    return _Opened(transactions, None)


def _open_envelope(
    chain_id: str, height: int, index: int, envelope: bytes
) -> Transaction | Divergence:
    try:
        body, signer, signature = split_envelope(envelope)
    except ChanceryError as error:
        return Divergence(height, "tx.decode", error.message, found=envelope, tx_index=index)
    try:
        transaction = build_transaction(body, signer, signature)
    except ChanceryError as error:
        check = "tx.canonical" if _decodes_but_not_canonical(body) else "tx.decode"
        tx_id = sha256(body)
        return Divergence(height, check, error.message, found=body, tx_index=index, tx_id=tx_id)
    tx_id = transaction.tx_id
    if transaction.envelope != envelope:
        return Divergence(
            height,
            "tx.canonical",
            "the stored envelope is not the canonical encoding of its body, signer and signature",
            expected=transaction.envelope,
            found=envelope,
            tx_index=index,
            tx_id=tx_id,
        )
    if not verify(signer, DOMAIN_TX, body, signature):
        return Divergence(
            height,
            "tx.signature",
            "the transaction signature does not verify against its signer",
            found={"signer": signer, "signature": signature},
            tx_index=index,
            tx_id=tx_id,
        )
    if transaction.body.chain_id != chain_id:
        return Divergence(
            height,
            "tx.chain_id",
            "the transaction names another chain",
            expected=chain_id,
            found=transaction.body.chain_id,
            tx_index=index,
            tx_id=tx_id,
        )
    return transaction


def _decodes_but_not_canonical(body: bytes) -> bool:
    try:
        return canonical_packb(unpackb_strict(body)) != body
    except EncodingError:
        return False


# --- the pipeline: blocks in, checked heads and opened envelopes out, in order -----------


@dataclass
class _Pending:
    """A source item with the pool's work on it under way."""

    item: SourceItem | BaseException
    tx_count: int = 0
    shape_problem: Divergence | None = None
    head: Future[_Head] | None = None
    chunks: list[Future[_Opened]] = field(default_factory=list)

    def cancel(self) -> None:
        for future in (self.head, *self.chunks):
            if future is not None:
                future.cancel()


def _shape_problem(block: SourceBlock) -> Divergence | None:
    """Why the block map is not the export format's shape, or None."""
    record = block.record
    if not isinstance(record, dict) or record.keys() != EXPORT_FIELDS:
        found = sorted(map(str, record)) if isinstance(record, dict) else type(record).__name__
        return Divergence(
            block.height,
            "block.malformed",
            "a block must be a map of exactly commit, header, receipts, txs",
            expected=sorted(EXPORT_FIELDS),
            found=found,
        )
    if not isinstance(record["header"], bytes):
        return Divergence(block.height, "block.malformed", "header must be bin")
    for name in ("txs", "receipts"):
        items = record[name]
        if not isinstance(items, list) or not all(isinstance(item, bytes) for item in items):
            return Divergence(block.height, "block.malformed", f"{name} must be a list of bin")
    return None


class _Lookahead:
    """Pulls source items ahead of the replay and starts their pool work, in order.

    Source errors are kept in their place in the stream: a divergence before them is
    still reported first.
    """

    def __init__(
        self,
        authority: _Authority,
        executor: Executor,
        source: Iterable[SourceItem],
        lookahead_blocks: int,
    ) -> None:
        self._authority = authority
        self._executor = executor
        self._source: Iterator[SourceItem] = iter(source)
        self._lookahead_blocks = max(1, lookahead_blocks)
        self._pending: deque[_Pending] = deque()
        self._pending_txs = 0
        self._exhausted = False

    def __iter__(self) -> Iterator[_Pending]:
        try:
            while True:
                self._fill()
                if not self._pending:
                    return
                pending = self._pending.popleft()
                self._pending_txs -= pending.tx_count
                yield pending
        finally:
            for pending in self._pending:
                pending.cancel()
            close = getattr(self._source, "close", None)
            if close is not None:  # a generator: let it release what it reads from now
                close()

    def _fill(self) -> None:
        while (
            not self._exhausted
            and len(self._pending) < self._lookahead_blocks
            and (not self._pending or self._pending_txs < LOOKAHEAD_TXS_MAX)
        ):
            try:
                item = next(self._source)
            except StopIteration:
                self._exhausted = True
                return
            except Exception as exc:  # reported when the replay gets there
                self._exhausted = True
                self._pending.append(_Pending(exc))
                return
            pending = self._start(item)
            self._pending.append(pending)
            self._pending_txs += pending.tx_count

    def _start(self, item: SourceItem) -> _Pending:
        if isinstance(item, Divergence):
            return _Pending(item)
        problem = _shape_problem(item)
        if problem is not None:
            return _Pending(item, shape_problem=problem)
        executor, record = self._executor, item.record
        envelopes: list[bytes] = record["txs"]
        head = executor.submit(
            _check_head, self._authority, item.height, record["header"], record["commit"]
        )
        chunks = [
            executor.submit(
                _open_envelopes,
                self._authority.chain_id,
                item.height,
                start,
                envelopes[start : start + VERIFY_CHUNK_TXS],
            )
            for start in range(0, len(envelopes), VERIFY_CHUNK_TXS)
        ]
        return _Pending(item, len(envelopes), None, head, chunks)


# --- the auditor -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Parent:
    height: int
    block_hash: bytes
    timestamp_ms: int
    state_root: bytes


class _Stop(Exception):
    """Carries the first divergence out of the checks of one block."""

    def __init__(self, divergence: Divergence) -> None:
        super().__init__(divergence.message)
        self.divergence = divergence


ProgressListener = Callable[[int, int], None]  # (blocks, transactions) just audited


class ChainAuditor:
    """Replays a chain from the genesis state and checks every block on the way.

    One auditor audits one stream (`run`); its `state` is the replayed state afterwards.
    `executor` runs the signature checks, normally `SignatureVerifier.executor` (a thread
    pool; `node.bench_audit --pool processes` measures a process pool); the caller owns it.
    """

    def __init__(
        self,
        genesis: Genesis,
        registry: ContractRegistry,
        executor: Executor,
        *,
        lookahead_blocks: int = LOOKAHEAD_BLOCKS_DEFAULT,
    ) -> None:
        self.genesis = genesis
        self.registry = registry
        self.executor = executor
        self._authority = _Authority.of(genesis)
        self.lookahead_blocks = lookahead_blocks
        self.state: dict[bytes, bytes] = {}
        self._tx_positions: dict[bytes, int] = {}
        self._parent: _Parent | None = None
        self._history = _AuditedHashes()
        self._blocks = 0
        self._transactions = 0

    def run(
        self, source: Iterable[SourceItem], on_progress: ProgressListener | None = None
    ) -> AuditResult:
        """Audit every block `source` yields, in order from height 0, up to the first
        divergence.

        Raises:
            Exception: whatever the source raised (it could not deliver blocks), once the
                blocks before it have been audited clean.
        """
        started_s = time.perf_counter()
        divergence: Divergence | None = None
        lookahead = _Lookahead(self._authority, self.executor, source, self.lookahead_blocks)
        for pending in lookahead:
            try:
                transactions = self._audit(pending)
            except _Stop as stop:
                divergence = stop.divergence
                break
            self._blocks += 1
            self._transactions += transactions
            if on_progress is not None:
                on_progress(1, transactions)
        parent = self._parent
        if parent is None and divergence is None:
            divergence = Divergence(0, "block.missing", "the source delivered no block at all")
        return AuditResult(
            blocks=self._blocks,
            transactions=self._transactions,
            seconds=time.perf_counter() - started_s,
            divergence=divergence,
            height=-1 if parent is None else parent.height,
            block_hash=b"" if parent is None else parent.block_hash,
            state_root=b"" if parent is None else parent.state_root,
            state=self.state,
            tx_positions=self._tx_positions,
        )

    def _audit(self, pending: _Pending) -> int:
        """Check one block and fold it into the state; returns its transaction count.

        Raises:
            _Stop: the block's first divergence.
        """
        item = pending.item
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, Divergence):
            raise _Stop(item)
        expected_height = 0 if self._parent is None else self._parent.height + 1
        if item.height != expected_height:  # a source that skipped or repeated a block
            raise _Stop(
                Divergence(
                    expected_height,
                    "block.missing",
                    "the source did not deliver this height next",
                    expected=expected_height,
                    found=item.height,
                )
            )
        if pending.shape_problem is not None:
            raise _Stop(pending.shape_problem)
        assert pending.head is not None  # set whenever the shape holds
        head = pending.head.result()
        if item.height == 0:
            self._check_genesis(item, head)
            if item.stored is not None:
                genesis_write_set = encode_write_set(self.genesis.genesis_writes())
                _check_stored(0, [], item.stored, genesis_write_set)
            return 0
        header = self._check_header(item.height, head)
        if head.certificate_problem is not None:
            raise _Stop(head.certificate_problem)
        transactions = self._check_transactions(item, header, pending)
        output = self._replay(header, transactions)
        self._check_output(item, header, output)
        self._commit(header, head.block_hash, output)
        return len(transactions)

    # -- 1, 2: genesis and header ---------------------------------------------------------

    def _check_genesis(self, block: SourceBlock, head: _Head) -> None:
        genesis_block = self.genesis.genesis_block()
        if block.record["header"] != genesis_block.header_bytes:
            found: Any = head.header.to_json() if head.header else block.record["header"]
            raise _Stop(
                Divergence(
                    0,
                    "genesis",
                    "block 0 is not the genesis block of the genesis file (another chain?)",
                    expected=genesis_block.header.to_json(),
                    found=found,
                )
            )
        if block.record["txs"] or block.record["receipts"]:
            raise _Stop(Divergence(0, "genesis", "the genesis block has no transactions"))
        if head.certificate_problem is not None:
            raise _Stop(head.certificate_problem)
        self._history.append(genesis_block.block_hash)
        self._parent = _Parent(
            0,
            genesis_block.block_hash,
            genesis_block.header.timestamp,
            genesis_block.header.state_root,
        )
        self.state = {
            key: value for key, value in self.genesis.genesis_writes().items() if value is not None
        }

    def _check_header(self, height: int, head: _Head) -> BlockHeader:
        """The header's own fields against the genesis file and the parent block.

        Raises:
            _Stop: `header.*` naming the first field that is wrong.
        """
        if head.header_problem is not None:
            raise _Stop(head.header_problem)
        header, parent = head.header, self._parent
        assert header is not None and parent is not None
        genesis = self.genesis
        validators = len(genesis.validators)
        checks = (
            ("chain_id", genesis.chain_id, header.chain_id, "the header names another chain"),
            ("version", BLOCK_VERSION, header.version, "unknown block version"),
            ("height", height, header.height, "the height does not follow the parent's"),
            (
                "prev_hash",
                parent.block_hash,
                header.prev_hash,
                "prev_hash is not the previous block's hash: the hash chain is broken",
            ),
            (
                "validators_hash",
                genesis.validators_hash,
                header.validators_hash,
                "validators_hash is not the genesis validators'",
            ),
        )
        for name, expected, found, message in checks:
            if found != expected:
                raise _Stop(Divergence(height, f"header.{name}", message, expected, found))
        if not 0 <= header.proposer < validators:
            raise _Stop(
                Divergence(
                    height,
                    "header.proposer",
                    "the proposer is not a validator index",
                    expected=f"0..{validators - 1}",
                    found=header.proposer,
                )
            )
        if header.timestamp <= parent.timestamp_ms:
            raise _Stop(
                Divergence(
                    height,
                    "header.timestamp",
                    "the timestamp is not after the parent block's",
                    expected=f"> {parent.timestamp_ms}",
                    found=header.timestamp,
                )
            )
        return header

    # -- 4, 5: limits, envelopes, tx ids --------------------------------------------------

    def _check_transactions(
        self, block: SourceBlock, header: BlockHeader, pending: _Pending
    ) -> list[Transaction]:
        """The block's transactions, every one decoded, canonical, signed and new.

        Raises:
            _Stop: `block.*`, `tx.*`, `store.tx_ids` or `tx_root`.
        """
        height = block.height
        self._check_limits(height, block.record["txs"])
        transactions: list[Transaction] = []
        for chunk in pending.chunks:
            opened = chunk.result()
            if opened.problem is not None:
                raise _Stop(opened.problem)
            transactions.extend(opened.transactions)
        tx_ids = [tx.tx_id for tx in transactions]
        self._check_new(height, tx_ids)
        if block.stored is not None and block.stored.tx_ids != tx_ids:
            raise _Stop(_stored_tx_ids_divergence(height, block.stored.tx_ids, tx_ids))
        tx_root = compute_tx_root(tx_ids)
        if tx_root != header.tx_root:
            message = "tx_root is not the Merkle root of the transactions' ids"
            raise _Stop(Divergence(height, "tx_root", message, tx_root, header.tx_root))
        return transactions

    def _check_limits(self, height: int, envelopes: list[bytes]) -> None:
        params = self.genesis.params
        if len(envelopes) > params.max_block_txs:
            message = "more transactions than the genesis allows (max_block_txs)"
            found = len(envelopes)
            raise _Stop(
                Divergence(height, "block.too_many_txs", message, params.max_block_txs, found)
            )
        size_bytes = sum(len(envelope) for envelope in envelopes)
        if size_bytes > params.max_block_bytes:
            message = "more envelope bytes than the genesis allows (max_block_bytes)"
            limit = params.max_block_bytes
            raise _Stop(Divergence(height, "block.too_large", message, limit, size_bytes))

    def _check_new(self, height: int, tx_ids: list[bytes]) -> None:
        """Raises: _Stop `tx.duplicate` for the first `tx_id` committed before."""
        if len(set(tx_ids)) == len(tx_ids) and self._tx_positions.keys().isdisjoint(tx_ids):
            return
        seen: set[bytes] = set()
        for index, tx_id in enumerate(tx_ids):
            if tx_id in seen or tx_id in self._tx_positions:
                message = "this transaction was committed before"
                raise _Stop(
                    Divergence(height, "tx.duplicate", message, tx_index=index, tx_id=tx_id)
                )
            seen.add(tx_id)

    # -- 6: replay ------------------------------------------------------------------------

    def _replay(self, header: BlockHeader, transactions: list[Transaction]) -> BlockOutput:
        assert self._parent is not None
        context = BlockContext(
            header.height,
            header.timestamp,
            header.prev_hash,
            self.genesis.params.tx_window_ms,
            self._history,
        )
        return execute_block(
            self.registry, self.state, self._parent.state_root, context, transactions
        )

    def _check_output(self, block: SourceBlock, header: BlockHeader, output: BlockOutput) -> None:
        """The block's receipts and roots against the replay's, then a data directory's
        records beside the block.

        Raises:
            _Stop: `receipts.count`, `receipt.*`, `receipts_root`, `state_root`, `store.*`.
        """
        height = block.height
        receipts: list[bytes] = block.record["receipts"]
        if len(receipts) != len(output.receipt_bytes):
            message = "there must be one receipt per transaction"
            expected = len(output.receipt_bytes)
            raise _Stop(Divergence(height, "receipts.count", message, expected, len(receipts)))
        for index, (ours, theirs) in enumerate(zip(output.receipt_bytes, receipts, strict=True)):
            if ours != theirs:
                raise _Stop(receipt_divergence(height, index, output.receipts[index], theirs))
        if output.receipts_root != header.receipts_root:
            message = "receipts_root is not the root of the replayed receipts"
            expected, found = output.receipts_root, header.receipts_root
            raise _Stop(Divergence(height, "receipts_root", message, expected, found))
        if output.state_root != header.state_root:
            message = "state_root is not the root the replay reaches"
            if block.stored is not None and block.stored.write_set is not None:
                write_set = encode_write_set(output.writes)
                message += f" ({_write_set_difference(block.stored.write_set, write_set)})"
            expected, found = output.state_root, header.state_root
            raise _Stop(Divergence(height, "state_root", message, expected, found))
        if block.stored is not None:
            write_set = encode_write_set(output.writes)
            _check_stored(height, block.record["txs"], block.stored, write_set)

    def _commit(self, header: BlockHeader, block_hash: bytes, output: BlockOutput) -> None:
        state = self.state
        for key, value in output.writes.items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        first_position = header.height << TX_INDEX_BITS
        self._tx_positions.update(
            (receipt.tx_id, first_position | index) for index, receipt in enumerate(output.receipts)
        )
        self._history.append(block_hash)
        self._parent = _Parent(header.height, block_hash, header.timestamp, header.state_root)


class _AuditedHashes:
    """The hashes of the blocks audited so far, packed (32 bytes a block, so a chain of a
    million blocks costs 32 MB): the `ChainHistory` replayed contracts read."""

    def __init__(self) -> None:
        self._packed = bytearray()

    def append(self, block_hash: bytes) -> None:
        self._packed += block_hash

    def block_hash_at(self, height: int) -> bytes:
        start = height * HASH_BYTES
        if not 0 <= start < len(self._packed):
            raise AssertionError(f"block {height} has not been audited")
        return bytes(self._packed[start : start + HASH_BYTES])


def _check_stored(
    height: int, envelopes: list[bytes], stored: StoredRecords, write_set: bytes
) -> None:
    """A data directory's records beside a block that held up.

    Raises:
        _Stop: `store.write_set` or `store.envelopes_digest`.
    """
    if stored.write_set != write_set:
        difference = (
            "it is missing"
            if stored.write_set is None
            else _write_set_difference(stored.write_set, write_set)
        )
        message = f"the stored write set w:{height} is not the replay's: {difference}"
        raise _Stop(Divergence(height, "store.write_set", message, write_set, stored.write_set))
    digest = envelopes_digest(envelopes)
    if stored.envelopes_digest != digest:
        message = f"the stored e:{height} is not the digest of the block's envelopes"
        found = stored.envelopes_digest
        raise _Stop(Divergence(height, "store.envelopes_digest", message, digest, found))


def _stored_tx_ids_divergence(height: int, stored: Any, tx_ids: list[bytes]) -> Divergence:
    message = "the block record's tx_ids are not the hashes of the stored bodies"
    if isinstance(stored, list):
        for index, (theirs, ours) in enumerate(zip(stored, tx_ids, strict=False)):
            if theirs != ours:
                return Divergence(height, "store.tx_ids", message, ours, theirs, index, ours)
    found = len(stored) if isinstance(stored, list) else stored
    return Divergence(height, "store.tx_ids", message, len(tx_ids), found)


def receipt_divergence(height: int, index: int, replayed: Receipt, stored: bytes) -> Divergence:
    """`receipt.<field>` for the first field of `stored` that differs from the replay's."""
    tx_id = replayed.tx_id
    try:
        found = Receipt.decode(stored)
    except BlockFormatError as exc:
        message = f"the stored receipt does not decode ({exc})"
        expected = _receipt_json(replayed)
        return Divergence(height, "receipt.decode", message, expected, stored, index, tx_id)
    for name in RECEIPT_FIELDS:
        ours, theirs = getattr(replayed, name), getattr(found, name)
        if name == "events":
            ours = [event.to_wire() for event in ours]
            theirs = [event.to_wire() for event in theirs]
        if _encoded(ours) != _encoded(theirs):  # as the protocol compares: 1 is not True
            message = f"the receipt's {name!r} field is not what the replay gives"
            return Divergence(height, f"receipt.{name}", message, ours, theirs, index, tx_id)
    message = "the receipt says the same as the replay's but is not its canonical encoding"
    expected = replayed.encode()
    return Divergence(height, "receipt.encoding", message, expected, stored, index, tx_id)


def _encoded(value: Any) -> bytes | None:
    try:
        return canonical_packb(value)
    except EncodingError:  # not encodable: compare by value instead
        return None


def _receipt_json(receipt: Receipt) -> dict[str, Any]:
    return {
        "tx_id": receipt.tx_id,
        "ok": receipt.ok,
        "error": receipt.error,
        "result": receipt.result,
        "events": [event.to_wire() for event in receipt.events],
    }


# --- state keys and write sets -------------------------------------------------------------


def describe_state_key(key: bytes) -> str:
    """A state key for people: `<contract>/<path>`, any binary tail as hex."""
    text_end = 0
    for position, byte in enumerate(key):
        if not 0x20 < byte < 0x7F:
            break
        if byte == ord("/"):
            text_end = position + 1
    else:
        return key.decode("ascii")
    return key[:text_end].decode("ascii") + key[text_end:].hex()


def _describe_value(value: bytes | None) -> str:
    return "deleted" if value is None else value.hex()


def first_difference(
    stored: Iterable[tuple[bytes, bytes | None]], replayed: Iterable[tuple[bytes, bytes | None]]
) -> tuple[bytes, str, str] | None:
    """The first key (in byte order) where two key-sorted streams of writes differ:
    `(key, the replay's value, the stored value)` described in words, or None if equal."""
    stored_items, replayed_items = iter(stored), iter(replayed)
    theirs, ours = next(stored_items, None), next(replayed_items, None)
    while theirs is not None or ours is not None:
        if ours is None or (theirs is not None and theirs[0] < ours[0]):
            assert theirs is not None
            return theirs[0], "absent", _describe_value(theirs[1])
        if theirs is None or ours[0] < theirs[0]:
            return ours[0], _describe_value(ours[1]), "absent"
        if ours[1] != theirs[1]:
            return ours[0], _describe_value(ours[1]), _describe_value(theirs[1])
        theirs, ours = next(stored_items, None), next(replayed_items, None)
    return None


def _write_set_difference(stored: bytes, replayed: bytes) -> str:
    """Where a stored write set differs from the replay's, in words."""
    try:
        stored_writes = decode_write_set(stored)
    except BlockFormatError as exc:
        return f"the stored write set does not decode ({exc})"
    replayed_writes = decode_write_set(replayed)
    difference = first_difference(stored_writes.items(), replayed_writes.items())
    if difference is None:
        return "the stored write set has the same writes, encoded differently"
    key, ours, theirs = difference
    return (
        f"first differing key {describe_state_key(key)}: the replay writes {ours}, "
        f"the store has {theirs}"
    )


def state_divergence(
    height: int, stored: Iterable[tuple[bytes, bytes]], replayed: Mapping[bytes, bytes]
) -> Divergence | None:
    """`store.state` for the first key where a data directory's state (sorted by key)
    differs from the replayed state, or None."""
    difference = first_difference(stored, sorted(replayed.items()))
    if difference is None:
        return None
    key, ours, theirs = difference
    return Divergence(
        height,
        "store.state",
        f"the stored state differs from the replay's at key {describe_state_key(key)}",
        expected=ours,
        found=theirs,
    )
