"""LevelDB storage: blocks with certificates, receipts, the tx index, state and chain metadata.

Key layout (all keys are bytes; heights are 8-byte big-endian so they sort numerically):
- `m:chain_id`, `m:genesis_hash`, `m:height`, `m:state_root`, `m:last_hash` - chain metadata
- `b:<height>` -> msgpack `{"commit", "header", "tx_ids"}`
- `h:<block_hash>` -> `<height>`
- `x:<height><index>` (index 4 bytes big-endian) -> msgpack `[envelope, receipt]`, so a
  block's transactions are one sequential range read
- `t:<tx_id>` -> `<height><index>`, the index from a transaction's id to where it is
- `s:<state key>` -> the state value (state keys are `<contract>/<key>`), or for a value
  of `SEPARATED_VALUE_BYTES` or more a 13-byte reference `0xc1 <height><seq>` to it
- `v:<height><seq>` (seq 4 bytes big-endian) -> a separated state value, written by the
  block at `<height>` and deleted when a later block overwrites or deletes its key
- `w:<height>` -> the block's encoded write set `W_h` (PROTOCOL.md section 4): what state
  transfer serves so a peer can prove its state against `state_root` without re-executing,
  and what an auditor compares a replay against
- `e:<height>` -> `envelopes_digest` of the block's envelopes, which peers compare during
  state transfer (no header field covers the signatures)
- `c:` - reserved for the consensus log (votes a replica must never contradict)
- `m:storage_format` -> `STORAGE_FORMAT` (1 byte); absent in stores written before
  values were separated, which `ChainStore.open` migrates

Why values are separated (WiscKey's idea): state and the tx index are keyed by hashes, so
each new table LevelDB writes overlaps the whole key range of the level below, and every
byte under such a key is rewritten about once per level per fan-out as the chain ages.
Keys in commit order are almost free to compact. An `evidence.anchor` wrote about 475
bytes under hashed keys, 290 of them the anchor record; with the record under `v:` it
writes about 200. The state root hashes the logical values (PROTOCOL.md section 4), so
where a value is kept changes no hash; reading a separated value costs a second lookup.

A block, its receipts, its state writes, the indexes and the metadata land in one
synced write batch: after a crash the node has either all of a block or none of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
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
from node.genesis import Genesis
from node.invariants import require

META_CHAIN_ID: Final = b"m:chain_id"
META_GENESIS_HASH: Final = b"m:genesis_hash"
META_HEIGHT: Final = b"m:height"
META_STATE_ROOT: Final = b"m:state_root"
META_LAST_HASH: Final = b"m:last_hash"
BLOCK_PREFIX: Final = b"b:"
HASH_PREFIX: Final = b"h:"
TX_PREFIX: Final = b"t:"
BLOCK_TX_PREFIX: Final = b"x:"
TX_INDEX_BYTES: Final = 4
STATE_PREFIX: Final = b"s:"
WRITE_SET_PREFIX: Final = b"w:"
ENVELOPES_DIGEST_PREFIX: Final = b"e:"
CONSENSUS_PREFIX: Final = b"c:"
SEPARATED_VALUE_PREFIX: Final = b"v:"
META_STORAGE_FORMAT: Final = b"m:storage_format"
# 1: every state value under its `s:` key; 2: long values separated under `v:`.
STORAGE_FORMAT: Final = 2
# A stored state value that begins with this byte is a reference to a separated value.
# 0xc1 is the one byte msgpack never uses, so no record a contract stores begins with it;
# a raw value that does (a hash, a key) is separated whatever its length.
SEPARATED_VALUE_TAG: Final = 0xC1
SEPARATED_VALUE_SEQ_BYTES: Final = 4
# State values this long or longer are separated. An anchor record (about 290 bytes) and
# an invoice are; counters and positions (under 64 bytes), which a second lookup would
# cost more than their bytes, are not.
SEPARATED_VALUE_BYTES: Final = 128
LEVELDB_WRITE_BUFFER_BYTES: Final = 64 * 1024 * 1024
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


class StorageError(Exception):
    """The data directory cannot be used: another chain's, or unreadable."""

    code = "storage.invalid"


