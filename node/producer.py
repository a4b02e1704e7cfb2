"""Block production with a single validator: cut a batch, execute, certify, persist, notify.

This is the ordering half that PBFT replaces: batching, execution (`Ledger`), commit and
notification are the paths the PBFT replica will drive. With one validator the quorum is
one vote, so the producer signs its own commit vote and the certificate holds it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from node.block import CommitCertificate, CommittedBlock, Receipt, sign_commit_vote
from node.crypto import SigningKey
from node.ledger import Ledger
from node.mempool import Mempool
from node.metrics import NodeMetrics
from node.notify import CommitNotifier

log = logging.getLogger(__name__)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class SoloProducer:
    """Orders the mempool into blocks when this node is the chain's only validator."""

    def __init__(
        self,
        ledger: Ledger,
        mempool: Mempool,
        notifier: CommitNotifier,
        key: SigningKey,
        validator_index: int,
        batch_interval_ms: int,
        metrics: NodeMetrics,
    ) -> None:
        self.ledger = ledger
        self.mempool = mempool
        self.notifier = notifier
        self.key = key
        self.validator_index = validator_index
        self.batch_interval_ms = batch_interval_ms
        self.metrics = metrics
        params = ledger.genesis.params
        self.block_txs_max = params.max_block_txs
        self.block_bytes_max = params.max_block_bytes
        # One thread: blocks are built and written strictly in height order, off the event
        # loop so HTTP admission keeps running while a block executes and fsyncs.
        self._commit_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")

    async def run(self) -> None:
        """Produce blocks for ever; no empty blocks while idle."""
        while True:
            await self.mempool.wait_not_empty()
            if self.mempool.queued_count < self.block_txs_max and self.batch_interval_ms > 0:
                await asyncio.sleep(self.batch_interval_ms / 1000)
            batch = self.mempool.take_batch(self.block_txs_max, self.block_bytes_max)
            if batch:
                await self.produce(batch)

    async def produce(self, batch: list) -> CommittedBlock:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        block, receipts = await loop.run_in_executor(
            self._commit_thread, self._build_and_commit, batch
        )
        self._record(block, receipts, started)
        self.mempool.remove_committed(block.tx_ids)
        self.notifier.publish(block, receipts)
        return block

    def _build_and_commit(self, batch: list) -> tuple[CommittedBlock, tuple[Receipt, ...]]:
        parent = self.ledger.tip()
        proposal = self.ledger.build_proposal(
            parent, batch, wall_clock_ms(), self.validator_index, 0
        )
        header = proposal.header
        vote = sign_commit_vote(self.key, header.chain_id, header.height, proposal.block_hash)
        certificate = CommitCertificate(
            proposal.block_hash, header.height, ((self.validator_index, vote),)
        )
        return self.ledger.commit(proposal, certificate), proposal.output.receipts

    def _record(self, block: CommittedBlock, receipts: tuple[Receipt, ...], started: float) -> None:
        now = time.monotonic()
        metrics = self.metrics
        metrics.block_height.set(block.height)
        metrics.committed_txs.inc(len(block.tx_ids))
        metrics.failed_txs.inc(sum(1 for receipt in receipts if not receipt.ok))
        metrics.block_txs.observe(len(block.tx_ids))
        metrics.block_commit_seconds.observe(now - started)
        for tx_id in block.tx_ids:
            admitted = self.mempool.admitted_at_s.get(tx_id)
            if admitted is not None:
                metrics.commit_latency.observe(now - admitted)

    def close(self) -> None:
        self._commit_thread.shutdown(wait=True)
