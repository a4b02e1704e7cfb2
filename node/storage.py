"""LevelDB storage: blocks with certificates, receipts, the tx index, state and chain metadata.

A data directory holds two LevelDB stores (heights are 8-byte big-endian, indexes and
sequence numbers 4-byte big-endian, so keys sort numerically):

The history store, `<data>/history/`, keeps what each block records once and never
changes, under keys that begin with the block's height:
- `<height>b` -> msgpack `{"commit", "header", "tx_ids"}`
- `<height>e` -> `envelopes_digest` of the block's envelopes, which peers compare during
  state transfer (no header field covers the signatures)
- `<height>w<seq>` -> the seq-th `[key, value|nil]` entry of the block's write set `W_h`
  (PROTOCOL.md section 4), as encoded in `W_h`: `W_h` is the array header followed by
  the entries in order. It is what state transfer serves so a peer can prove its state
  against `state_root` without re-executing, and what an auditor compares a replay against
- `<height>x<index>` -> msgpack `[envelope, receipt]`, so a block's transactions are one
  sequential range read
- `<height>v<seq>` -> `[key, value]`, a state value that a migration from format 1 moved

The state store, `<data>/` itself, keeps what is looked up by hash or changes:
- `m:chain_id`, `m:genesis_hash`, `m:height`, `m:state_root`, `m:last_hash` - chain metadata
- `m:storage_format` -> `STORAGE_FORMAT`; absent in a format-1 store, which kept
  everything in one LevelDB and which `ChainStore.open` migrates
- `h:<block_hash>` -> `<height>`
- `t:<tx_id>` -> `<height><index>`, the index from a transaction's id to where it is
- `s:<state key>` -> the state value (state keys are `<contract>/<key>`), or, for a value
  of `SEPARATED_VALUE_BYTES` or more, a 14-byte reference `0xc1 <history key>` to the
  write-set entry that wrote it
- `c:` - reserved for the consensus log (votes a replica must never contradict)

Why two stores: LevelDB rewrites a table each time it merges it into the level below, and
a table whose key range overlaps old data is merged with that data. Hash-ordered keys
overlap everything, and with them in the same store, so did every block-ordered record
(about two thirds of the bytes): an aging chain spent most of its CPU rewriting its own
history. In a store of its own, the history arrives in key order, no table overlaps
another, and LevelDB moves tables down without rewriting them (docs/performance.md,
round 9). Long state values are kept only in the history, as the write-set entry that
wrote them, so the hash-ordered store stays small. The state root hashes logical values,
so where a value is kept changes no hash; reading a separated value costs a second lookup.

A block's history is written and synced first, then its state, indexes and metadata in
one synced batch of the state store. A crash in between leaves the history ahead, and
opening the store applies the missing blocks' state from their history (tx ids, header,
write set): after a crash the node has either all of a block or none of it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import msgpack
import plyvel

from node.block import (
    BlockHeader,
    CommitCertificate,
    CommittedBlock,
    encode_write_set,
    envelopes_digest,
)
from node.encoding import pack_trusted
from node.genesis import Genesis
from node.invariants import require

log = logging.getLogger(__name__)

META_CHAIN_ID: Final = b"m:chain_id"
META_GENESIS_HASH: Final = b"m:genesis_hash"
META_HEIGHT: Final = b"m:height"
META_STATE_ROOT: Final = b"m:state_root"
META_LAST_HASH: Final = b"m:last_hash"
META_STORAGE_FORMAT: Final = b"m:storage_format"
# Progress of a migration from format 1, so that an interrupted one goes on where it was.
META_MIGRATION: Final = b"m:migration"
HASH_PREFIX: Final = b"h:"
TX_PREFIX: Final = b"t:"
STATE_PREFIX: Final = b"s:"
CONSENSUS_PREFIX: Final = b"c:"
HISTORY_DIR: Final = "history"
HISTORY_BLOCK: Final = b"b"
HISTORY_ENVELOPES_DIGEST: Final = b"e"
HISTORY_MIGRATED_VALUE: Final = b"v"
HISTORY_WRITE: Final = b"w"
HISTORY_TX: Final = b"x"
TX_INDEX_BYTES: Final = 4
SEQ_BYTES: Final = 4
# 1: one LevelDB with block-ordered keys under `b:`, `x:`, `w:`, `e:`; 2: a development
# format of 2026-11-22 (long values under `v:`), never released; 3: two stores.
STORAGE_FORMAT: Final = 3
# A stored state value that begins with this byte is a reference to a history entry.
# 0xc1 is the one byte msgpack never uses, so no record a contract stores begins with it;
# a raw value that does (a hash, a key) is separated whatever its length.
SEPARATED_VALUE_TAG: Final = 0xC1
# State values this long or longer are kept only in the history. An anchor record (about
# 290 bytes) and an invoice are; counters and positions, for which a second lookup would
# cost more than their bytes, are not.
SEPARATED_VALUE_BYTES: Final = 128
LEVELDB_WRITE_BUFFER_BYTES: Final = 64 * 1024 * 1024
# The history store only appends, in key order, and LevelDB moves its flushed tables down
# without rewriting them, so a smaller buffer would cost it no compaction and save memory
# (16 MiB: about 55 MB less per node). But LevelDB runs the flushes and compactions of
# every store in a process on one thread, so a history flush waits behind the state
# store's compactions, which take up to 10 s on an old chain; once the next buffer is full
# too, commits stall. Measured on a 10-million-transaction chain at 2,000 tx/s: p50 / p99
# 1.0 / 5.3 s with 16 MiB, 216 / 536 ms with 64 MiB (docs/performance.md, round 10).
HISTORY_WRITE_BUFFER_BYTES: Final = LEVELDB_WRITE_BUFFER_BYTES
LEVELDB_CACHE_BYTES: Final = 128 * 1024 * 1024
# Most reads on the hot path miss (is this tx_id new? was this hash anchored?): a bloom
# filter answers a miss from memory instead of searching every level's table index.
LEVELDB_BLOOM_FILTER_BITS: Final = 10
# No Snappy: what a node stores is mostly hashes, keys and signatures, which do not
# compress, while compressing every memtable flush and compaction costs CPU at the moment
# the node has least of it. Measured, 4 validators at 2,000 tx/s for 45 s on 2 cores:
# p99 commit latency 2.0-2.2 s with Snappy, 0.97-1.27 s without (docs/performance.md).
LEVELDB_COMPRESSION: Final = None
# Each open table keeps its index and bloom filter in memory; a lookup that reaches a table
# LevelDB had to close reads and parses them again. LevelDB's default of 1,000 tables
# (2 MB each) covers 2 GB: a chain of 10 million transactions is 5 GB per node, compacted.
LEVELDB_MAX_OPEN_FILES: Final = 5000
# LevelDB's default 2 MB tables make tens of thousands of files on an old chain.
LEVELDB_TABLE_BYTES: Final = 32 * 1024 * 1024
# LevelDB's compaction thread runs at this nice value (node/thread_priority.py): it
# yields to consensus and execution while they have work, and uses every idle cycle.
COMPACTION_NICE: Final = 10
# A migration from format 1 moves this many blocks per pair of synced batches.
MIGRATION_BLOCKS_PER_BATCH: Final = 200
# Format-1 key prefixes, read only by the migration.
_V1_BLOCK: Final = b"b:"
_V1_TX: Final = b"x:"
_V1_WRITE_SET: Final = b"w:"
_V1_ENVELOPES_DIGEST: Final = b"e:"


class StorageError(Exception):
    """The data directory cannot be used: another chain's, or unreadable."""

    code = "storage.invalid"


