"""Tests for node.storage's two stores: history in block order, state by hash; long state
values kept once, as the write-set entry that wrote them; crash recovery between the two
batches; the migration from format 1 (one LevelDB).

Real LevelDB stores; what is inside is checked with plyvel once the store is closed.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import plyvel
import pytest

import node.storage as storage
from contracts.registry import builtin_registry
from node.audit import ChainAuditor
from node.audit_sources import audit_data_dir
from node.block import CommittedBlock, encode_write_set
from node.crypto import SignatureVerifier
from node.storage import (
    HISTORY_DIR,
    META_STORAGE_FORMAT,
    SEPARATED_VALUE_BYTES,
    STATE_PREFIX,
    STORAGE_FORMAT,
    ChainStore,
    StorageError,
    block_key,
    height_key,
    write_entry_key,
)

if TYPE_CHECKING:
    from tests.unit.conftest import Chain

LONG = b"L" * SEPARATED_VALUE_BYTES
SHORT = b"s" * (SEPARATED_VALUE_BYTES - 1)
# Begins with the reference tag: stored inline, it would read as a reference.
TAGGED = b"\xc1" + bytes(range(13))


def next_blocks(chain: Chain, count: int) -> list[CommittedBlock]:
    """`count` empty, certified blocks after the store's tip, each built on the one before."""
    parent, blocks = chain.ledger.tip(), []
    for n in range(count):
        proposal = chain.ledger.build_proposal(
            parent, [], chain.next_timestamp() + n, proposer=0, view=0
        )
        certificate = chain.consortium.certificate(proposal.block_hash, proposal.height)
        blocks.append(proposal.to_committed(certificate))
        parent = proposal.as_parent(chain.store)
    return blocks


def commit_writes(chain: Chain, *writes: Mapping[bytes, bytes | None]) -> None:
    """Commit one empty block per map of `writes`, all in one call (the store does not
    re-execute: the writes stand for what the blocks wrote)."""
    blocks = next_blocks(chain, len(writes))
    chain.store.commit_blocks(
        [(b, w, encode_write_set(w)) for b, w in zip(blocks, writes, strict=True)]
    )


def raw(path: Path, prefix: bytes = b"") -> dict[bytes, bytes]:
    """Every entry under `prefix` of the closed LevelDB at `path`."""
    db = plyvel.DB(str(path))
    try:
        return dict(db.iterator(prefix=prefix))
    finally:
        db.close()


def test_long_values_are_kept_once_as_the_write_set_entry_that_wrote_them(
    chain: Chain,
) -> None:
    writes = {b"test/long": LONG, b"test/short": SHORT, b"test/tagged": TAGGED}
    commit_writes(chain, writes)
    assert [chain.store.get(key) for key in writes] == list(writes.values())
    assert chain.store.get_write_set(1) == encode_write_set(writes)
    chain.close()
    state, history = raw(chain.path, STATE_PREFIX), raw(chain.path / HISTORY_DIR)
    assert state[STATE_PREFIX + b"test/short"] == SHORT
    for seq, key in ((0, b"test/long"), (2, b"test/tagged")):
        reference = state[STATE_PREFIX + key]
        assert reference == b"\xc1" + write_entry_key(1, seq)
        assert msgpack.unpackb(history[reference[1:]]) == [key, writes[key]]
    # Nothing block-ordered is left in the state store.
    assert not [key for key in raw(chain.path) if key[:2] in (b"b:", b"x:", b"w:", b"e:")]
    chain.reopen()
    assert [chain.store.get(key) for key in writes] == list(writes.values())


def test_write_sets_read_back_byte_for_byte_and_old_values_stay_history(chain: Chain) -> None:
    first = {b"test/a": LONG, b"test/b": SHORT}
    second = {b"test/a": None, b"test/b": LONG + b"2", b"test/c": TAGGED}
    # Two blocks in one call, as state transfer commits them; then a block with no writes.
    commit_writes(chain, first, second)
    commit_writes(chain, {})
    chain.reopen()
    for height, writes in ((1, first), (2, second), (3, {})):
        assert chain.store.get_write_set(height) == encode_write_set(writes)
    assert chain.store.get_write_set(4) is None
    assert chain.store.get(b"test/a") is None
    assert chain.store.get(b"test/b") == LONG + b"2"
    assert chain.store.get(b"test/c") == TAGGED


