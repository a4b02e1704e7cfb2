"""Tests for node.mempool: FIFO with count and byte caps, duplicates, batches, requeue."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.crypto import SigningKey
from node.errors import ChanceryError
from node.mempool import Mempool
from node.transaction import Transaction, sign_transaction

KEY = SigningKey.from_seed(b"\x03" * 32)


def make_tx(nonce: int, padding: int = 0) -> Transaction:
    return sign_transaction(
        KEY,
        "chancery-test",
        "membership",
        "set_encryption_key",
        {"encryption_key": b"\x01" * 32, "pad": "x" * padding},
        nonce,
        1_700_000_000_000,
    )


# Twenty transactions of different sizes, built once.
POOL = [make_tx(nonce, padding=(nonce * 37) % 200) for nonce in range(20)]
SIZES = [tx.size_bytes for tx in POOL]
HUGE = 10**9


def refused(pool: Mempool, tx: Transaction) -> ChanceryError:
    with pytest.raises(ChanceryError) as info:
        pool.add(tx)
    return info.value


def test_pool_transactions_have_distinct_sizes() -> None:
    assert len(set(SIZES)) > 10
    assert len({tx.tx_id for tx in POOL}) == len(POOL)


def test_add_and_lookup() -> None:
    pool = Mempool(txs_max=10, bytes_max=HUGE)
    assert len(pool) == 0
    pool.add(POOL[0])
    pool.add(POOL[1])
    assert len(pool) == 2
    assert pool.queued_count == 2
    assert pool.size_bytes == SIZES[0] + SIZES[1]
    assert POOL[0].tx_id in pool
    assert POOL[2].tx_id not in pool
    assert pool.get(POOL[1].tx_id) is POOL[1]
    assert pool.get(POOL[2].tx_id) is None
    assert set(pool.admitted_at_s) == {POOL[0].tx_id, POOL[1].tx_id}


def test_count_cap() -> None:
    pool = Mempool(txs_max=3, bytes_max=HUGE)
    for tx in POOL[:3]:
        assert not pool.is_full
        pool.add(tx)
    assert pool.is_full
    error = refused(pool, POOL[3])
    assert error.code == "mempool.full"
    assert error.http_status == 429
    assert error.details == {"retry_after_s": 1}
    assert len(pool) == 3
    assert POOL[3].tx_id not in pool
    assert pool.size_bytes == sum(SIZES[:3])


def test_byte_cap_allows_an_exact_fit() -> None:
    pool = Mempool(txs_max=100, bytes_max=SIZES[0] + SIZES[1])
    pool.add(POOL[0])
    assert not pool.is_full
    pool.add(POOL[1])
    assert pool.size_bytes == pool.bytes_max
    assert pool.is_full
    error = refused(pool, POOL[2])
    assert error.code == "mempool.full"
    assert pool.size_bytes == SIZES[0] + SIZES[1]


def test_byte_cap_refuses_one_byte_over() -> None:
    pool = Mempool(txs_max=100, bytes_max=SIZES[0] + SIZES[1] - 1)
    pool.add(POOL[0])
    assert refused(pool, POOL[1]).code == "mempool.full"
    assert len(pool) == 1


def test_proposed_transactions_still_count_against_the_caps() -> None:
    pool = Mempool(txs_max=2, bytes_max=HUGE)
    pool.add(POOL[0])
    pool.add(POOL[1])
    assert pool.take_batch(10, HUGE) == [POOL[0], POOL[1]]
    assert pool.queued_count == 0
    assert len(pool) == 2
    assert pool.size_bytes == SIZES[0] + SIZES[1]
    assert refused(pool, POOL[2]).code == "mempool.full"


def test_duplicate_is_refused_while_pending() -> None:
    pool = Mempool(txs_max=10, bytes_max=HUGE)
    pool.add(POOL[0])
    error = refused(pool, POOL[0])
    assert error.code == "tx.duplicate"
    assert error.http_status == 409
    assert error.details == {"status": "pending", "tx_id": POOL[0].tx_id.hex()}
    assert len(pool) == 1
    assert pool.size_bytes == SIZES[0]
    # Still a duplicate once proposed.
    pool.take_batch(1, HUGE)
    assert refused(pool, POOL[0]).code == "tx.duplicate"
    # And no longer one once committed.
    pool.remove_committed([POOL[0].tx_id])
    pool.add(POOL[0])
    assert len(pool) == 1


def test_duplicate_wins_over_full() -> None:
    pool = Mempool(txs_max=1, bytes_max=HUGE)
    pool.add(POOL[0])
    assert refused(pool, POOL[0]).code == "tx.duplicate"


def test_take_batch_is_fifo_and_respects_the_count() -> None:
    pool = Mempool(txs_max=100, bytes_max=HUGE)
    for tx in POOL[:7]:
        pool.add(tx)
    assert pool.take_batch(3, HUGE) == POOL[:3]
    assert pool.take_batch(3, HUGE) == POOL[3:6]
    assert pool.take_batch(3, HUGE) == POOL[6:7]
    assert pool.take_batch(3, HUGE) == []
    assert pool.take_batch(0, HUGE) == []
    assert len(pool) == 7


def test_take_batch_respects_bytes() -> None:
    pool = Mempool(txs_max=100, bytes_max=HUGE)
    for tx in POOL[:6]:
        pool.add(tx)
    limit = SIZES[0] + SIZES[1] + SIZES[2] - 1
    assert pool.take_batch(100, limit) == POOL[:2]
    assert pool.take_batch(100, SIZES[2] + SIZES[3]) == POOL[2:4]
    assert pool.queued_count == 2


def test_take_batch_never_starves_an_oversized_head() -> None:
    pool = Mempool(txs_max=100, bytes_max=HUGE)
    pool.add(POOL[5])
    pool.add(POOL[6])
    assert pool.take_batch(100, 1) == [POOL[5]]
    assert pool.take_batch(100, 1) == [POOL[6]]


def test_remove_committed() -> None:
    pool = Mempool(txs_max=100, bytes_max=HUGE)
    for tx in POOL[:5]:
        pool.add(tx)
    batch = pool.take_batch(2, HUGE)
    # Committed: the proposed pair plus a still-queued one; unknown ids are ignored.
    pool.remove_committed([batch[0].tx_id, batch[1].tx_id, POOL[3].tx_id, b"\x00" * 32])
    assert len(pool) == 2
    assert pool.size_bytes == SIZES[2] + SIZES[4]
    assert set(pool.admitted_at_s) == {POOL[2].tx_id, POOL[4].tx_id}
    assert POOL[0].tx_id not in pool
    assert pool.take_batch(10, HUGE) == [POOL[2], POOL[4]]
    pool.remove_committed([POOL[2].tx_id, POOL[2].tx_id])  # twice is harmless
    assert pool.size_bytes == SIZES[4]


def test_requeue_puts_transactions_back_at_the_front_in_order() -> None:
    pool = Mempool(txs_max=100, bytes_max=HUGE)
    for tx in POOL[:5]:
        pool.add(tx)
    batch = pool.take_batch(3, HUGE)
    assert batch == POOL[:3]
    pool.add(POOL[5])
    pool.requeue(batch)
    assert pool.queued_count == 6
    assert len(pool) == 6
    assert pool.size_bytes == sum(SIZES[:6])
    assert pool.take_batch(100, HUGE) == POOL[:6]


def test_requeue_skips_committed_and_unknown_transactions() -> None:
    pool = Mempool(txs_max=100, bytes_max=HUGE)
    for tx in POOL[:4]:
        pool.add(tx)
    batch = pool.take_batch(3, HUGE)
    pool.remove_committed([POOL[1].tx_id])
    pool.requeue([*batch, POOL[9]])
    assert POOL[1].tx_id not in pool
    assert POOL[9].tx_id not in pool
    assert pool.take_batch(100, HUGE) == [POOL[0], POOL[2], POOL[3]]
    assert pool.size_bytes == SIZES[0] + SIZES[2] + SIZES[3]


async def test_wait_not_empty_follows_the_queue() -> None:
    pool = Mempool(txs_max=10, bytes_max=HUGE)
    waiter = asyncio.ensure_future(pool.wait_not_empty())
    await asyncio.sleep(0)
    assert not waiter.done()
    pool.add(POOL[0])
    await asyncio.wait_for(waiter, timeout=1)
    batch = pool.take_batch(10, HUGE)
    again = asyncio.ensure_future(pool.wait_not_empty())
    await asyncio.sleep(0)
    assert not again.done()
    pool.requeue(batch)
    await asyncio.wait_for(again, timeout=1)
    pool.remove_committed([POOL[0].tx_id])
    last = asyncio.ensure_future(pool.wait_not_empty())
    await asyncio.sleep(0)
    assert not last.done()
    last.cancel()


@settings(max_examples=80, deadline=None)
@given(
    order=st.permutations(range(len(POOL))),
    count=st.integers(1, 20),
    txs_max=st.integers(0, 25),
    bytes_max=st.integers(1, 3_000),
)
def test_take_batch_takes_the_longest_fifo_prefix_within_limits(
    order: list[int], count: int, txs_max: int, bytes_max: int
) -> None:
    pool = Mempool(txs_max=100, bytes_max=HUGE)
    queued = [POOL[i] for i in order[:count]]
    for tx in queued:
        pool.add(tx)
    batch = pool.take_batch(txs_max, bytes_max)
    expected: list[Transaction] = []
    total = 0
    for tx in queued:
        if len(expected) >= txs_max or (expected and total + tx.size_bytes > bytes_max):
            break
        expected.append(tx)
        total += tx.size_bytes
    assert batch == expected
    assert pool.queued_count == count - len(batch)
    assert len(pool) == count
    assert pool.take_batch(100, HUGE) == queued[len(batch) :]


def test_oldest_pending_takes_the_oldest_first_queued_or_proposed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Re-relay picks what has waited longest, whether proposed meanwhile or not, and
    stops at the first one admitted too recently."""
    clock = [100.0]
    monkeypatch.setattr("node.mempool.time.monotonic", lambda: clock[0])
    pool = Mempool(txs_max=100, bytes_max=1 << 20)
    transactions = [make_tx(nonce) for nonce in range(5)]
    for tx in transactions:
        pool.add(tx)
        clock[0] += 1.0  # admitted at 100, 101, 102, 103, 104
    pool.take_batch(2, 1 << 20)  # the two oldest are proposed now
    clock[0] = 108.5  # ages 8.5, 7.5, 6.5, 5.5, 4.5
    assert pool.oldest_pending(5.0, 10) == transactions[:4]
    assert pool.oldest_pending(5.0, 3) == transactions[:3]
    assert pool.oldest_pending(9.0, 10) == []
    pool.remove_committed([transactions[0].tx_id])
    assert pool.oldest_pending(5.0, 10) == transactions[1:4]
