"""State transfer: a node that is behind fetches certified blocks from peers and applies them.

It trusts no peer. Every block goes through `Ledger.apply_proven_block`, which checks its
commit certificate against the genesis validators and ties each root of the certified
header to what the peer sent: the bodies' hashes to `tx_root`, the receipts to
`receipts_root`, the block's write set (chained from this node's own state root) to
`state_root`. Every transaction signature is verified first: the certificate covers the
bodies' hashes, not the signatures beside them. A peer that serves anything that does not
hold up is not believed again for the rest of that catch-up, and the next peer is asked.

Blocks are not re-executed: 2f+1 signatures on a header mean at least f+1 honest
validators executed it, so the write set that hashes to its `state_root` is the one they
computed. Re-executing from genesis is what `chancery audit` is for.

Wire messages (requests through `PeerTransport.request`):

    {"type": "get_blocks", "from": int (height >= 1), "limit": int (1 .. SYNC_BATCH_BLOCKS_MAX)}
    -> {"type": "blocks", "height": int (the server's committed height),
        "blocks": [{"commit": certificate, "header": bin, "receipts": [bin], "txs": [bin],
                    "writes": bin}]}

`blocks` are consecutive from `from`, at most `limit` of them and at most
`SYNC_RESPONSE_BYTES_MAX` bytes (at least one block when the server has it); an empty list
means the server has nothing from that height. Each map is `CommittedBlock.to_export()`
(the auditors' export format) plus `writes`, the block's encoded write set `W_h`.

    {"type": "get_envelope_digests", "from": int, "limit": int}
    -> {"type": "envelope_digests", "digests": [bin(32)]}   (consecutive from `from`)

No root covers the envelopes' signers and signatures, so a lying peer could re-sign a
certified body with a key it holds and so claim another member's transaction. A fetched
block is therefore applied from its write set only when f validators other than the one
that served it report the same `envelopes_digest` (with the server, f+1: one is honest).
Otherwise, when too few peers answer or they disagree, the block is re-executed, which
ties every signer to the certified roots.

Speed: the signatures of a whole response are verified in parallel on the verifier's
thread pool, then its blocks are applied on one worker thread (in height order), while
the next response is already on its way.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

from consensus.quorum import fault_tolerance
from node.block import BlockFormatError, CommitCertificate, CommittedBlock, envelopes_digest, sha256
from node.crypto import DOMAIN_TX, SignatureVerifier, verify
from node.errors import ChanceryError
from node.invariants import require
from node.ledger import FetchedBlock, Ledger, ProposalRejected
from node.metrics import NodeMetrics
from node.p2p.transport import PeerTransport, TransportError
from node.storage import ChainStore
from node.transaction import encode_envelope, split_envelope

log = logging.getLogger(__name__)

SYNC_BATCH_BLOCKS_MAX: Final = 256
SYNC_RESPONSE_BYTES_MAX: Final = 8 * 1024 * 1024
# Room in a frame for everything but the blocks: the response map and its keys.
SYNC_RESPONSE_HEADROOM_BYTES: Final = 64 * 1024
SYNC_REQUEST_TIMEOUT_S: Final = 30.0
# A witness that is slower than this to report digests is not waited for: the block is
# then re-executed instead, which is slower but needs nobody.
SYNC_DIGEST_TIMEOUT_S: Final = 2.0
DIGEST_RESPONSE_FIELDS: Final = frozenset({"type", "digests"})
# Upper bounds for msgpack framing around a block export's parts.
BLOCK_EXPORT_OVERHEAD_BYTES: Final = 128
BIN_OVERHEAD_BYTES: Final = 5
CERTIFICATE_ENTRY_BYTES: Final = 80
SYNC_BLOCK_FIELDS: Final = frozenset({"commit", "header", "receipts", "txs", "writes"})
RESPONSE_FIELDS: Final = frozenset({"type", "height", "blocks"})

AppliedListener = Callable[[Sequence[CommittedBlock]], None]


class SyncRefused(Exception):
    """A peer's response that does not hold up; the peer is not believed any more."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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
    receipts: list[bytes]
    write_set: bytes | None  # None: a bare block, which can only be re-executed
    certificate: CommitCertificate


