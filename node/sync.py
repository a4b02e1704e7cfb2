"""State transfer: a node that is behind fetches certified blocks from peers and applies them.

It trusts no peer. Every block goes through `Ledger.apply_certified_block`, which checks
its commit certificate against the genesis validators and re-executes it to compare every
root; every transaction signature is verified first (the certificate covers the bodies'
hashes, not the signatures beside them). A peer that serves anything that does not hold
up is not believed again for the rest of that catch-up, and the next peer is asked.

Wire messages (requests through `PeerTransport.request`):

    {"type": "get_blocks", "from": int (height >= 1), "limit": int (1 .. SYNC_BATCH_BLOCKS_MAX)}
    -> {"type": "blocks", "height": int (the server's committed height),
        "blocks": [{"commit": certificate, "header": bin, "receipts": [bin], "txs": [bin]}]}

`blocks` are consecutive from `from`, at most `limit` of them and at most
`SYNC_RESPONSE_BYTES_MAX` bytes (at least one block when the server has it); an empty list
means the server has nothing from that height. Each map is `CommittedBlock.to_export()`.

Speed: the signatures of a whole response are verified in parallel on the verifier's
thread pool, then its blocks are applied on one worker thread (in height order), while
the next response is already on its way.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

from node.block import BlockFormatError, CommitCertificate, CommittedBlock
from node.crypto import DOMAIN_TX, SignatureVerifier, verify
from node.errors import ChanceryError
from node.invariants import require
from node.ledger import Ledger, ProposalRejected
from node.metrics import NodeMetrics
from node.p2p.transport import PeerTransport, TransportError
from node.transaction import Transaction, decode_envelope

log = logging.getLogger(__name__)

SYNC_BATCH_BLOCKS_MAX: Final = 256
SYNC_RESPONSE_BYTES_MAX: Final = 8 * 1024 * 1024
# Room in a frame for everything but the blocks: the response map and its keys.
SYNC_RESPONSE_HEADROOM_BYTES: Final = 64 * 1024
SYNC_REQUEST_TIMEOUT_S: Final = 30.0
# Upper bounds for msgpack framing around a block export's parts.
BLOCK_EXPORT_OVERHEAD_BYTES: Final = 128
BIN_OVERHEAD_BYTES: Final = 5
CERTIFICATE_ENTRY_BYTES: Final = 80
EXPORT_FIELDS: Final = frozenset({"commit", "header", "receipts", "txs"})
RESPONSE_FIELDS: Final = frozenset({"type", "height", "blocks"})

AppliedListener = Callable[[Sequence[CommittedBlock]], None]


class SyncRefused(Exception):
    """A peer's response that does not hold up; the peer is not believed any more."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class FetchedBlock:
    """A block as received: its header bytes, decoded and verified transactions, certificate."""

    header_bytes: bytes
    transactions: tuple[Transaction, ...]
    certificate: CommitCertificate


@dataclass(frozen=True)
class FetchedBatch:
    """Consecutive blocks from one peer, every transaction signature verified."""

    peer: int
    first_height: int
    blocks: tuple[FetchedBlock, ...]

    @property
    def next_height(self) -> int:
        return self.first_height + len(self.blocks)


@dataclass(frozen=True, slots=True)
class _RawBlock:
    header_bytes: bytes
    envelopes: list[bytes]
    certificate: CommitCertificate


def export_size_bytes(block: CommittedBlock) -> int:
    """An upper bound on the encoded size of `block.to_export()`."""
    items = itertools.chain(block.envelopes, block.receipts)
    return (
        BLOCK_EXPORT_OVERHEAD_BYTES
        + len(block.header_bytes)
        + sum(len(item) + BIN_OVERHEAD_BYTES for item in items)
        + CERTIFICATE_ENTRY_BYTES * len(block.commit.signatures)
    )