def height_key(height: int) -> bytes:
    return height.to_bytes(8, "big")


@dataclass(frozen=True, slots=True)
class TxRecord:
    """Where a committed transaction is, with its envelope and receipt bytes."""

    height: int
    index: int
    envelope: bytes
    receipt: bytes


class ChainStore:
    """The node's committed chain in LevelDB. Only committed data is ever written here."""

    def __init__(
        self,
        db: plyvel.DB,
        genesis_hash: bytes,
        *,
        separated_value_bytes: int = SEPARATED_VALUE_BYTES,
    ) -> None:
        """Wrap an opened store as it is (`open` creates, checks and migrates; an auditor
        reads a snapshot of any format).

        Raises:
            StorageError: the store's format is newer than this node's, or unreadable.
        """
        self._db = db
        self.genesis_hash = genesis_hash
        self.storage_format = _stored_format(db)
        # A format-1 store has no references: a value there that begins with the tag is
        # a value.
        self._references = self.storage_format >= 2
        self._separated_value_bytes = separated_value_bytes
        self.height = int.from_bytes(db.get(META_HEIGHT), "big")
        self.state_root: bytes = db.get(META_STATE_ROOT)
        self.last_block_hash: bytes = db.get(META_LAST_HASH)

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
        separated_value_bytes: int = SEPARATED_VALUE_BYTES,
    ) -> ChainStore:
        """Open (creating if needed) the store at `path` for `genesis`'s chain, with the
        LevelDB sizing of the node's `[storage]` config; a store of format 1 is migrated.

        Raises:
            StorageError: the directory holds another chain or a newer format, or LevelDB
                cannot open it.
        """
        path.mkdir(parents=True, exist_ok=True)
        try:
            db = plyvel.DB(
                str(path),
                create_if_missing=True,
                write_buffer_size=write_buffer_bytes,
                lru_cache_size=cache_bytes,
                max_open_files=max_open_files,
                max_file_size=table_bytes,
                bloom_filter_bits=LEVELDB_BLOOM_FILTER_BITS,
                compression=LEVELDB_COMPRESSION,
            )
        except plyvel.Error as exc:
            raise StorageError(f"{path}: cannot open LevelDB ({exc})") from None
        genesis_block = genesis.genesis_block()
        stored_hash = db.get(META_GENESIS_HASH)
        if stored_hash is None:
            cls._initialise(db, genesis, genesis_block)
        elif stored_hash != genesis_block.block_hash:
            db.close()
            raise StorageError(
                f"{path}: this data directory belongs to another chain "
                f"(genesis_hash {stored_hash.hex()}, expected {genesis_block.block_hash.hex()} "
                f"for chain {genesis.chain_id!r}); use an empty data directory"
            )
        try:
            if _stored_format(db) < STORAGE_FORMAT:
                _separate_tagged_values(db)
        except StorageError:
            db.close()
            raise
        return cls(db, genesis_block.block_hash, separated_value_bytes=separated_value_bytes)

    @staticmethod
    def _initialise(db: plyvel.DB, genesis: Genesis, genesis_block: CommittedBlock) -> None:
        with db.write_batch(transaction=True, sync=True) as batch:
            writes = genesis.genesis_writes()
            _put_block(
                batch,
                db.get,
                genesis_block,
                writes,
                encode_write_set(writes),
                {},
                SEPARATED_VALUE_BYTES,
            )
            batch.put(META_STORAGE_FORMAT, bytes([STORAGE_FORMAT]))
            batch.put(META_CHAIN_ID, genesis.chain_id.encode())
            batch.put(META_GENESIS_HASH, genesis_block.block_hash)

    def commit_block(
        self,
        block: CommittedBlock,
        writes: Mapping[bytes, bytes | None],
        write_set: bytes | None = None,
    ) -> None:
        """Persist a final block with its receipts and state writes in one synced batch.

        `write_set` is `encode_write_set(writes)` when the caller has it already.
        """
        encoded = encode_write_set(writes) if write_set is None else write_set
        self.commit_blocks([(block, writes, encoded)])

    def commit_blocks(
        self, blocks: Sequence[tuple[CommittedBlock, Mapping[bytes, bytes | None], bytes]]
    ) -> None:
        """Persist consecutive final blocks, each with its state writes and their encoded
        write set `W_h`, in one synced batch (state transfer: one sync for a run of blocks,
        and all of them or none)."""
        height, last_hash = self.height, self.last_block_hash
        for block, _, _ in blocks:
            require(block.height == height + 1, f"commit of height {block.height} after {height}")
            require(
                block.header.prev_hash == last_hash, "committed block does not extend the chain"
            )
            height, last_hash = block.height, block.block_hash
        if not blocks:
            return
        require(self._references, "a store of format 1 is read, never written: open() migrates")
        # What this batch stores under each state key it writes: a later block of the same
        # batch must find an earlier one's reference, which the database does not have yet.
        stored_in_batch: dict[bytes, bytes | None] = {}
        with self._db.write_batch(transaction=True, sync=True) as batch:
            for block, writes, write_set in blocks:
                _put_block(
                    batch,
                    self._db.get,
                    block,
                    writes,
                    write_set,
                    stored_in_batch,
                    self._separated_value_bytes,
                )
        last = blocks[-1][0]
        self.height = last.height
        self.state_root = last.header.state_root
        self.last_block_hash = last.block_hash

    def compact(self) -> None:
        """Compact the whole database now (blocking): for tools that wrote a chain in bulk."""
        self._db.compact_range()

    def get(self, key: bytes) -> bytes | None:
        """Committed state by full key (`StateReader`)."""
        stored = self._db.get(STATE_PREFIX + key)
        if not stored or stored[0] != SEPARATED_VALUE_TAG or not self._references:
            return stored
        value = self._db.get(SEPARATED_VALUE_PREFIX + stored[1:])
        require(value is not None, f"state key {key!r} refers to a missing value")
        return value

    def is_reference(self, stored: bytes) -> bool:
        """Whether a raw `s:` value is a reference to a separated value (for auditors)."""
        return self._references and bool(stored) and stored[0] == SEPARATED_VALUE_TAG

    def separated_value(self, reference: bytes) -> bytes | None:
        """The value a raw `s:` reference refers to, or None when it is not there."""
        return self._db.get(SEPARATED_VALUE_PREFIX + reference[1:])

    def has_tx(self, tx_id: bytes) -> bool:
        return self._db.get(TX_PREFIX + tx_id) is not None

    def get_tx(self, tx_id: bytes) -> TxRecord | None:
        position = self._db.get(TX_PREFIX + tx_id)
        if position is None:
            return None
        data = self._db.get(BLOCK_TX_PREFIX + position)
        require(data is not None, f"tx {tx_id.hex()} is indexed but not stored")
        envelope, receipt = msgpack.unpackb(data, raw=False)
        height = int.from_bytes(position[:-TX_INDEX_BYTES], "big")
        index = int.from_bytes(position[-TX_INDEX_BYTES:], "big")
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
        data = self._db.get(BLOCK_PREFIX + height_key(height))
        if data is None:
            return None
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
            for data in self._db.iterator(
                prefix=BLOCK_TX_PREFIX + height_key(height), include_key=False
            )
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
        return self._db.get(WRITE_SET_PREFIX + height_key(height))

    def get_envelope_digests(self, from_height: int, limit: int) -> list[bytes]:
        """`envelopes_digest` of up to `limit` blocks from `from_height`, stopping at the tip."""
        last = min(self.height, from_height + limit - 1)
        digests = []
        for height in range(max(0, from_height), last + 1):
            digest = self._db.get(ENVELOPES_DIGEST_PREFIX + height_key(height))
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
        if not self._db.closed:
            self._db.close()