def height_key(height: int) -> bytes:
    return height.to_bytes(8, "big")


def block_key(height: int) -> bytes:
    """History key of the block record at `height`."""
    return height_key(height) + HISTORY_BLOCK


def envelopes_digest_key(height: int) -> bytes:
    """History key of the `envelopes_digest` of the block at `height`."""
    return height_key(height) + HISTORY_ENVELOPES_DIGEST


def tx_records_prefix(height: int) -> bytes:
    """History prefix of the `[envelope, receipt]` records of the block at `height`."""
    return height_key(height) + HISTORY_TX


def tx_record_key(height: int, index: int) -> bytes:
    return tx_records_prefix(height) + index.to_bytes(TX_INDEX_BYTES, "big")


def write_entries_prefix(height: int) -> bytes:
    """History prefix of the write-set entries of the block at `height`."""
    return height_key(height) + HISTORY_WRITE


def write_entry_key(height: int, seq: int) -> bytes:
    return write_entries_prefix(height) + seq.to_bytes(SEQ_BYTES, "big")


def _migrated_value_key(height: int, seq: int) -> bytes:
    return height_key(height) + HISTORY_MIGRATED_VALUE + seq.to_bytes(SEQ_BYTES, "big")


@dataclass(frozen=True, slots=True)
class TxRecord:
    """Where a committed transaction is, with its envelope and receipt bytes."""

    height: int
    index: int
    envelope: bytes
    receipt: bytes


