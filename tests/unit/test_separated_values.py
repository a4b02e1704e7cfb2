"""Tests for value separation in node.storage: long state values kept once under `v:`.

A real LevelDB store; what is inside is checked with plyvel once the store is closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import plyvel
import pytest

from contracts.registry import builtin_registry
from node.block import CommittedBlock
from node.invariants import InvariantViolation
from node.ledger import Ledger
from node.storage import (
    META_STORAGE_FORMAT,
    SEPARATED_VALUE_BYTES,
    SEPARATED_VALUE_PREFIX,
    STATE_PREFIX,
    STORAGE_FORMAT,
    ChainStore,
    StorageError,
    height_key,
)

if TYPE_CHECKING:
    from tests.unit.conftest import Chain

LONG = b"L" * SEPARATED_VALUE_BYTES
SHORT = b"s" * (SEPARATED_VALUE_BYTES - 1)
# Begins with the reference tag: stored inline, it would read as a reference.
TAGGED = b"\xc1" + bytes(range(12))


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
    """Commit one empty block per map of `writes`, all in one batch (the store does not
    re-execute: the writes stand for what the blocks wrote)."""
    blocks = next_blocks(chain, len(writes))
    chain.store.commit_blocks([(b, w, b"") for b, w in zip(blocks, writes, strict=True)])


def raw(path: Path, prefix: bytes) -> dict[bytes, bytes]:
    """Every entry under `prefix` of the closed store at `path`, prefix removed."""
    db = plyvel.DB(str(path))
    try:
        return {key[len(prefix) :]: value for key, value in db.iterator(prefix=prefix)}
    finally:
        db.close()


def test_long_values_are_kept_under_v_and_read_back_through_their_key(chain: Chain) -> None:
    commit_writes(chain, {b"test/long": LONG, b"test/short": SHORT, b"test/tagged": TAGGED})
    assert chain.store.get(b"test/long") == LONG
    assert chain.store.get(b"test/tagged") == TAGGED
    chain.close()
    state, separated = raw(chain.path, STATE_PREFIX), raw(chain.path, SEPARATED_VALUE_PREFIX)
    assert state[b"test/short"] == SHORT
    for key, value in ((b"test/long", LONG), (b"test/tagged", TAGGED)):
        reference = state[key]
        assert len(reference) == 13 and reference[0] == 0xC1
        assert reference[1:9] == height_key(1)
        assert separated[reference[1:]] == value
    chain.reopen()
    assert chain.store.storage_format == STORAGE_FORMAT
    assert [chain.store.get(k) for k in (b"test/long", b"test/short", b"test/tagged")] == [
        LONG,
        SHORT,
        TAGGED,
    ]


def test_rewriting_or_deleting_a_key_deletes_the_value_it_replaces(chain: Chain) -> None:
    def separated_count() -> int:
        chain.close()
        count = len(raw(chain.path, SEPARATED_VALUE_PREFIX))
        chain.reopen()
        return count

    before = separated_count()  # what genesis separated
    commit_writes(chain, {b"test/a": LONG, b"test/b": LONG + b"b"})
    assert separated_count() == before + 2
    commit_writes(chain, {b"test/a": LONG + b"2"})
    assert separated_count() == before + 2
    commit_writes(chain, {b"test/a": SHORT})
    assert separated_count() == before + 1
    commit_writes(chain, {b"test/b": None})
    assert separated_count() == before
    assert chain.store.get(b"test/a") == SHORT
    assert chain.store.get(b"test/b") is None


def test_a_key_rewritten_within_one_batch_keeps_only_its_last_value(chain: Chain) -> None:
    commit_writes(chain, {b"test/a": LONG, b"test/b": LONG})
    # A state-transfer batch: the second block must find the first's references, which
    # are not in the database yet.
    commit_writes(
        chain,
        {b"test/a": LONG + b"2", b"test/b": None, b"test/c": LONG},
        {b"test/a": LONG + b"3", b"test/b": LONG + b"3", b"test/c": SHORT},
    )
    assert chain.store.get(b"test/a") == LONG + b"3"
    chain.close()
    state, separated = raw(chain.path, STATE_PREFIX), raw(chain.path, SEPARATED_VALUE_PREFIX)
    references = {value[1:] for value in state.values() if value[:1] == b"\xc1"}
    assert set(separated) == references
    assert separated[state[b"test/a"][1:]] == LONG + b"3"
    assert separated[state[b"test/b"][1:]] == LONG + b"3"
    assert state[b"test/c"] == SHORT
    chain.reopen()


def format_1_store(chain: Chain) -> Path:
    """Turn `chain`'s closed store into one written before values were separated."""
    commit_writes(chain, {b"test/plain": SHORT})
    chain.close()
    db = plyvel.DB(str(chain.path))
    try:
        for key, value in list(db.iterator(prefix=STATE_PREFIX)):
            if value[:1] == b"\xc1":  # what genesis separated goes back inline
                db.put(key, db.get(SEPARATED_VALUE_PREFIX + value[1:]))
        for key in list(db.iterator(prefix=SEPARATED_VALUE_PREFIX, include_value=False)):
            db.delete(key)
        db.put(STATE_PREFIX + b"test/tagged", TAGGED)
        db.put(STATE_PREFIX + b"test/long", LONG)
        db.delete(META_STORAGE_FORMAT)
    finally:
        db.close()
    return chain.path