def decode_and_verify(envelopes: Sequence[bytes]) -> list[Transaction] | str:
    """Decode envelopes and verify their signatures (blocking; runs on the verify pool).

    Returns the transactions, or why one of them is bad.
    """
    transactions = []
    for envelope in envelopes:
        try:
            tx = decode_envelope(envelope)
        except ChanceryError as error:
            return f"undecodable transaction: {error.message}"
        if not verify(tx.signer, DOMAIN_TX, tx.body_bytes, tx.signature):
            return f"transaction {tx.tx_id.hex()} has a bad signature"
        transactions.append(tx)
    return transactions


def _malformed(message: str) -> SyncRefused:
    return SyncRefused("sync.malformed", message)


def _is_bytes_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, bytes) for item in value)


def parse_block(raw: Any, height: int) -> _RawBlock:
    """One exported block map, shape-checked; its certificate must name `height`.

    Raises:
        SyncRefused: `sync.malformed` or `sync.wrong_height`.
    """
    if not isinstance(raw, dict) or raw.keys() != EXPORT_FIELDS:
        raise _malformed(f"block {height} must have exactly {sorted(EXPORT_FIELDS)}")
    if not isinstance(raw["header"], bytes):
        raise _malformed(f"block {height} header must be bin")
    if not _is_bytes_list(raw["txs"]) or not _is_bytes_list(raw["receipts"]):
        raise _malformed(f"block {height} txs and receipts must be lists of bin")
    try:
        certificate = CommitCertificate.from_wire(raw["commit"])
    except BlockFormatError as exc:
        raise _malformed(f"block {height}: {exc}") from None
    if certificate.height != height:
        raise SyncRefused("sync.wrong_height", f"expected block {height}, got {certificate.height}")
    return _RawBlock(raw["header"], raw["txs"], certificate)


def parse_blocks_response(
    response: dict[str, Any], first_height: int, limit: int
) -> list[_RawBlock]:
    """The blocks of a `blocks` answer, in order from `first_height`.

    Raises:
        SyncRefused: a response that is not the protocol's shape or says too much.
    """
    if response.keys() != RESPONSE_FIELDS or response["type"] != "blocks":
        raise _malformed(f"a blocks answer has exactly {sorted(RESPONSE_FIELDS)}")
    blocks = response["blocks"]
    if not isinstance(blocks, list) or len(blocks) > limit:
        raise _malformed(f"blocks must be a list of at most {limit}")
    return [parse_block(raw, first_height + offset) for offset, raw in enumerate(blocks)]


def parse_get_blocks(request: dict[str, Any]) -> tuple[int, int]:
    """`(from, limit)` of a `get_blocks` request, the limit capped at SYNC_BATCH_BLOCKS_MAX.

    Raises:
        TransportError: `p2p.bad_request` when a field is missing or out of range.
    """
    start, limit = request.get("from"), request.get("limit")
    valid = (
        request.keys() == {"type", "from", "limit", "request_id"}
        and isinstance(start, int)
        and not isinstance(start, bool)
        and start >= 1
        and isinstance(limit, int)
        and not isinstance(limit, bool)
        and limit >= 1
    )
    if not valid:
        raise TransportError("p2p.bad_request", "get_blocks needs integer from >= 1, limit >= 1")
    assert isinstance(start, int) and isinstance(limit, int)  # for the type checker
    return start, min(limit, SYNC_BATCH_BLOCKS_MAX)