def export_size_bytes(block: CommittedBlock, write_set: bytes | None) -> int:
    """An upper bound on the encoded size of a block's sync map: the export plus the write
    set, or, for a bare block (`write_set` None), without receipts and write set."""
    if write_set is None:
        return _bare_size_bytes(block)
    items = itertools.chain(block.envelopes, block.receipts)
    return (
        BLOCK_EXPORT_OVERHEAD_BYTES
        + len(block.header_bytes)
        + len(write_set)
        + BIN_OVERHEAD_BYTES
        + sum(len(item) + BIN_OVERHEAD_BYTES for item in items)
        + CERTIFICATE_ENTRY_BYTES * len(block.commit.signatures)
    )


def open_and_verify(envelopes: Sequence[bytes]) -> list[tuple[bytes, bytes]] | str:
    """`(tx_id, canonical envelope)` of each envelope once its signature verifies (blocking;
    runs on the verify pool). Bodies are not decoded: the certificate vouches for them.

    Returns the pairs, or why one of the envelopes is bad.
    """
    opened = []
    for envelope in envelopes:
        try:
            body, signer, signature = split_envelope(envelope)
        except ChanceryError as error:
            return f"undecodable transaction: {error.message}"
        tx_id = sha256(body)
        if not verify(signer, DOMAIN_TX, body, signature):
            return f"transaction {tx_id.hex()} has a bad signature"
        opened.append((tx_id, encode_envelope(body, signer, signature)))
    return opened


def _malformed(message: str) -> SyncRefused:
    return SyncRefused("sync.malformed", message)


def _is_bytes_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, bytes) for item in value)


def parse_block(raw: Any, height: int) -> _RawBlock:
    """One exported block map, shape-checked; its certificate must name `height`.

    Raises:
        SyncRefused: `sync.malformed` or `sync.wrong_height`.
    """
    if not isinstance(raw, dict) or raw.keys() != SYNC_BLOCK_FIELDS:
        raise _malformed(f"block {height} must have exactly {sorted(SYNC_BLOCK_FIELDS)}")
    if not isinstance(raw["header"], bytes) or not _is_bytes_list(raw["txs"]):
        raise _malformed(f"block {height} header must be bin and txs a list of bin")
    bare = raw["writes"] is None and raw["receipts"] is None
    if not bare and not (isinstance(raw["writes"], bytes) and _is_bytes_list(raw["receipts"])):
        raise _malformed(f"block {height}: writes bin and receipts [bin], or both nil")
    try:
        certificate = CommitCertificate.from_wire(raw["commit"])
    except BlockFormatError as exc:
        raise _malformed(f"block {height}: {exc}") from None
    if certificate.height != height:
        raise SyncRefused("sync.wrong_height", f"expected block {height}, got {certificate.height}")
    return _RawBlock(raw["header"], raw["txs"], raw["receipts"] or [], raw["writes"], certificate)


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


def _with_write_sets(heights: Iterable[int], raw_blocks: Sequence[_RawBlock]) -> frozenset[int]:
    """Those of `heights` whose block came with its write set (not bare)."""
    first = raw_blocks[0].certificate.height
    return frozenset(h for h in heights if raw_blocks[h - first].write_set is not None)


def _digests_of(response: dict[str, Any]) -> list[bytes]:
    """The digests of an `envelope_digests` answer; anything else counts as no answer.

    Raises:
        TransportError: `sync.malformed` for a response of another shape.
    """
    digests = response.get("digests")
    valid = (
        response.keys() == DIGEST_RESPONSE_FIELDS
        and response["type"] == "envelope_digests"
        and _is_bytes_list(digests)
    )
    if not valid:
        raise TransportError("sync.malformed", "an envelope_digests answer has type, digests")
    return digests


def read_sync_exports(
    store: ChainStore, start: int, limit: int, bytes_max: int
) -> list[dict[str, Any]]:
    """The `blocks` of a `get_blocks` answer: up to `limit` blocks from `start` within
    `bytes_max` (but always the first one, when the store has it)."""
    exports: list[dict[str, Any]] = []
    total_bytes = 0
    for block in store.iter_blocks(start, limit):
        write_set = store.get_write_set(block.height)
        require(write_set is not None, f"block {block.height} has no write set")
        size_bytes = export_size_bytes(block, write_set)
        if exports and total_bytes + size_bytes > bytes_max:
            break
        if size_bytes <= bytes_max:
            exports.append({**block.to_export(), "writes": write_set})
        else:  # alone it is still too big: the peer gets what it can re-execute
            exports.append(_bare_export(block))
            size_bytes = _bare_size_bytes(block)
        total_bytes += size_bytes
    return exports