def _stored_format(db: plyvel.DB) -> int:
    """The store's format: 1 when it predates the marker.

    Raises:
        StorageError: a format this node does not know.
    """
    data = db.get(META_STORAGE_FORMAT)
    if data is None:
        return 1
    if len(data) != 1 or not 1 <= data[0] <= STORAGE_FORMAT:
        raise StorageError(
            f"storage format {data.hex()} is not one this node reads (1 to {STORAGE_FORMAT});"
            " run a newer node"
        )
    return data[0]


def _separate_tagged_values(db: plyvel.DB) -> None:
    """Migrate format 1 to 2: a value that begins with the reference tag moves under `v:`,
    because from now on such a stored value is read as a reference. One synced batch with
    the format marker, so an interrupted migration is done again from the start."""
    height = db.get(META_HEIGHT)
    seq = 0
    with db.write_batch(transaction=True, sync=True) as batch:
        for key, value in db.iterator(prefix=STATE_PREFIX):
            if value and value[0] == SEPARATED_VALUE_TAG:
                # The block at the tip wrote no references (it is format 1), so
                # `v:<tip><seq>` is free; the next block's are `v:<tip + 1>...`.
                reference = height + seq.to_bytes(SEPARATED_VALUE_SEQ_BYTES, "big")
                batch.put(SEPARATED_VALUE_PREFIX + reference, value)
                batch.put(key, bytes([SEPARATED_VALUE_TAG]) + reference)
                seq += 1
        batch.put(META_STORAGE_FORMAT, bytes([STORAGE_FORMAT]))