class BlockSync:
    """Serves `get_blocks` from the local chain and catches the local chain up from peers."""

    def __init__(
        self,
        transport: PeerTransport,
        ledger: Ledger,
        verifier: SignatureVerifier,
        metrics: NodeMetrics,
        *,
        apply_executor: Executor | None = None,
        on_applied: AppliedListener | None = None,
        batch_blocks_max: int = SYNC_BATCH_BLOCKS_MAX,
        request_timeout_s: float = SYNC_REQUEST_TIMEOUT_S,
    ) -> None:
        require(0 < batch_blocks_max <= SYNC_BATCH_BLOCKS_MAX, "batch_blocks_max out of range")
        self.transport = transport
        self.ledger = ledger
        self.verifier = verifier
        self.metrics = metrics
        self.on_applied = on_applied
        self.batch_blocks_max = batch_blocks_max
        self.request_timeout_s = request_timeout_s
        self.response_bytes_max = min(
            SYNC_RESPONSE_BYTES_MAX, transport.frame_bytes_max - SYNC_RESPONSE_HEADROOM_BYTES
        )
        # One thread applies blocks, strictly in height order, off the event loop. The PBFT
        # driver may pass its own commit thread so that the two can never interleave.
        self._own_executor = apply_executor is None
        self._apply_executor = apply_executor or ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="sync-apply"
        )
        transport.on_request("get_blocks", self.serve_get_blocks)

    def close(self) -> None:
        if self._own_executor:
            self._apply_executor.shutdown(wait=True, cancel_futures=True)

    # -- serving ---------------------------------------------------------------------------

    async def serve_get_blocks(self, peer_index: int, request: dict[str, Any]) -> dict[str, Any]:
        """Answer a `get_blocks` request from the committed chain.

        Raises:
            TransportError: `p2p.bad_request` (answered to the peer as an error).
        """
        start, limit = parse_get_blocks(request)
        # LevelDB reads of a few hundred blocks take milliseconds: keep them off the loop.
        blocks = await asyncio.to_thread(self._read_exports, start, limit)
        return {"type": "blocks", "height": self.ledger.height, "blocks": blocks}

    def _read_exports(self, start: int, limit: int) -> list[dict[str, Any]]:
        exports: list[dict[str, Any]] = []
        total_bytes = 0
        for block in self.ledger.store.iter_blocks(start, limit):
            size_bytes = export_size_bytes(block)
            if exports and total_bytes + size_bytes > self.response_bytes_max:
                break
            exports.append(block.to_export())
            total_bytes += size_bytes
        return exports

    # -- catching up -----------------------------------------------------------------------

    async def catch_up(self, target_height: int | None, peers: Sequence[int]) -> int:
        """Fetch and apply blocks from `peers` until `target_height` (None: as far as any
        believed peer has blocks); returns the committed height reached.

        Peers are asked in turn; one that serves a bad block is dropped for the rest of
        this call, one that is unreachable or slow is skipped for the current round.
        """
        believed = [peer for peer in dict.fromkeys(peers) if peer != self.transport.index]
        while not self._reached(target_height):
            round_start_height = self.ledger.height
            for peer in list(believed):
                if self._reached(target_height):
                    break
                try:
                    await self._sync_from(peer, target_height)
                except SyncRefused as refusal:
                    believed.remove(peer)
                    self._disbelieve(peer, refusal)
                except TransportError as exc:
                    log.info("sync: validator %d unavailable (%s)", peer, exc.message)
            if self.ledger.height == round_start_height:
                break  # no believed peer has anything more for us
        return self.ledger.height

    def _reached(self, target_height: int | None) -> bool:
        return target_height is not None and self.ledger.height >= target_height

    def _disbelieve(self, peer: int, refusal: SyncRefused) -> None:
        log.warning("sync: validator %d served a bad block, not believed: %s", peer, refusal)
        self.metrics.sync_peers_disbelieved.labels(peer=str(peer), code=refusal.code).inc()
        self.transport.count_dropped(peer, refusal.code)

    async def _sync_from(self, peer: int, target_height: int | None) -> int:
        """Apply consecutive batches from `peer` while it has blocks; returns blocks applied.

        The next batch is requested while the current one is verified and applied. The two
        CPU phases take turns rather than overlap: the apply thread holds the GIL almost
        throughout, and verify threads that must re-take it after every signature would
        stall it and themselves (measured: overlapping was slower on 2 cores).

        Raises:
            SyncRefused: the peer served something that does not hold up.
            TransportError: the peer did not answer.
        """
        applied = 0
        first_height = self.ledger.height + 1
        fetching: asyncio.Task[list[_RawBlock]] | None = self._start_fetch(
            peer, first_height, target_height
        )
        try:
            while fetching is not None:
                raw_blocks = await fetching
                fetching = None
                if not raw_blocks:
                    break
                batch = FetchedBatch(peer, first_height, await self._verify(raw_blocks))
                first_height = batch.next_height
                if target_height is None or first_height <= target_height:
                    fetching = self._start_fetch(peer, first_height, target_height)
                applied += await self._apply(batch)
        finally:
            if fetching is not None:
                fetching.cancel()
                await asyncio.gather(fetching, return_exceptions=True)
        return applied

    def _start_fetch(
        self, peer: int, first_height: int, target_height: int | None
    ) -> asyncio.Task[list[_RawBlock]]:
        limit = self.batch_blocks_max
        if target_height is not None:
            limit = max(1, min(limit, target_height - first_height + 1))
        return asyncio.create_task(
            self._fetch(peer, first_height, limit), name=f"sync-fetch-{peer}-{first_height}"
        )

    async def _fetch(self, peer: int, first_height: int, limit: int) -> list[_RawBlock]:
        """Request and shape-check one batch.

        Raises:
            SyncRefused, TransportError: as `_sync_from`.
        """
        request = {"type": "get_blocks", "from": first_height, "limit": limit}
        response = await self.transport.request(peer, request, self.request_timeout_s)
        return parse_blocks_response(response, first_height, limit)

    async def _verify(self, raw_blocks: Sequence[_RawBlock]) -> tuple[FetchedBlock, ...]:
        """Decode and verify every transaction of a batch.

        Raises:
            SyncRefused: `sync.bad_transaction`.
        """
        transactions = await self._decode_and_verify_all(raw_blocks)
        blocks = []
        for raw in raw_blocks:
            count = len(raw.envelopes)
            blocks.append(
                FetchedBlock(raw.header_bytes, tuple(transactions[:count]), raw.certificate)
            )
            del transactions[:count]
        return tuple(blocks)

    async def _decode_and_verify_all(self, raw_blocks: Sequence[_RawBlock]) -> list[Transaction]:
        """Every transaction of the batch, decoded and verified in parallel chunks.

        Raises:
            SyncRefused: `sync.bad_transaction` for an undecodable one or a bad signature.
        """
        envelopes = [envelope for raw in raw_blocks for envelope in raw.envelopes]
        if not envelopes:
            return []
        loop = asyncio.get_running_loop()
        size = self.verifier.chunk_size
        chunks = [envelopes[i : i + size] for i in range(0, len(envelopes), size)]
        results = await asyncio.gather(
            *(loop.run_in_executor(self.verifier.executor, decode_and_verify, c) for c in chunks)
        )
        transactions: list[Transaction] = []
        for result in results:
            if isinstance(result, str):
                raise SyncRefused("sync.bad_transaction", result)
            transactions.extend(result)
        return transactions

    async def _apply(self, batch: FetchedBatch) -> int:
        """Apply a verified batch on the apply thread; returns how many blocks it applied.

        Raises:
            SyncRefused: a block's certificate or roots did not hold up (the blocks before
                it stay applied: each was proven on its own).
        """
        loop = asyncio.get_running_loop()
        applied, rejection = await loop.run_in_executor(
            self._apply_executor, self._apply_blocks, batch.blocks
        )
        if applied:
            self.metrics.sync_blocks_applied.inc(len(applied))
            self.metrics.block_height.set(self.ledger.height)
            if self.on_applied is not None:
                self.on_applied(applied)
        if rejection is not None:
            raise SyncRefused(rejection.code, rejection.message)
        return len(applied)

    def _apply_blocks(
        self, blocks: Sequence[FetchedBlock]
    ) -> tuple[list[CommittedBlock], ProposalRejected | None]:
        applied: list[CommittedBlock] = []
        for block in blocks:
            try:
                committed = self.ledger.apply_certified_block(
                    block.header_bytes, block.transactions, block.certificate
                )
            except ProposalRejected as rejection:
                return applied, rejection
            applied.append(committed)
        return applied, None
