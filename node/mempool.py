"""The mempool: admitted transactions waiting for a block, bounded by count and bytes.

A transaction is either queued (not yet in a proposal) or proposed (in a block being agreed
on). Both count as pending: a duplicate submission is refused while either holds it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable

from node.errors import ChanceryError
from node.transaction import Transaction

# How long a client told "mempool full" should wait before trying again.
MEMPOOL_RETRY_AFTER_S = 1


def mempool_full() -> ChanceryError:
    """The refusal of a transaction the mempool has no room for (HTTP 503, retry later)."""
    return ChanceryError(
        "mempool.full", "mempool is full, retry later", {"retry_after_s": MEMPOOL_RETRY_AFTER_S}
    )


class Mempool:
    """FIFO of admitted transactions with hard caps (`txs_max`, `bytes_max`)."""

    def __init__(self, txs_max: int, bytes_max: int) -> None:
        self.txs_max = txs_max
        self.bytes_max = bytes_max
        self._queued: OrderedDict[bytes, Transaction] = OrderedDict()
        self._proposed: dict[bytes, Transaction] = {}
        self._bytes = 0
        # Admission times (monotonic seconds) for the commit-latency histogram.
        self.admitted_at_s: dict[bytes, float] = {}
        self._not_empty = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._queued) + len(self._proposed)

    def __contains__(self, tx_id: bytes) -> bool:
        return tx_id in self._queued or tx_id in self._proposed

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def queued_count(self) -> int:
        return len(self._queued)

    def get(self, tx_id: bytes) -> Transaction | None:
        return self._queued.get(tx_id) or self._proposed.get(tx_id)

    @property
    def is_full(self) -> bool:
        """At a cap: not even a one-byte transaction fits until a block commits."""
        return not self.has_room(1, 1)

    @property
    def room_txs(self) -> int:
        """How many more transactions the count cap lets in now."""
        return max(0, self.txs_max - len(self))

    def has_room(self, count: int, size_bytes: int) -> bool:
        """Whether `count` more transactions of `size_bytes` in all would fit now."""
        return len(self) + count <= self.txs_max and self._bytes + size_bytes <= self.bytes_max

    def add(self, tx: Transaction) -> None:
        """Queue `tx`.

        Raises:
            ChanceryError: `tx.duplicate` if pending already, `mempool.full` at a cap.
        """
        if tx.tx_id in self:
            raise ChanceryError(
                "tx.duplicate",
                "transaction is already pending",
                {"status": "pending", "tx_id": tx.tx_id.hex()},
            )
        if not self.has_room(1, tx.size_bytes):
            raise mempool_full()
        self._queued[tx.tx_id] = tx
        self._bytes += tx.size_bytes
        self.admitted_at_s[tx.tx_id] = time.monotonic()
        self._not_empty.set()
        self._empty.clear()

    def take_batch(self, txs_max: int, bytes_max: int) -> list[Transaction]:
        """Move up to `txs_max` transactions / `bytes_max` bytes, oldest first, to proposed."""
        batch: list[Transaction] = []
        batch_bytes = 0
        while self._queued and len(batch) < txs_max:
            tx_id, tx = next(iter(self._queued.items()))
            if batch and batch_bytes + tx.size_bytes > bytes_max:
                break
            del self._queued[tx_id]
            self._proposed[tx_id] = tx
            batch.append(tx)
            batch_bytes += tx.size_bytes
        if not self._queued:
            self._not_empty.clear()
        return batch

    def remove_committed(self, tx_ids: Iterable[bytes]) -> None:
        """Forget transactions that are now in a committed block."""
        for tx_id in tx_ids:
            tx = self._proposed.pop(tx_id, None) or self._queued.pop(tx_id, None)
            if tx is not None:
                self._bytes -= tx.size_bytes
                self.admitted_at_s.pop(tx_id, None)
        if not self._queued:
            self._not_empty.clear()
        if not self._queued and not self._proposed:
            self._empty.set()

    def requeue(self, transactions: Iterable[Transaction]) -> None:
        """Put proposed-but-uncommitted transactions back at the front (a proposal failed)."""
        for tx in reversed(list(transactions)):
            if self._proposed.pop(tx.tx_id, None) is not None:
                self._queued[tx.tx_id] = tx
                self._queued.move_to_end(tx.tx_id, last=False)
        if self._queued:
            self._not_empty.set()

    def oldest_pending(self, older_than_s: float, count_max: int) -> list[Transaction]:
        """Up to `count_max` pending transactions admitted more than `older_than_s` ago."""
        cutoff = time.monotonic() - older_than_s
        found: list[Transaction] = []
        # admitted_at_s is in admission order, so oldest first: stop at the first one too
        # young instead of walking (and copying) the whole mempool every round.
        for tx_id, admitted_at in self.admitted_at_s.items():
            if admitted_at >= cutoff or len(found) >= count_max:
                break
            tx = self.get(tx_id)
            if tx is not None:
                found.append(tx)
        return found

    def requeue_all_proposed(self) -> None:
        """Every proposed-but-uncommitted transaction goes back (its proposal is void)."""
        self.requeue(list(self._proposed.values()))

    async def wait_not_empty(self) -> None:
        """Until some transaction is queued (not yet proposed)."""
        await self._not_empty.wait()

    async def wait_empty(self) -> None:
        """Until nothing is pending at all, queued or proposed."""
        await self._empty.wait()
