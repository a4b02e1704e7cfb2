"""Transaction relay between real transports, with real admission on real LevelDB stores:
what one validator admits reaches every other validator's mempool, once, in batches."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from contracts.registry import builtin_registry
from node.admission import Admission
from node.crypto import SignatureVerifier
from node.mempool import Mempool
from node.relay import (
    RELAY_BATCH_ENVELOPES_MAX,
    RELAY_BUFFER_ENVELOPES_MAX,
    RELAY_FLUSH_INTERVAL_MS,
    TransactionRelay,
)
from node.transaction import Transaction, encode_envelope
from tests.unit.conftest import Chain, Consortium, build_consortium
from tests.unit.test_p2p import WAIT_S, Network, Peer, eventually, sample

MEMPOOL_TXS_MAX = 10_000
MEMPOOL_BYTES_MAX = 64 * 1024 * 1024
ENVELOPE_BYTES_MAX = 1024 * 1024


@pytest.fixture(scope="module")
def four() -> Consortium:
    return build_consortium(validator_count=4)


@pytest.fixture(scope="module")
def verifier() -> Iterator[SignatureVerifier]:
    shared = SignatureVerifier(workers=2)
    yield shared
    shared.close()


@dataclass
class Validator:
    """One validator's relay stack: transport, LevelDB chain, mempool, admission, relay."""

    peer: Peer
    chain: Chain
    mempool: Mempool
    admission: Admission
    relay: TransactionRelay


@contextlib.asynccontextmanager
async def validators(
    consortium: Consortium, count: int, tmp_path: Path, verifier: SignatureVerifier
) -> AsyncIterator[list[Validator]]:
    """`count` connected validators, pings off so that frame counts are exact."""
    network = Network(consortium, count)
    started: list[Validator] = []
    try:
        for index in range(count):
            peer = await network.start(index, ping_interval_s=3600)
            chain = Chain(tmp_path / f"node{index}", consortium)
            mempool = Mempool(MEMPOOL_TXS_MAX, MEMPOOL_BYTES_MAX)
            admission = Admission(
                consortium.chain_id,
                chain.store,
                mempool,
                builtin_registry(),
                verifier,
                ENVELOPE_BYTES_MAX,
            )
            relay = TransactionRelay(peer.transport, admission, peer.metrics)
            await relay.start()
            started.append(Validator(peer, chain, mempool, admission, relay))
        others = set(range(count))
        for validator in started:
            expected = others - {validator.peer.transport.index}
            assert await validator.peer.transport.wait_until_connected(expected, WAIT_S)
        yield started
    finally:
        for validator in started:
            await validator.relay.stop()
        await network.stop_all()
        for validator in started:
            validator.chain.close()


def new_member(consortium: Consortium, nonce: int) -> Transaction:
    return consortium.sign(
        consortium.admins["notary"],
        "membership",
        "add_member",
        {"public_key": os.urandom(32), "name": f"member-{nonce}"},
        nonce=nonce,
    )


async def submit(validator: Validator, transactions: list[Transaction]) -> None:
    """What the HTTP layer does: admit (the relay then sends what was admitted)."""
    results = await validator.admission.admit_many([tx.envelope for tx in transactions])
    assert all(isinstance(result, Transaction) for result in results), results


async def test_a_transaction_admitted_at_one_node_reaches_every_mempool(
    four: Consortium, tmp_path: Path, verifier: SignatureVerifier
) -> None:
    async with validators(four, 3, tmp_path, verifier) as (a, b, c):
        tx = new_member(four, 1)
        await submit(a, [tx])
        await eventually(lambda: tx.tx_id in b.mempool and tx.tx_id in c.mempool)
        assert b.mempool.get(tx.tx_id) == tx
        assert sample(b.peer.metrics, "chancery_admitted_txs_total") == 1