def _bare_export(block: CommittedBlock) -> dict[str, Any]:
    """A block without receipts and write set (both nil): what a block that does not fit
    a response otherwise is sent as. `max_block_bytes` bounds its size, and the receiver
    re-executes it, which needs neither."""
    return {**block.to_export(), "receipts": None, "writes": None}


def _bare_size_bytes(block: CommittedBlock) -> int:
    return (
        BLOCK_EXPORT_OVERHEAD_BYTES
        + len(block.header_bytes)
        + sum(len(envelope) + BIN_OVERHEAD_BYTES for envelope in block.envelopes)
        + CERTIFICATE_ENTRY_BYTES * len(block.commit.signatures)
    )


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
        transport.on_request("get_envelope_digests", self.serve_get_envelope_digests)
        self._witnesses_needed = fault_tolerance(len(ledger.genesis.validators))

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
        blocks = await asyncio.to_thread(
            read_sync_exports, self.ledger.store, start, limit, self.response_bytes_max
        )
        return {"type": "blocks", "height": self.ledger.height, "blocks": blocks}

    async def serve_get_envelope_digests(
        self, peer_index: int, request: dict[str, Any]
    ) -> dict[str, Any]:
        """Answer a `get_envelope_digests` request from the committed chain.

        Raises:
            TransportError: `p2p.bad_request` (answered to the peer as an error).
        """
        start, limit = parse_get_blocks(request)
        digests = await asyncio.to_thread(self.ledger.store.get_envelope_digests, start, limit)
        return {"type": "envelope_digests", "digests": digests}

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

        Three stages overlap: while batch k is applied (mostly a synced LevelDB write, which
        releases the GIL), batch k+1 is verified on the signature pool and batch k+2 is on
        its way. Batches are applied strictly one after another, in height order.

        Raises:
            SyncRefused: the peer served something that does not hold up.
            TransportError: the peer did not answer.
        """
        applied = 0
        first_height = self.ledger.height + 1
        fetching: asyncio.Task[list[_RawBlock]] | None = self._start_fetch(
            peer, first_height, target_height
        )
        applying: asyncio.Task[int] | None = None
        try:
            while fetching is not None:
                raw_blocks = await fetching
                fetching = None
                if not raw_blocks:
                    break
                batch, corroborated = await self._verify_batch(peer, first_height, raw_blocks)
                first_height = batch.next_height
                if target_height is None or first_height <= target_height:
                    fetching = self._start_fetch(peer, first_height, target_height)
                if applying is not None:
                    applied += await applying  # a refusal stops here, before the next batch
                applying = asyncio.create_task(self._apply(batch, corroborated))
            if applying is not None:
                applied += await applying
                applying = None
        finally:
            for task in (fetching, applying):
                if task is not None and not task.done():
                    # An apply in progress runs to its end (it is on a thread); wait for it
                    # so that the next catch-up starts from a settled height.
                    if task is fetching:
                        task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        return applied

    async def _verify_batch(
        self, peer: int, first_height: int, raw_blocks: Sequence[_RawBlock]
    ) -> tuple[FetchedBatch, frozenset[int]]:
        """Verify a batch's signatures while other validators are asked to vouch for it.

        Raises:
            SyncRefused: `sync.bad_transaction`.
        """
        corroborating = asyncio.create_task(self._corroborated(peer, first_height, raw_blocks))
        try:
            blocks = await self._verify(raw_blocks)
            corroborated = await corroborating
        finally:
            if not corroborating.done():
                corroborating.cancel()
                await asyncio.gather(corroborating, return_exceptions=True)
        return FetchedBatch(peer, first_height, blocks), corroborated

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
        """Verify every transaction signature of a batch.

        Raises:
            SyncRefused: `sync.bad_transaction`.
        """
        opened = await self._open_and_verify_all(raw_blocks)
        blocks = []
        offset = 0
        for raw in raw_blocks:
            pairs = opened[offset : offset + len(raw.envelopes)]
            offset += len(raw.envelopes)
            blocks.append(
                FetchedBlock(
                    header_bytes=raw.header_bytes,
                    tx_ids=tuple(tx_id for tx_id, _ in pairs),
                    envelopes=tuple(envelope for _, envelope in pairs),
                    receipts=tuple(raw.receipts),
                    write_set=raw.write_set,
                    certificate=raw.certificate,
                )
            )
        return tuple(blocks)

    async def _open_and_verify_all(
        self, raw_blocks: Sequence[_RawBlock]
    ) -> list[tuple[bytes, bytes]]:
        """Every envelope of the batch, opened and verified in parallel chunks.

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
            *(loop.run_in_executor(self.verifier.executor, open_and_verify, c) for c in chunks)
        )
        opened: list[tuple[bytes, bytes]] = []
        for result in results:
            if isinstance(result, str):
                raise SyncRefused("sync.bad_transaction", result)
            opened.extend(result)
        return opened

    async def _corroborated(
        self, peer: int, first_height: int, raw_blocks: Sequence[_RawBlock]
    ) -> frozenset[int]:
        """The heights whose envelopes f other validators report the same digest of.

        Asks every other connected validator at once and stops as soon as every height has
        enough matching reports; a witness that fails, lags or disagrees only costs a
        re-execution of the blocks it does not vouch for.
        """
        heights = range(first_height, first_height + len(raw_blocks))
        if self._witnesses_needed == 0:
            return _with_write_sets(heights, raw_blocks)
        wanted = [envelopes_digest(raw.envelopes) for raw in raw_blocks]
        witnesses = sorted(self.transport.connected_peers() - {peer, self.transport.index})
        if len(witnesses) < self._witnesses_needed:
            return frozenset()
        request = {"type": "get_envelope_digests", "from": first_height, "limit": len(wanted)}
        asks = [
            asyncio.create_task(self.transport.request(w, request, SYNC_DIGEST_TIMEOUT_S))
            for w in witnesses
        ]
        matches = [0] * len(wanted)
        try:
            for answer in asyncio.as_completed(asks):
                try:
                    digests = _digests_of(await answer)
                except TransportError:
                    continue
                for offset, (ours, theirs) in enumerate(zip(wanted, digests, strict=False)):
                    matches[offset] += ours == theirs
                if min(matches) >= self._witnesses_needed:
                    break
        finally:
            for ask in asks:
                ask.cancel()
            await asyncio.gather(*asks, return_exceptions=True)
        needed = self._witnesses_needed
        vouched = [h for h, count in zip(heights, matches, strict=True) if count >= needed]
        return _with_write_sets(vouched, raw_blocks)

    async def _apply(self, batch: FetchedBatch, corroborated: frozenset[int]) -> int:
        """Apply a verified batch on the apply thread; returns how many blocks it applied.

        Raises:
            SyncRefused: a block's certificate or roots did not hold up (the blocks before
                it stay applied: each was proven on its own).
        """
        loop = asyncio.get_running_loop()
        applied, rejection = await loop.run_in_executor(
            self._apply_executor, self._apply_blocks, batch.blocks, corroborated
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
        self, blocks: Sequence[FetchedBlock], corroborated: frozenset[int]
    ) -> tuple[list[CommittedBlock], ProposalRejected | None]:
        """Apply runs of corroborated blocks from their write sets, replay the others."""
        applied: list[CommittedBlock] = []
        index = 0
        while index < len(blocks):
            run_end = index
            while run_end < len(blocks) and blocks[run_end].certificate.height in corroborated:
                run_end += 1
            if run_end > index:
                committed, rejection = self.ledger.apply_proven_blocks(blocks[index:run_end])
                self.metrics.sync_blocks_applied_by.labels(path="write_set").inc(len(committed))
                applied.extend(committed)
                if rejection is not None:
                    return applied, rejection
                index = run_end
                continue
            try:
                applied.append(self.ledger.replay_certified_block(blocks[index]))
            except ProposalRejected as rejection:
                return applied, rejection
            self.metrics.sync_blocks_applied_by.labels(path="replay").inc()
            index += 1
        return applied, None
