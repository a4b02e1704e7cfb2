"""Tests for node.storage: a real LevelDB store, blocks committed through the Ledger."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from node.block import CommitCertificate, CommittedBlock
from node.invariants import InvariantViolation
from node.storage import ChainStore, StorageError, TxRecord
from node.transaction import Transaction

if TYPE_CHECKING:
    from tests.unit.conftest import Chain, Consortium


def three_blocks(chain: Chain) -> list[Transaction]:
    """Commit heights 1..3: two txs (one failing), a revocation, an empty block."""
    c = chain.consortium
    add = c.sign(
        c.admins["enterprise-a"],
        "membership",
        "add_member",
        {"name": "Alice", "public_key": b"\x5a" * 32},
        nonce=1,
    )
    forbidden = c.sign(
        c.members["enterprise-b"],
        "membership",
        "add_member",
        {"name": "Bob", "public_key": b"\x5b" * 32},
        nonce=2,
    )
    revoke = c.sign(
        c.admins["notary"],
        "membership",
        "revoke_member",
        {"public_key": c.members["notary"].public_key},
        nonce=3,
    )
    chain.commit([add, forbidden])
    chain.commit([revoke])
    chain.commit([])
    return [add, forbidden, revoke]


def snapshot(store: ChainStore, txs: list[Transaction], keys: set[bytes]) -> dict[str, Any]:
    return {
        "height": store.height,
        "last": store.last_block_hash,
        "root": store.state_root,
        "genesis_hash": store.genesis_hash,
        "blocks": [store.get_block(h) for h in range(store.height + 2)],
        "txs": [store.get_tx(tx.tx_id) for tx in txs],
        "state": {key: store.get(key) for key in keys},
    }


def test_open_creates_the_genesis_block(chain: Chain) -> None:
    genesis = chain.consortium.genesis
    store = chain.store
    expected = genesis.genesis_block()
    assert store.height == 0
    assert store.genesis_hash == genesis.genesis_hash
    assert store.last_block_hash == genesis.genesis_hash
    assert store.state_root == expected.header.state_root
    assert store.get_block(0) == expected
    assert store.get_block(1) is None
    assert store.height_of(genesis.genesis_hash) == 0
    for key, value in genesis.genesis_writes().items():
        assert store.get(key) == value
    assert store.get(b"membership/absent") is None
    summary = store.get_block_summary(0)
    assert summary is not None
    assert summary[0] == expected.header
    assert summary[1] == expected.header_bytes


def test_committed_blocks_are_read_back(chain: Chain) -> None:
    add, forbidden, revoke = three_blocks(chain)
    store = chain.store
    assert store.height == 3
    block1 = store.get_block(1)
    assert block1 is not None
    assert block1.tx_ids == (add.tx_id, forbidden.tx_id)
    assert block1.envelopes == (add.envelope, forbidden.envelope)
    assert block1.header.prev_hash == chain.consortium.genesis.genesis_hash
    assert block1.block_hash == block1.header.block_hash()
    assert store.get_tx(forbidden.tx_id) == TxRecord(1, 1, forbidden.envelope, block1.receipts[1])
    assert store.get_tx(revoke.tx_id) == TxRecord(
        2, 0, revoke.envelope, store.get_block(2).receipts[0]
    )
    assert store.has_tx(add.tx_id)
    assert not store.has_tx(b"\x00" * 32)
    assert store.get_tx(b"\x00" * 32) is None
    block3 = store.get_block(3)
    assert block3 is not None
    assert block3.tx_ids == ()
    assert store.last_block_hash == block3.block_hash
    assert store.state_root == block3.header.state_root
    assert [store.height_of(store.get_block(h).block_hash) for h in range(4)] == [0, 1, 2, 3]
    assert store.height_of(b"\x01" * 32) is None
    # State: the added key's record is there, the writes of the failed tx are not.
    assert store.get(b"membership/key/" + b"\x5a" * 32) is not None
    assert store.get(b"membership/key/" + b"\x5b" * 32) is None


def test_reopen_gives_exactly_the_same_chain(chain: Chain) -> None:
    txs = three_blocks(chain)
    keys = set(chain.consortium.genesis.genesis_writes())
    for writes in chain.writes.values():
        keys |= set(writes)
    keys.add(b"membership/never-written")
    before = snapshot(chain.store, txs, keys)
    assert before["blocks"][-1] is None
    assert all(before["blocks"][:4])
    assert all(before["txs"])
    chain.reopen()
    after = snapshot(chain.store, txs, keys)
    assert after == before
    # And the reopened ledger keeps extending the same chain.
    block4 = chain.commit([])
    assert block4.height == 4
    assert block4.header.prev_hash == before["last"]


def test_deleted_state_keys_are_gone_after_reopen(chain: Chain) -> None:
    proposal = chain.ledger.build_proposal(
        chain.ledger.tip(), [], chain.next_timestamp(), proposer=0, view=0
    )
    certificate = chain.consortium.certificate(proposal.block_hash, 1)
    block = proposal.to_committed(certificate)
    chain.store.commit_block(block, {b"membership/orgs": None, b"test/new": b"value"})
    chain.reopen()
    assert chain.store.get(b"membership/orgs") is None
    assert chain.store.get(b"test/new") == b"value"


def test_opening_with_another_genesis_is_refused(
    chain: Chain, make_consortium: Callable[..., Consortium]
) -> None:
    chain.commit([])
    chain.close()
    for other in (
        make_consortium(chain_id="chancery-other"),
        make_consortium(genesis_time=1_700_000_000_001),
    ):
        with pytest.raises(StorageError, match="another chain") as info:
            ChainStore.open(chain.path, other.genesis)
        assert chain.consortium.genesis.genesis_hash.hex() in str(info.value)
        assert info.value.code == "storage.invalid"
    # The refusal closed LevelDB again: the right genesis still opens it.
    chain.reopen()
    assert chain.store.height == 1


def test_opening_a_locked_directory_is_a_storage_error(chain: Chain) -> None:
    with pytest.raises(StorageError, match="cannot open LevelDB"):
        ChainStore.open(chain.path, chain.consortium.genesis)


def test_commit_of_a_non_consecutive_height_crashes(chain: Chain) -> None:
    proposal = chain.ledger.build_proposal(
        chain.ledger.tip(), [], chain.next_timestamp(), proposer=0, view=0
    )
    block = proposal.to_committed(chain.consortium.certificate(proposal.block_hash, 1))
    skipped = replace(block, header=replace(block.header, height=2))
    with pytest.raises(InvariantViolation, match="height 2 after 0"):
        chain.store.commit_block(skipped, {})
    assert chain.store.height == 0
    assert chain.store.get_block(1) is None

    chain.store.commit_block(block, proposal.output.writes)
    with pytest.raises(InvariantViolation, match="height 1 after 1"):
        chain.store.commit_block(block, proposal.output.writes)


def test_commit_that_does_not_extend_the_tip_crashes(chain: Chain) -> None:
    proposal = chain.ledger.build_proposal(
        chain.ledger.tip(), [], chain.next_timestamp(), proposer=0, view=0
    )
    block = proposal.to_committed(chain.consortium.certificate(proposal.block_hash, 1))
    forked = replace(block, header=replace(block.header, prev_hash=b"\x01" * 32))
    with pytest.raises(InvariantViolation, match="does not extend"):
        chain.store.commit_block(forked, {})
    assert chain.store.height == 0


def test_ledger_refuses_an_invalid_certificate(chain: Chain) -> None:
    proposal = chain.ledger.build_proposal(
        chain.ledger.tip(), [], chain.next_timestamp(), proposer=0, view=0
    )
    empty = CommitCertificate(proposal.block_hash, 1, ())
    with pytest.raises(InvariantViolation, match="invalid certificate"):
        chain.ledger.commit(proposal, empty)
    assert chain.store.height == 0


def test_iter_blocks_bounds(chain: Chain) -> None:
    three_blocks(chain)

    def heights(from_height: int, limit: int) -> list[int]:
        blocks: list[CommittedBlock] = list(chain.store.iter_blocks(from_height, limit))
        return [block.height for block in blocks]

    assert heights(0, 10) == [0, 1, 2, 3]
    assert heights(0, 4) == [0, 1, 2, 3]
    assert heights(0, 2) == [0, 1]
    assert heights(1, 2) == [1, 2]
    assert heights(3, 1) == [3]
    assert heights(3, 100) == [3]
    assert heights(4, 10) == []
    assert heights(100, 10) == []
    assert heights(0, 0) == []
    assert heights(2, -1) == []
    assert heights(-2, 3) == [0]
    blocks = list(chain.store.iter_blocks(1, 3))
    assert blocks == [chain.store.get_block(h) for h in (1, 2, 3)]


def test_proposal_timestamp_is_monotonic_even_when_the_clock_is_behind(chain: Chain) -> None:
    genesis_time = chain.consortium.genesis.genesis_time
    tip = chain.ledger.tip()
    behind = chain.ledger.build_proposal(tip, [], genesis_time - 5_000, proposer=0, view=0)
    assert behind.header.timestamp == genesis_time + 1
    ahead = chain.ledger.build_proposal(tip, [], genesis_time + 7, proposer=0, view=0)
    assert ahead.header.timestamp == genesis_time + 7


def test_store_survives_a_reopen_of_an_untouched_directory(
    tmp_path: Path, consortium: Consortium
) -> None:
    first = ChainStore.open(tmp_path / "d", consortium.genesis)
    first.close()
    first.close()  # closing twice is harmless
    second = ChainStore.open(tmp_path / "d", consortium.genesis)
    try:
        assert second.height == 0
        assert second.get_block(0) == consortium.genesis.genesis_block()
    finally:
        second.close()