def test_the_threshold_is_the_stores_setting(chain: Chain) -> None:
    chain.reopen(separated_value_bytes=len(SHORT))
    commit_writes(chain, {b"test/short": SHORT, b"test/shorter": SHORT[1:]})
    chain.close()
    state = raw(chain.path, STATE_PREFIX)
    assert state[STATE_PREFIX + b"test/short"][:1] == b"\xc1"
    assert state[STATE_PREFIX + b"test/shorter"] == SHORT[1:]
    chain.reopen()
    assert chain.store.get(b"test/short") == SHORT


def test_the_history_store_has_a_write_buffer_of_its_own(chain: Chain) -> None:
    chain.reopen(write_buffer_bytes=64 * 1024 * 1024, history_write_buffer_bytes=64 * 1024)
    state_tables = sorted(chain.path.glob("*.ldb"))
    history_tables = list((chain.path / HISTORY_DIR).glob("*.ldb"))
    # A block's write goes into the memtable only once the full one is flushing; so after
    # ten blocks of 100 kB each, the 64 kB history buffer has been flushed at least 8 times.
    for n in range(10):
        commit_writes(chain, {b"test/%d" % n: bytes([n]) * 100_000})
    assert len(list((chain.path / HISTORY_DIR).glob("*.ldb"))) >= len(history_tables) + 8
    assert sorted(chain.path.glob("*.ldb")) == state_tables  # 64 MiB: nothing flushed