async def test_a_backup_relays_like_the_primary_and_nobody_relays_twice(
    four: Consortium, tmp_path: Path, verifier: SignatureVerifier
) -> None:
    async with validators(four, 3, tmp_path, verifier) as (a, b, c):
        tx = new_member(four, 2)
        await submit(c, [tx])  # c is not the primary of view 0
        await eventually(lambda: tx.tx_id in a.mempool and tx.tx_id in b.mempool)
        # Proving a frame is never sent takes waiting: many flush intervals, in which a
        # receiver that relayed again would have sent its frame.
        await asyncio.sleep(RELAY_FLUSH_INTERVAL_MS * 40 / 1000)
        status = {v.peer.transport.index: v.peer.transport.peer_status() for v in (a, b, c)}
        assert status[0][1]["frames_out"] == 0  # a received it; it does not pass it on
        assert status[1][0]["frames_out"] == 0
        assert status[2][0]["frames_out"] == 1 and status[2][1]["frames_out"] == 1


async def test_a_burst_travels_in_full_batches(
    four: Consortium, tmp_path: Path, verifier: SignatureVerifier
) -> None:
    count = 2 * RELAY_BATCH_ENVELOPES_MAX + 10
    transactions = [new_member(four, nonce) for nonce in range(count)]
    async with validators(four, 2, tmp_path, verifier) as (a, b):
        await submit(a, transactions)
        await eventually(lambda: len(b.mempool) == count)
        assert a.peer.transport.peer_status()[1]["frames_out"] == 3
        assert all(tx.tx_id in b.mempool for tx in transactions)


async def test_relayed_garbage_is_dropped_and_counted_per_peer(
    four: Consortium, tmp_path: Path, verifier: SignatureVerifier
) -> None:
    good = new_member(four, 3)
    # A forgery of a transaction the peer has not seen (copies of known ones are plain
    # duplicates: refused before any signature check).
    unseen = new_member(four, 4)
    forged = encode_envelope(unseen.body_bytes, unseen.signer, bytes(64))
    other_chain = four.sign(
        four.admins["notary"], "membership", "add_member", {}, chain_id="another-chain"
    ).envelope
    async with validators(four, 2, tmp_path, verifier) as (a, b):
        await submit(b, [good])  # so that a's copy below is a duplicate
        await eventually(lambda: good.tx_id in a.mempool)
        a.peer.transport.broadcast({"type": "txs", "envelopes": [forged, other_chain, b"\x00"]})
        a.peer.transport.broadcast({"type": "txs", "envelopes": [good.envelope]})
        a.peer.transport.broadcast({"type": "txs", "envelopes": "not a list"})
        a.peer.transport.broadcast({"type": "txs", "envelopes": []})
        expected = {"tx.bad_signature": 1, "tx.wrong_chain": 1, "tx.malformed": 1, "malformed": 2}
        await eventually(lambda: b.peer.transport.peer_status()[0]["frames_dropped"] == expected)
        metric = "chancery_peer_frames_dropped_total"
        assert sample(b.peer.metrics, metric, peer="0", reason="tx.bad_signature") == 1
        assert len(b.mempool) == 1  # the duplicate is not an error, and not added twice


def test_the_outbound_buffer_is_bounded(four: Consortium) -> None:
    network = Network(four, 2)
    peer = network.build(0)
    unused = SimpleNamespace()  # this test never admits; the relay only hooks into it
    relay = TransactionRelay(peer.transport, unused, peer.metrics)  # type: ignore[arg-type]
    taken = relay.relay([b"x"] * (RELAY_BUFFER_ENVELOPES_MAX + 7))
    assert taken == RELAY_BUFFER_ENVELOPES_MAX
    metric = "chancery_relay_envelopes_dropped_total"
    assert sample(peer.metrics, metric, reason="buffer_full") == 7
    assert relay.relay([bytes(relay.batch_bytes_max)]) == 0  # could never fit a frame
    assert sample(peer.metrics, metric, reason="too_large") == 1