@dataclass(frozen=True, slots=True)
class LevelDbSizing:
    """The `[storage]` sizing of one store (node/config.py)."""

    cache_bytes: int = LEVELDB_CACHE_BYTES
    write_buffer_bytes: int = LEVELDB_WRITE_BUFFER_BYTES
    max_open_files: int = LEVELDB_MAX_OPEN_FILES
    table_bytes: int = LEVELDB_TABLE_BYTES


class ChainStore:
    """The node's committed chain in LevelDB. Only committed data is ever written here."""

    def __init__(
        self,
        db: plyvel.DB,
        history: plyvel.DB,
        genesis_hash: bytes,
        *,
        separated_value_bytes: int = SEPARATED_VALUE_BYTES,
    ) -> None:
        """Wrap the two opened, current stores of a data directory (`open` opens,
        creates, migrates and recovers them)."""
        self._db = db
        self._history = history
        self.genesis_hash = genesis_hash
        self._separated_value_bytes = separated_value_bytes
        self.height = int.from_bytes(db.get(META_HEIGHT), "big")
        self.state_root: bytes = db.get(META_STATE_ROOT)
        self.last_block_hash: bytes = db.get(META_LAST_HASH)

    @property
    def state_db(self) -> plyvel.DB:
        """The state store, for an auditor to read as untrusted input."""
        return self._db

    @property
    def history_db(self) -> plyvel.DB:
        """The history store, for an auditor to read as untrusted input."""
        return self._history

    @classmethod
    def open(
        cls,
        path: Path,
        genesis: Genesis,
        *,
        cache_bytes: int = LEVELDB_CACHE_BYTES,
        write_buffer_bytes: int = LEVELDB_WRITE_BUFFER_BYTES,
        max_open_files: int = LEVELDB_MAX_OPEN_FILES,
        table_bytes: int = LEVELDB_TABLE_BYTES,
        history_write_buffer_bytes: int = HISTORY_WRITE_BUFFER_BYTES,
        separated_value_bytes: int = SEPARATED_VALUE_BYTES,
        create: bool = True,
    ) -> ChainStore:
        """Open the data directory at `path` for `genesis`'s chain, with the LevelDB
        sizing of the node's `[storage]` config: created if `create` and empty, migrated
        from format 1, and with the state of blocks whose history outlived a crash applied.

        Raises:
            StorageError: the directory holds another chain, a format this node does not
                read, no chain (with `create=False`), or LevelDB cannot open it.
        """
        sizing = LevelDbSizing(cache_bytes, write_buffer_bytes, max_open_files, table_bytes)
        path.mkdir(parents=True, exist_ok=True)
        db = _open_leveldb(path, sizing, create)
        try:
            # The history of a format-1 store is created by its migration.
            history_sizing = replace(sizing, write_buffer_bytes=history_write_buffer_bytes)
            history = _open_leveldb(path / HISTORY_DIR, history_sizing, True)
        except StorageError:
            db.close()
            raise
        try:
            genesis_hash = _prepare(path, db, history, genesis, create)
            return cls(db, history, genesis_hash, separated_value_bytes=separated_value_bytes)
        except BaseException:
            history.close()
            db.close()
            raise

    def commit_block(
        self,
        block: CommittedBlock,
        writes: Mapping[bytes, bytes | None],
        write_set: bytes | None = None,
    ) -> None:
        """Persist a final block with its receipts and state writes.

        `write_set` is `encode_write_set(writes)` when the caller has it already.
        """
        encoded = encode_write_set(writes) if write_set is None else write_set
        self.commit_blocks([(block, writes, encoded)])

    def commit_blocks(
        self, blocks: Sequence[tuple[CommittedBlock, Mapping[bytes, bytes | None], bytes]]
    ) -> None:
        """Persist consecutive final blocks, each with its state writes and their encoded
        write set `W_h` (`encode_write_set(writes)`): the history of all of them in one
        synced batch, then their state in another (state transfer: two syncs for a run of
        blocks, and all of them or none)."""
        height, last_hash = self.height, self.last_block_hash
        for block, _, _ in blocks:
            require(block.height == height + 1, f"commit of height {block.height} after {height}")
            require(
                block.header.prev_hash == last_hash, "committed block does not extend the chain"
            )
            height, last_hash = block.height, block.block_hash
        if not blocks:
            return
        _write_blocks(self._db, self._history, blocks, self._separated_value_bytes)
        last = blocks[-1][0]
        self.height = last.height
        self.state_root = last.header.state_root
        self.last_block_hash = last.block_hash

    def compact(self) -> None:
        """Compact both stores now (blocking): for tools that wrote a chain in bulk."""
        self._db.compact_range()
        self._history.compact_range()

    def get(self, key: bytes) -> bytes | None:
        """Committed state by full key (`StateReader`)."""
        stored = self._db.get(STATE_PREFIX + key)
        if not stored or stored[0] != SEPARATED_VALUE_TAG:
            return stored
        entry = self._history.get(stored[1:])
        require(entry is not None, f"state key {key!r} refers to a missing history entry")
        entry_key, value = msgpack.unpackb(entry)
        require(entry_key == key, f"state key {key!r} refers to another key's entry")
        return value

    def separated_value(self, stored: bytes) -> tuple[bytes, bytes | None] | None:
        """For auditors: the history entry `[key, value]` a raw `s:` value refers to, None
        when it is no reference or refers to nothing that decodes as an entry."""
        if not stored or stored[0] != SEPARATED_VALUE_TAG:
            return None
        entry = self._history.get(stored[1:])
        try:
            pair = msgpack.unpackb(entry) if entry is not None else None
        except (ValueError, TypeError, msgpack.UnpackException):
            return None
        if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], bytes):
            return pair[0], pair[1]
        return None

    def has_tx(self, tx_id: bytes) -> bool:
        return self._db.get(TX_PREFIX + tx_id) is not None

    def get_tx(self, tx_id: bytes) -> TxRecord | None:
        position = self._db.get(TX_PREFIX + tx_id)
        if position is None:
            return None
        height = int.from_bytes(position[:-TX_INDEX_BYTES], "big")
        index = int.from_bytes(position[-TX_INDEX_BYTES:], "big")
        data = self._history.get(tx_record_key(height, index))
        require(data is not None, f"tx {tx_id.hex()} is indexed but not stored")
        envelope, receipt = msgpack.unpackb(data, raw=False)
        return TxRecord(height, index, envelope, receipt)

    def height_of(self, block_hash: bytes) -> int | None:
        data = self._db.get(HASH_PREFIX + block_hash)
        return None if data is None else int.from_bytes(data, "big")

    def block_hash_at(self, height: int) -> bytes | None:
        """The hash of the committed block at `height` (its certificate names it)."""
        summary = self.get_block_summary(height)
        return None if summary is None else summary[3].block_hash

    def get_block_summary(
        self, height: int
    ) -> tuple[BlockHeader, bytes, list[bytes], CommitCertificate] | None:
        """Header, header bytes, tx ids and certificate, without envelopes or receipts."""
        if not 0 <= height <= self.height:
            return None
        data = self._history.get(block_key(height))
        require(data is not None, f"block {height} missing below the tip")
        record = msgpack.unpackb(data, raw=False)
        header_bytes = record["header"]
        return (
            BlockHeader.decode(header_bytes),
            header_bytes,
            record["tx_ids"],
            CommitCertificate.from_wire(record["commit"]),
        )

    def get_block(self, height: int) -> CommittedBlock | None:
        """The whole block with envelopes and receipts, or None above the chain's height."""
        summary = self.get_block_summary(height)
        if summary is None:
            return None
        header, header_bytes, tx_ids, commit = summary
        records = [
            msgpack.unpackb(data, raw=False)
            for data in self._history.iterator(prefix=tx_records_prefix(height), include_key=False)
        ]
        require(len(records) == len(tx_ids), f"block {height} has missing transactions")
        return CommittedBlock(
            header=header,
            header_bytes=header_bytes,
            block_hash=commit.block_hash,
            tx_ids=tuple(tx_ids),
            envelopes=tuple(envelope for envelope, _ in records),
            receipts=tuple(receipt for _, receipt in records),
            commit=commit,
        )

    def get_write_set(self, height: int) -> bytes | None:
        """The encoded write set `W_h` of the block at `height`, or None above the chain."""
        if not 0 <= height <= self.height:
            return None
        return joined_write_set(self._history, height)

    def get_envelope_digests(self, from_height: int, limit: int) -> list[bytes]:
        """`envelopes_digest` of up to `limit` blocks from `from_height`, stopping at the tip."""
        last = min(self.height, from_height + limit - 1)
        digests = []
        for height in range(max(0, from_height), last + 1):
            digest = self._history.get(envelopes_digest_key(height))
            require(digest is not None, f"block {height} has no envelopes digest")
            digests.append(digest)
        return digests

    def iter_blocks(self, from_height: int, limit: int) -> Iterator[CommittedBlock]:
        """Up to `limit` whole blocks from `from_height` upward, stopping at the chain's tip."""
        last = min(self.height, from_height + limit - 1)
        for height in range(max(0, from_height), last + 1):
            block = self.get_block(height)
            require(block is not None, f"block {height} missing below the tip")
            if block is not None:
                yield block

    # --- the consensus log (votes a replica must never contradict) ----------------------

    def put_consensus(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Write consensus-log records in one synced batch: they must be on disk before the
        votes they record leave the node."""
        with self._db.write_batch(sync=True) as batch:
            for key, value in records:
                batch.put(CONSENSUS_PREFIX + key, value)

    def consensus_records(self) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self._db.iterator(prefix=CONSENSUS_PREFIX):
            yield key[len(CONSENSUS_PREFIX) :], value

    def delete_consensus(self, keys: list[bytes]) -> None:
        with self._db.write_batch() as batch:
            for key in keys:
                batch.delete(CONSENSUS_PREFIX + key)

    def close(self) -> None:
        for db in (self._history, self._db):
            if not db.closed:
                db.close()


def joined_write_set(history: plyvel.DB, height: int) -> bytes:
    """`W_h` of the block at `height` from its history entries: the array header, then the
    entries in order."""
    entries = list(history.iterator(prefix=write_entries_prefix(height), include_key=False))
    packer = msgpack.Packer()
    return packer.pack_array_header(len(entries)) + b"".join(entries)


def _open_leveldb(path: Path, sizing: LevelDbSizing, create: bool) -> plyvel.DB:
    """Raises: StorageError when LevelDB cannot open `path`."""
    try:
        return plyvel.DB(
            str(path),
            create_if_missing=create,
            write_buffer_size=sizing.write_buffer_bytes,
            lru_cache_size=sizing.cache_bytes,
            max_open_files=sizing.max_open_files,
            max_file_size=sizing.table_bytes,
            bloom_filter_bits=LEVELDB_BLOOM_FILTER_BITS,
            compression=LEVELDB_COMPRESSION,
        )
    except plyvel.Error as exc:
        raise StorageError(f"{path}: cannot open LevelDB ({exc})") from None


def _prepare(
    path: Path, db: plyvel.DB, history: plyvel.DB, genesis: Genesis, create: bool
) -> bytes:
    """Make the opened stores current for `genesis`'s chain; returns the genesis hash.

    Raises:
        StorageError: another chain's, no chain, or a format this node does not read.
    """
    genesis_block = genesis.genesis_block()
    stored_hash = db.get(META_GENESIS_HASH)
    if stored_hash is None:
        if not create:
            raise StorageError(f"{path}: not a Chancery data directory (no chain)")
        _initialise(db, history, genesis, genesis_block)
    elif stored_hash != genesis_block.block_hash:
        raise StorageError(
            f"{path}: this data directory belongs to another chain "
            f"(genesis_hash {stored_hash.hex()}, expected {genesis_block.block_hash.hex()} "
            f"for chain {genesis.chain_id!r}); use an empty data directory"
        )
    stored_format = _stored_format(path, db)
    if stored_format == 1:
        _migrate_from_format_1(path, db, history)
    _apply_history_ahead_of_state(path, db, history)
    return genesis_block.block_hash


def _initialise(
    db: plyvel.DB, history: plyvel.DB, genesis: Genesis, genesis_block: CommittedBlock
) -> None:
    writes = genesis.genesis_writes()
    metadata = (
        (META_STORAGE_FORMAT, bytes([STORAGE_FORMAT])),
        (META_CHAIN_ID, genesis.chain_id.encode()),
        (META_GENESIS_HASH, genesis_block.block_hash),
    )
    blocks = [(genesis_block, writes, encode_write_set(writes))]
    _write_blocks(db, history, blocks, SEPARATED_VALUE_BYTES, metadata)


def _stored_format(path: Path, db: plyvel.DB) -> int:
    """The store's format: 1 when it predates the marker.

    Raises:
        StorageError: a format this node does not read.
    """
    data = db.get(META_STORAGE_FORMAT)
    if data is None:
        return 1
    if data != bytes([STORAGE_FORMAT]):
        raise StorageError(
            f"{path}: storage format {data.hex()} is not one this node reads (1 or "
            f"{STORAGE_FORMAT}); format 2 was a development build's: start from an empty "
            "data directory and let the node catch up"
        )
    return STORAGE_FORMAT


def _history_height(history: plyvel.DB) -> int:
    last = next(history.iterator(reverse=True, include_value=False), None)
    return -1 if last is None else int.from_bytes(last[:8], "big")


def _apply_history_ahead_of_state(path: Path, db: plyvel.DB, history: plyvel.DB) -> None:
    """Apply the state of blocks whose history was synced before a crash stopped their
    state batch (`commit_blocks` writes the history first).

    Raises:
        StorageError: the history is behind the state (the disk lost synced writes).
    """
    state_height = int.from_bytes(db.get(META_HEIGHT), "big")
    history_height = _history_height(history)
    if history_height < state_height:
        raise StorageError(
            f"{path}: the history ends at height {history_height} but the state is at "
            f"{state_height}; the data directory is damaged: start from an empty one"
        )
    for height in range(state_height + 1, history_height + 1):
        record = msgpack.unpackb(history.get(block_key(height)), raw=False)
        header = BlockHeader.decode(record["header"])
        block_hash = CommitCertificate.from_wire(record["commit"]).block_hash
        entries = history.iterator(prefix=write_entries_prefix(height), include_key=False)
        writes = [tuple(msgpack.unpackb(entry)) for entry in entries]
        with db.write_batch(transaction=True, sync=True) as batch:
            _put_state(
                batch,
                height,
                record["tx_ids"],
                block_hash,
                header.state_root,
                writes,
                SEPARATED_VALUE_BYTES,
            )
        log.warning("applied the state of block %d from its history, after a crash", height)


def _migrate_from_format_1(path: Path, db: plyvel.DB, history: plyvel.DB) -> None:
    """Move a format-1 store's block-ordered records into the history store.

    In batches of blocks: each batch's history is synced before its records leave the
    state store, and `m:migration` records how far it went, so an interrupted migration
    goes on where it stopped. State values that begin with the reference tag are moved
    first, as history entries at the tip, because from now on such a value is a
    reference.
    """
    height = int.from_bytes(db.get(META_HEIGHT), "big")
    progress = db.get(META_MIGRATION)
    if progress is None:
        _move_tagged_values(db, history, height)
        next_height = 0
    else:
        next_height = int.from_bytes(progress, "big")
    if next_height <= height:
        log.info(
            "%s: migrating blocks %d..%d to storage format %d",
            path,
            next_height,
            height,
            STORAGE_FORMAT,
        )
    while next_height <= height:
        last = min(height, next_height + MIGRATION_BLOCKS_PER_BATCH - 1)
        moved: list[bytes] = []
        with history.write_batch(transaction=True, sync=True) as batch:
            for block_height in range(next_height, last + 1):
                moved.extend(_move_block_history(db, batch, block_height))
        with db.write_batch(transaction=True, sync=True) as batch:
            for key in moved:
                batch.delete(key)
            batch.put(META_MIGRATION, height_key(last + 1))
        next_height = last + 1
    with db.write_batch(transaction=True, sync=True) as batch:
        batch.put(META_STORAGE_FORMAT, bytes([STORAGE_FORMAT]))
        batch.delete(META_MIGRATION)


def _move_tagged_values(db: plyvel.DB, history: plyvel.DB, height: int) -> None:
    tagged = [
        (key, value)
        for key, value in db.iterator(prefix=STATE_PREFIX)
        if value and value[0] == SEPARATED_VALUE_TAG
    ]
    with history.write_batch(transaction=True, sync=True) as batch:
        for seq, (key, value) in enumerate(tagged):
            batch.put(
                _migrated_value_key(height, seq), pack_trusted([key[len(STATE_PREFIX) :], value])
            )
    with db.write_batch(transaction=True, sync=True) as batch:
        for seq, (key, _) in enumerate(tagged):
            batch.put(key, bytes([SEPARATED_VALUE_TAG]) + _migrated_value_key(height, seq))
        batch.put(META_MIGRATION, height_key(0))


def _move_block_history(db: plyvel.DB, batch: plyvel.WriteBatch, height: int) -> list[bytes]:
    """Put the format-1 records of the block at `height` into the history `batch`;
    returns their state-store keys, to delete once the batch is synced."""
    key = height_key(height)
    old_keys = [_V1_BLOCK + key, _V1_ENVELOPES_DIGEST + key, _V1_WRITE_SET + key]
    record, digest, write_set = (db.get(old) for old in old_keys)
    require(
        record is not None and digest is not None and write_set is not None,
        f"format-1 block {height} is incomplete",
    )
    batch.put(block_key(height), record)
    batch.put(envelopes_digest_key(height), digest)
    for seq, entry in enumerate(_write_set_entries(write_set, None)):
        batch.put(write_entry_key(height, seq), entry)
    for tx_key, value in db.iterator(prefix=_V1_TX + key):
        index = int.from_bytes(tx_key[-TX_INDEX_BYTES:], "big")
        batch.put(tx_record_key(height, index), value)
        old_keys.append(tx_key)
    return old_keys


def _write_blocks(
    db: plyvel.DB,
    history: plyvel.DB,
    blocks: Sequence[tuple[CommittedBlock, Mapping[bytes, bytes | None], bytes]],
    separated_value_bytes: int,
    metadata: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Write blocks with their writes and encoded write sets: the history of all of them
    in one synced batch, then their state (and `metadata`) in one synced batch."""
    entries = [_write_set_entries(write_set, len(writes)) for _, writes, write_set in blocks]
    with history.write_batch(transaction=True, sync=True) as batch:
        for (block, _, _), block_entries in zip(blocks, entries, strict=True):
            _put_history(batch, block, block_entries)
    with db.write_batch(transaction=True, sync=True) as batch:
        for block, writes, _ in blocks:
            _put_state(
                batch,
                block.height,
                block.tx_ids,
                block.block_hash,
                block.header.state_root,
                sorted(writes.items()),
                separated_value_bytes,
            )
        for key, value in metadata:
            batch.put(key, value)


def _write_set_entries(write_set: bytes, expected: int | None) -> list[bytes]:
    """The encoded `[key, value]` entries of an encoded `W_h`, as slices of its bytes."""
    unpacker = msgpack.Unpacker(max_buffer_size=max(len(write_set), 1))
    unpacker.feed(write_set)
    count = unpacker.read_array_header()
    require(expected is None or count == expected, "write set does not match its writes")
    entries = []
    start = unpacker.tell()
    for _ in range(count):
        unpacker.skip()
        end = unpacker.tell()
        entries.append(write_set[start:end])
        start = end
    require(start == len(write_set), "write set has trailing bytes")
    return entries


def _put_history(batch: plyvel.WriteBatch, block: CommittedBlock, entries: list[bytes]) -> None:
    height = block.height
    record = {
        "commit": block.commit.to_wire(),
        "header": block.header_bytes,
        "tx_ids": list(block.tx_ids),
    }
    batch.put(block_key(height), msgpack.packb(record, use_bin_type=True))
    batch.put(envelopes_digest_key(height), envelopes_digest(block.envelopes))
    for seq, entry in enumerate(entries):
        batch.put(write_entry_key(height, seq), entry)
    for index, (envelope, receipt) in enumerate(zip(block.envelopes, block.receipts, strict=True)):
        batch.put(
            tx_record_key(height, index), msgpack.packb([envelope, receipt], use_bin_type=True)
        )


def _put_state(
    batch: plyvel.WriteBatch,
    height: int,
    tx_ids: Sequence[bytes],
    block_hash: bytes,
    state_root: bytes,
    sorted_writes: Sequence[tuple[bytes, bytes | None]],
    separated_value_bytes: int,
) -> None:
    """The state-store half of a block: indexes, state and metadata. `sorted_writes` are
    in key order, the order of the block's write-set entries."""
    key = height_key(height)
    batch.put(HASH_PREFIX + block_hash, key)
    for index, tx_id in enumerate(tx_ids):
        batch.put(TX_PREFIX + tx_id, key + index.to_bytes(TX_INDEX_BYTES, "big"))
    tag = bytes([SEPARATED_VALUE_TAG])
    for seq, (state_key, value) in enumerate(sorted_writes):
        if value is None:
            batch.delete(STATE_PREFIX + state_key)
        elif len(value) >= separated_value_bytes or (value and value[0] == SEPARATED_VALUE_TAG):
            batch.put(STATE_PREFIX + state_key, tag + write_entry_key(height, seq))
        else:
            batch.put(STATE_PREFIX + state_key, value)
    batch.put(META_HEIGHT, key)
    batch.put(META_STATE_ROOT, state_root)
    batch.put(META_LAST_HASH, block_hash)