def test_a_format_1_store_is_read_as_it_is_and_never_written(chain: Chain) -> None:
    path = format_1_store(chain)
    # As an auditor reads a snapshot: wrapped as it is, not opened (which migrates).
    chain.store = ChainStore(plyvel.DB(str(path)), chain.consortium.genesis.genesis_hash)
    chain.ledger = Ledger(chain.consortium.genesis, chain.store, builtin_registry())
    assert chain.store.storage_format == 1
    # The tagged value is a value here, not a reference.
    assert chain.store.get(b"test/tagged") == TAGGED
    assert not chain.store.is_reference(TAGGED)
    with pytest.raises(InvariantViolation, match="format 1"):
        commit_writes(chain, {})
    chain.reopen()


def test_opening_a_format_1_store_migrates_values_that_begin_with_the_tag(
    chain: Chain,
) -> None:
    format_1_store(chain)
    chain.reopen()
    assert chain.store.storage_format == STORAGE_FORMAT
    for key, value in ((b"test/tagged", TAGGED), (b"test/long", LONG), (b"test/plain", SHORT)):
        assert chain.store.get(key) == value
    # Long values written before stay inline until rewritten; new ones are separated,
    # and rewriting the migrated one deletes the value it moved.
    commit_writes(chain, {b"test/tagged": SHORT, b"test/new": LONG})
    chain.close()
    state, separated = raw(chain.path, STATE_PREFIX), raw(chain.path, SEPARATED_VALUE_PREFIX)
    assert state[b"test/long"] == LONG and state[b"test/tagged"] == SHORT
    assert list(separated.values()).count(LONG) == 1
    assert TAGGED not in separated.values()
    chain.reopen()
    assert chain.store.get(b"test/new") == LONG


def test_a_store_of_a_newer_format_is_refused(chain: Chain) -> None:
    chain.close()
    db = plyvel.DB(str(chain.path))
    db.put(META_STORAGE_FORMAT, bytes([STORAGE_FORMAT + 1]))
    db.close()
    with pytest.raises(StorageError, match="run a newer node"):
        ChainStore.open(chain.path, chain.consortium.genesis)
    db = plyvel.DB(str(chain.path))
    db.put(META_STORAGE_FORMAT, bytes([STORAGE_FORMAT]))
    db.close()
    chain.reopen()  # the refusal closed LevelDB again


def test_the_threshold_is_the_stores_setting(chain: Chain) -> None:
    chain.store.close()
    chain.store = ChainStore.open(
        chain.path, chain.consortium.genesis, separated_value_bytes=len(SHORT)
    )
    chain.ledger = Ledger(chain.consortium.genesis, chain.store, builtin_registry())
    commit_writes(chain, {b"test/short": SHORT, b"test/shorter": SHORT[1:]})
    chain.close()
    state = raw(chain.path, STATE_PREFIX)
    assert state[b"test/short"][:1] == b"\xc1" and len(state[b"test/short"]) == 13
    assert state[b"test/shorter"] == SHORT[1:]
    chain.reopen()
    assert chain.store.get(b"test/short") == SHORT
