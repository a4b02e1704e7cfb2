"""Transaction relay: what one node admits reaches every validator's mempool.

The node that admitted a transaction from a client sends it straight to every other
validator, so a backup takes submissions exactly like the primary, and a new primary holds
the pending transactions after a view change. A receiver admits relayed envelopes through
the same `Admission` as client submissions and never relays them again: the origin already
sent to everyone, and a validator that was down gets the transactions in blocks.

Wire message (one frame, batched):

    {"type": "txs", "envelopes": [envelope bytes, ...]}   -- 1 .. RELAY_BATCH_ENVELOPES_MAX

Outbound envelopes wait at most `RELAY_FLUSH_INTERVAL_MS` (or until a batch is full) so
that a burst of submissions travels in a few frames instead of one per transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Final

from node.admission import Admission
from node.errors import ChanceryError
from node.invariants import require
from node.metrics import NodeMetrics
from node.p2p.framing import FrameError
from node.p2p.transport import PeerTransport

log = logging.getLogger(__name__)

RELAY_FLUSH_INTERVAL_MS: Final = 5
RELAY_BATCH_ENVELOPES_MAX: Final = 1024
RELAY_BATCH_BYTES_MAX: Final = 4 * 1024 * 1024
# Envelopes waiting to be flushed; past this (peers far slower than admission) they are
# dropped and counted: the mempool still holds them, and blocks carry them to the peers.
RELAY_BUFFER_ENVELOPES_MAX: Final = 64 * 1024
RELAY_BUFFER_BYTES_MAX: Final = 64 * 1024 * 1024
# Received batches waiting for admission.
RELAY_INBOUND_BATCHES_MAX: Final = 64
# Room in a frame for the map around the envelopes and each envelope's bin header.
FRAME_OVERHEAD_BYTES: Final = 64
ENVELOPE_OVERHEAD_BYTES: Final = 5
# Refusals that say nothing bad about the relaying peer.
BENIGN_REFUSALS: Final = frozenset({"tx.duplicate", "mempool.full"})

require(RELAY_BATCH_ENVELOPES_MAX <= RELAY_BUFFER_ENVELOPES_MAX, "a batch must fit the buffer")
require(RELAY_BATCH_BYTES_MAX <= RELAY_BUFFER_BYTES_MAX, "a batch must fit the buffer")


class TransactionRelay:
    """Batches admitted envelopes out to every peer and admits the peers' batches."""

    def __init__(
        self,
        transport: PeerTransport,
        admission: Admission,
        metrics: NodeMetrics,
        *,
        flush_interval_ms: int = RELAY_FLUSH_INTERVAL_MS,
    ) -> None:
        self.transport = transport
        self.admission = admission
        self.metrics = metrics
        self.flush_interval_ms = flush_interval_ms
        # What this node admits from its clients goes to every peer; what it admits from a
        # peer's batch does not (see `_admit_loop`), or each transaction would travel
        # n - 1 times further and be decoded and refused as a duplicate everywhere.
        admission.on_admitted = lambda txs: self.relay([tx.envelope for tx in txs])
        # A batch must fit in one frame whatever frame limit the operator configured.
        self.batch_bytes_max = min(
            RELAY_BATCH_BYTES_MAX, transport.frame_bytes_max - FRAME_OVERHEAD_BYTES
        )
        self._buffer: list[bytes] = []
        self._buffer_bytes = 0
        self._buffered = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._inbound: asyncio.Queue[tuple[int, list[bytes]]] = asyncio.Queue(
            maxsize=RELAY_INBOUND_BATCHES_MAX
        )
        self._tasks: list[asyncio.Task[None]] = []
        transport.subscribe("txs", self.handle_txs)

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._flush_loop(), name="relay-flush"),
            asyncio.create_task(self._admit_loop(), name="relay-admit"),
        ]

    async def stop(self) -> None:
        """Cancel and await the relay's tasks; unflushed envelopes stay in the mempool."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # -- outbound --------------------------------------------------------------------------

    def relay(self, envelopes: Sequence[bytes]) -> int:
        """Buffer envelopes this node admitted, for every peer; returns how many were taken."""
        taken = 0
        for envelope in envelopes:
            size = len(envelope) + ENVELOPE_OVERHEAD_BYTES
            if size > self.batch_bytes_max:
                self.metrics.relay_envelopes_dropped.labels(reason="too_large").inc()
                continue
            full = (
                len(self._buffer) >= RELAY_BUFFER_ENVELOPES_MAX
                or self._buffer_bytes + size > RELAY_BUFFER_BYTES_MAX
            )
            if full:
                self.metrics.relay_envelopes_dropped.labels(reason="buffer_full").inc()
                continue
            self._buffer.append(envelope)
            self._buffer_bytes += size
            taken += 1
        if self._buffer:
            self._buffered.set()
            if self._batch_ready():
                self._batch_full.set()
        return taken

    def _batch_ready(self) -> bool:
        return (
            len(self._buffer) >= RELAY_BATCH_ENVELOPES_MAX
            or self._buffer_bytes >= self.batch_bytes_max
        )

    def _take_batch(self) -> list[bytes]:
        batch: list[bytes] = []
        batch_bytes = 0
        for envelope in self._buffer:
            size = len(envelope) + ENVELOPE_OVERHEAD_BYTES
            if len(batch) == RELAY_BATCH_ENVELOPES_MAX or batch_bytes + size > self.batch_bytes_max:
                break
            batch.append(envelope)
            batch_bytes += size
        del self._buffer[: len(batch)]
        self._buffer_bytes -= batch_bytes
        return batch

    async def _flush_loop(self) -> None:
        interval_s = self.flush_interval_ms / 1000
        while True:
            await self._buffered.wait()
            # Gather for one interval unless a whole batch is waiting already.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._batch_full.wait(), interval_s)
            while self._buffer:
                batch = self._take_batch()
                try:
                    self.transport.broadcast({"type": "txs", "envelopes": batch})
                except FrameError as exc:  # the size bounds above should make this impossible
                    log.error("relay batch of %d envelopes not sent: %s", len(batch), exc)
                    self.metrics.relay_envelopes_dropped.labels(reason="unencodable").inc(
                        len(batch)
                    )
            self._buffered.clear()
            self._batch_full.clear()

    # -- inbound ---------------------------------------------------------------------------

    def handle_txs(self, peer_index: int, message: dict[str, Any]) -> None:
        """Queue a peer's `txs` batch for admission (drops and counts malformed or excess)."""
        envelopes = message.get("envelopes")
        well_formed = (
            message.keys() == {"type", "envelopes"}
            and isinstance(envelopes, list)
            and 0 < len(envelopes) <= RELAY_BATCH_ENVELOPES_MAX
            and all(isinstance(envelope, bytes) for envelope in envelopes)
        )
        if not well_formed:
            self.transport.count_dropped(peer_index, "malformed")
            return
        assert isinstance(envelopes, list)  # for the type checker
        try:
            self._inbound.put_nowait((peer_index, envelopes))
        except asyncio.QueueFull:
            self.transport.count_dropped(peer_index, "relay_backlog")

    async def _admit_loop(self) -> None:
        while True:
            peer_index, envelopes = await self._inbound.get()
            results = await self.admission.admit_many(envelopes, announce=False)
            self._record(peer_index, results)

    def _record(self, peer_index: int, results: Sequence[Any]) -> None:
        """Count admissions; a refusal other than duplicate/full is the peer's doing."""
        admitted = 0
        for result in results:
            if not isinstance(result, ChanceryError):
                admitted += 1
            elif result.code not in BENIGN_REFUSALS:
                self.transport.count_dropped(peer_index, result.code)
        if admitted:
            self.metrics.admitted_txs.inc(admitted)