def test_a_crash_between_history_and_state_is_recovered_on_open(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    tx = chain.consortium.sign(
        chain.consortium.admins["notary"],
        "membership",
        "add_member",
        {"name": "Alice", "public_key": b"\x5a" * 32},
        nonce=1,
    )
    proposal = chain.ledger.build_proposal(
        chain.ledger.tip(), [tx], chain.next_timestamp(), proposer=0, view=0
    )
    certificate = chain.consortium.certificate(proposal.block_hash, 1)

    def crash(*args: Any) -> None:
        raise OSError("power lost")

    # The history batch is synced; the state batch never is, as if the node died there.
    monkeypatch.setattr(storage, "_put_state", crash)
    with pytest.raises(OSError, match="power lost"):
        chain.ledger.commit(proposal, certificate)
    monkeypatch.undo()
    chain.close()
    assert raw(chain.path, b"m:height")[b"m:height"] == height_key(0)
    chain.reopen()
    store = chain.store
    assert (store.height, store.last_block_hash) == (1, proposal.block_hash)
    assert store.state_root == proposal.header.state_root
    assert store.height_of(proposal.block_hash) == 1
    assert store.get_tx(tx.tx_id) is not None
    for key, value in proposal.output.writes.items():
        assert store.get(key) == value
    assert chain.commit([]).height == 2  # and the chain goes on


def test_a_history_behind_the_state_is_refused(chain: Chain) -> None:
    commit_writes(chain, {b"test/a": LONG})
    chain.close()
    history = plyvel.DB(str(chain.path / HISTORY_DIR))
    for key in list(history.iterator(prefix=height_key(1), include_value=False)):
        history.delete(key)
    history.close()
    with pytest.raises(StorageError, match="history ends at height 0 but the state is at 1"):
        ChainStore.open(chain.path, chain.consortium.genesis)


def test_formats_this_node_does_not_read_are_refused(chain: Chain) -> None:
    chain.close()
    for stored, message in ((b"\x02", "development build"), (b"\x09", "not one this node")):
        db = plyvel.DB(str(chain.path))
        db.put(META_STORAGE_FORMAT, stored)
        db.close()
        with pytest.raises(StorageError, match=message):
            ChainStore.open(chain.path, chain.consortium.genesis)
    db = plyvel.DB(str(chain.path))
    db.put(META_STORAGE_FORMAT, bytes([STORAGE_FORMAT]))
    db.close()
    chain.reopen()  # each refusal closed both stores again


# --- format 1: one LevelDB, as nodes wrote before the history store --------------------------


def rewrite_as_format_1(chain: Chain, *, tagged: bool = True) -> dict[str, Any]:
    """Rewrite `chain`'s directory in format 1, with a `test/tagged` state value that
    begins with the reference tag if `tagged`; returns what it holds, to compare."""
    store = chain.store
    heights = range(store.height + 1)
    blocks = [store.get_block(h) for h in heights]
    write_sets = [store.get_write_set(h) for h in heights]
    state_keys = [
        key[2:] for key in store.state_db.iterator(prefix=STATE_PREFIX, include_value=False)
    ]
    state = {key: store.get(key) for key in state_keys}
    if tagged:
        state[b"test/tagged"] = TAGGED  # a value format 1 kept inline
    chain.close()
    shutil.rmtree(chain.path / HISTORY_DIR)
    db = plyvel.DB(str(chain.path))
    try:
        for block, write_set in zip(blocks, write_sets, strict=True):
            assert block is not None and write_set is not None
            h = height_key(block.height)
            record = {
                "commit": block.commit.to_wire(),
                "header": block.header_bytes,
                "tx_ids": list(block.tx_ids),
            }
            db.put(b"b:" + h, msgpack.packb(record))
            db.put(b"e:" + h, storage.envelopes_digest(block.envelopes))
            db.put(b"w:" + h, write_set)
            for index, pair in enumerate(zip(block.envelopes, block.receipts, strict=True)):
                db.put(b"x:" + h + index.to_bytes(4, "big"), msgpack.packb(list(pair)))
        for key, value in state.items():
            db.put(STATE_PREFIX + key, value)
        db.delete(META_STORAGE_FORMAT)
    finally:
        db.close()
    return {"blocks": blocks, "write_sets": write_sets, "state": state}


def contents(store: ChainStore, state_keys: list[bytes]) -> dict[str, Any]:
    heights = range(store.height + 1)
    return {
        "blocks": [store.get_block(h) for h in heights],
        "write_sets": [store.get_write_set(h) for h in heights],
        "state": {key: store.get(key) for key in state_keys},
    }


def two_blocks(chain: Chain) -> None:
    """Blocks 1 and 2 add a member each: real transactions, so that an audit replays them."""
    c = chain.consortium
    for nonce in (1, 2):
        tx = c.sign(
            c.admins["notary"],
            "membership",
            "add_member",
            {"name": f"Member {nonce}", "public_key": bytes([nonce]) * 32},
            nonce=nonce,
        )
        chain.commit([tx])


def three_blocks(chain: Chain) -> None:
    """`two_blocks`, then a block writing a long value."""
    two_blocks(chain)
    commit_writes(chain, {b"test/long": LONG})


def test_opening_a_format_1_directory_migrates_it(chain: Chain) -> None:
    three_blocks(chain)
    before = rewrite_as_format_1(chain)
    chain.reopen()
    assert contents(chain.store, list(before["state"])) == before
    assert chain.store.state_db.get(META_STORAGE_FORMAT) == bytes([STORAGE_FORMAT])
    leftovers = [
        key
        for key in chain.store.state_db.iterator(include_value=False)
        if key[:2] in (b"b:", b"x:", b"w:", b"e:") or key == storage.META_MIGRATION
    ]
    assert leftovers == []
    assert chain.commit([]).height == chain.store.height  # and the chain goes on


def test_an_interrupted_migration_goes_on_where_it_stopped(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    three_blocks(chain)
    before = rewrite_as_format_1(chain)
    real = storage._move_block_history

    def crash_at_height_2(db: plyvel.DB, batch: plyvel.WriteBatch, height: int) -> list[bytes]:
        if height == 2:
            raise OSError("power lost")
        return real(db, batch, height)

    monkeypatch.setattr(storage, "MIGRATION_BLOCKS_PER_BATCH", 2)
    monkeypatch.setattr(storage, "_move_block_history", crash_at_height_2)
    with pytest.raises(OSError, match="power lost"):
        ChainStore.open(chain.path, chain.consortium.genesis)
    assert raw(chain.path, storage.META_MIGRATION)[storage.META_MIGRATION] == height_key(2)
    assert b"b:" + height_key(1) not in raw(chain.path, b"b:")  # blocks 0-1 were moved
    assert block_key(1) in raw(chain.path / HISTORY_DIR)
    monkeypatch.undo()
    chain.reopen()
    assert contents(chain.store, list(before["state"])) == before


def test_a_format_1_directory_is_audited_through_a_migrated_snapshot(chain: Chain) -> None:
    two_blocks(chain)
    rewrite_as_format_1(chain, tagged=False)
    verifier = SignatureVerifier(workers=1)
    try:
        genesis = chain.consortium.genesis
        auditor = ChainAuditor(genesis, builtin_registry(), verifier.executor)
        result = audit_data_dir(chain.path, genesis, auditor)
    finally:
        verifier.close()
    assert result.clean, result.divergence
    assert (result.blocks, result.height) == (3, 2)
    assert not (chain.path / HISTORY_DIR).exists()  # the directory itself is untouched
    chain.reopen()