def _put_block(
    batch: plyvel.WriteBatch,
    read: Callable[[bytes], bytes | None],
    block: CommittedBlock,
    writes: Mapping[bytes, bytes | None],
    write_set: bytes,
    stored_in_batch: dict[bytes, bytes | None],
    separated_value_bytes: int,
) -> None:
    height = height_key(block.height)
    record = {
        "commit": block.commit.to_wire(),
        "header": block.header_bytes,
        "tx_ids": list(block.tx_ids),
    }
    batch.put(BLOCK_PREFIX + height, msgpack.packb(record, use_bin_type=True))
    batch.put(HASH_PREFIX + block.block_hash, height)
    for index, (tx_id, envelope, receipt) in enumerate(
        zip(block.tx_ids, block.envelopes, block.receipts, strict=True)
    ):
        position = height + index.to_bytes(TX_INDEX_BYTES, "big")
        batch.put(BLOCK_TX_PREFIX + position, msgpack.packb([envelope, receipt], use_bin_type=True))
        batch.put(TX_PREFIX + tx_id, position)
    batch.put(WRITE_SET_PREFIX + height, write_set)
    batch.put(ENVELOPES_DIGEST_PREFIX + height, envelopes_digest(block.envelopes))
    _put_state(batch, read, height, writes, stored_in_batch, separated_value_bytes)
    batch.put(META_HEIGHT, height)
    batch.put(META_STATE_ROOT, block.header.state_root)
    batch.put(META_LAST_HASH, block.block_hash)


def _put_state(
    batch: plyvel.WriteBatch,
    read: Callable[[bytes], bytes | None],
    height: bytes,
    writes: Mapping[bytes, bytes | None],
    stored_in_batch: dict[bytes, bytes | None],
    separated_value_bytes: int,
) -> None:
    """Write one block's state writes, separating long values under `v:<height><seq>` and
    deleting the separated value each write replaces."""
    seq = 0
    for key, value in writes.items():
        state_key = STATE_PREFIX + key
        previous = stored_in_batch[key] if key in stored_in_batch else read(state_key)
        if previous and previous[0] == SEPARATED_VALUE_TAG:
            batch.delete(SEPARATED_VALUE_PREFIX + previous[1:])
        if value is None:
            batch.delete(state_key)
            stored_in_batch[key] = None
            continue
        if len(value) >= separated_value_bytes or (value and value[0] == SEPARATED_VALUE_TAG):
            reference = height + seq.to_bytes(SEPARATED_VALUE_SEQ_BYTES, "big")
            seq += 1
            batch.put(SEPARATED_VALUE_PREFIX + reference, value)
            value = bytes([SEPARATED_VALUE_TAG]) + reference
        batch.put(state_key, value)
        stored_in_batch[key] = value
