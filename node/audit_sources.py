"""Where `chancery audit` gets its blocks: a node's export stream, or a copy of its data
directory. Both feed `node.audit.ChainAuditor`, which knows nothing of either.

- `audit_remote`: `GET /v1/status` (the node must serve the genesis file's chain), then
  `GET /v1/blocks?from=H&limit=N` page by page from height 0 up to the height the node had
  when the audit started.
- `audit_data_dir`: the data directory is never written to. LevelDB writes LOCK, LOG and
  manifest files even to read, and a node may hold the LOCK, so the auditor opens a private
  snapshot instead: the immutable table files (`*.ldb`, `*.sst`) hard-linked into a
  temporary directory (copied when linking fails, e.g. across filesystems), every other
  file LevelDB needs (CURRENT, MANIFEST-*, `*.log`) copied, and the snapshot retried if the
  directory's files changed meanwhile (a running node flushed or compacted); the state
  store first, then the history store (`history/`), which a node writes first, so the
  snapshot's history is never behind its state. The snapshot of a format-1 directory is
  migrated, and the state of blocks whose history is ahead applied, as a node would on
  opening it. The snapshot is deleted afterwards. Besides the blocks it checks each
  block's stored write set, envelopes digest and `t:` index entries, then the chain
  metadata and the whole stored state against the replay.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack
import plyvel

from node.audit import (
    TX_INDEX_BITS,
    AuditResult,
    ChainAuditor,
    Divergence,
    ProgressListener,
    SourceBlock,
    SourceItem,
    StoredRecords,
    state_divergence,
)
from node.client import Client, ClientError
from node.genesis import Genesis
from node.storage import (
    HISTORY_DIR,
    META_LAST_HASH,
    META_STATE_ROOT,
    STATE_PREFIX,
    TX_INDEX_BYTES,
    TX_PREFIX,
    ChainStore,
    StorageError,
    block_key,
    envelopes_digest_key,
    height_key,
    tx_record_key,
    tx_records_prefix,
)

EXPORT_PAGE_BLOCKS: Final = 100  # the API's default page; its maximum is 1000
REMOTE_TIMEOUT_S: Final = 60.0
SNAPSHOT_ATTEMPTS_MAX: Final = 5
TABLE_SUFFIXES: Final = (".ldb", ".sst")
# LevelDB's own files that a snapshot does without: the lock and the info logs.
SNAPSHOT_SKIPPED: Final = frozenset({"LOCK", "LOG", "LOG.old"})
STORED_BLOCK_FIELDS: Final = frozenset({"commit", "header", "tx_ids"})
TX_INDEX_MASK: Final = (1 << TX_INDEX_BITS) - 1

TotalListener = Callable[[int], None]  # the number of blocks the audit will go through


class AuditSourceError(Exception):
    """The audit cannot run: no chain to read, or not the genesis file's chain."""

    code = "audit.source"


# --- a node's export stream ---------------------------------------------------------------


def audit_remote(
    url: str,
    genesis: Genesis,
    auditor: ChainAuditor,
    *,
    on_total: TotalListener | None = None,
    on_progress: ProgressListener | None = None,
    page_blocks: int = EXPORT_PAGE_BLOCKS,
) -> AuditResult:
    """Audit the chain the node at `url` serves, from genesis to its current height.

    Raises:
        AuditSourceError: a bad URL, an unreachable node, another chain, or a stream that
            breaks off.
    """
    try:
        client = Client(url, timeout_s=REMOTE_TIMEOUT_S)
    except ValueError as exc:
        raise AuditSourceError(f"--from: {exc}") from None
    with client:
        try:
            status = client.status()
        except ClientError as exc:
            raise AuditSourceError(str(exc)) from None
        height = _remote_height(url, status, genesis)
        if on_total is not None:
            on_total(height + 1)
        return auditor.run(export_stream(client, height, page_blocks), on_progress)


def _remote_height(url: str, status: Any, genesis: Genesis) -> int:
    """Raises: AuditSourceError unless the node serves the genesis file's chain."""
    try:
        genesis_hash, height = status["genesis_hash"], status["height"]
    except (KeyError, TypeError):
        raise AuditSourceError(f"{url}: /v1/status has no genesis_hash and height") from None
    if genesis_hash != genesis.genesis_hash.hex():
        raise AuditSourceError(
            f"{url} serves another chain: genesis hash {genesis_hash}, the genesis file's is "
            f"{genesis.genesis_hash.hex()} (chain {genesis.chain_id!r})"
        )
    if not isinstance(height, int) or isinstance(height, bool) or height < 0:
        raise AuditSourceError(f"{url}: /v1/status height is not a height: {height!r}")
    return height


def export_stream(client: Client, last_height: int, page_blocks: int) -> Iterator[SourceItem]:
    """Blocks 0..`last_height` from `GET /v1/blocks`, a page at a time.

    A stream that is not msgpack ends with an `export.decode` divergence at the height it
    should have delivered.

    Raises:
        AuditSourceError: the node stopped answering or served fewer blocks than it has.
    """
    height = 0
    while height <= last_height:
        limit = min(page_blocks, last_height - height + 1)
        page_start = height
        try:
            for record in client.export_blocks(height, limit):
                yield SourceBlock(height, record)
                height += 1
        except ClientError as exc:
            raise AuditSourceError(f"reading blocks from height {height}: {exc}") from None
        except (ValueError, msgpack.UnpackException) as exc:
            message = f"the export stream does not decode as msgpack ({exc})"
            yield Divergence(height, "export.decode", message)
            return
        if height == page_start:
            raise AuditSourceError(
                f"{client.base_url} served no block at height {height} "
                f"(its height was {last_height} when the audit started)"
            )


# --- a copy of a data directory -------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """A private copy of a data directory that LevelDB may write to."""

    path: Path
    linked_files: int
    copied_files: int
    copied_bytes: int


def _snapshot_files(data_dir: Path) -> dict[str, tuple[int, int]]:
    """The files a snapshot takes, with their size and mtime (to notice a change)."""
    files = {}
    for entry in os.scandir(data_dir):
        if entry.name not in SNAPSHOT_SKIPPED and entry.is_file(follow_symlinks=False):
            info = entry.stat(follow_symlinks=False)
            files[entry.name] = (info.st_size, info.st_mtime_ns)
    return files


def _link_or_copy(source: Path, target: Path) -> bool:
    """Hard-link a file, or copy it when the filesystem refuses; True when linked."""
    try:
        os.link(source, target)
        return True
    except OSError:
        shutil.copy2(source, target)
        return False


def _take_snapshot(data_dir: Path, target: Path) -> Snapshot | None:
    """Copy `data_dir` into the empty `target`; None when its files changed meanwhile."""
    before = _snapshot_files(data_dir)
    linked = copied = copied_bytes = 0
    try:
        for name in sorted(before, key=lambda n: (n != "CURRENT", not n.startswith("MANIFEST"))):
            source = data_dir / name
            if name.endswith(TABLE_SUFFIXES) and _link_or_copy(source, target / name):
                linked += 1
                continue
            shutil.copy2(source, target / name)
            copied += 1
            copied_bytes += before[name][0]
    except FileNotFoundError:  # a compaction removed a file: take the snapshot again
        return None
    after = _snapshot_files(data_dir)
    # Tables never change; the logs and the manifest only grow, so a longer one still
    # copied a consistent prefix. New or vanished files mean a flush or a compaction.
    if after.keys() != before.keys():
        return None
    return Snapshot(target, linked, copied, copied_bytes)


@contextlib.contextmanager
def data_snapshot(data_dir: Path, parent: Path | None = None) -> Iterator[Snapshot]:
    """A private snapshot of the LevelDB directory `data_dir`, deleted on exit.

    Raises:
        AuditSourceError: `data_dir` is not a readable LevelDB directory, or it kept
            changing under every attempt.
    """
    try:
        if not data_dir.is_dir():
            raise AuditSourceError(f"{data_dir}: not a directory")
        if not (data_dir / "CURRENT").is_file():
            raise AuditSourceError(f"{data_dir}: not a LevelDB data directory (no CURRENT file)")
    except OSError as exc:
        raise AuditSourceError(f"{data_dir}: cannot read ({exc.strerror or exc})") from None
    try:
        root = Path(tempfile.mkdtemp(prefix="chancery-audit-", dir=parent))
    except OSError as exc:
        raise AuditSourceError(f"cannot create a snapshot directory: {exc}") from None
    try:
        state = _snapshot_into(data_dir, root / "state")
        # After the state store: the node writes a block's history before its state, so
        # this copy of the history is never behind the state's.
        history = data_dir / HISTORY_DIR
        if history.is_dir():
            taken = _snapshot_into(history, state.path / HISTORY_DIR)
            state = Snapshot(
                state.path,
                state.linked_files + taken.linked_files,
                state.copied_files + taken.copied_files,
                state.copied_bytes + taken.copied_bytes,
            )
        yield state
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _snapshot_into(data_dir: Path, target: Path) -> Snapshot:
    """Snapshot one LevelDB directory into `target` (created), retrying while its files
    change."""
    for attempt in range(SNAPSHOT_ATTEMPTS_MAX):
        if attempt:
            shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        try:
            snapshot = _take_snapshot(data_dir, target)
        except OSError as exc:
            raise AuditSourceError(f"{data_dir}: cannot read ({exc.strerror or exc})") from None
        if snapshot is not None:
            return snapshot
    raise AuditSourceError(
        f"{data_dir}: its files kept changing during {SNAPSHOT_ATTEMPTS_MAX} snapshot "
        "attempts; stop the node or copy the directory first"
    )


class StoredChain:
    """The chain in an opened snapshot, read as untrusted input.

    `ChainStore` serves the metadata and the write sets; blocks are read record by record
    here, because `ChainStore.get_block` trusts its own directory (a corrupt record is an
    invariant violation to a node) while to an auditor it is a finding with a height.
    """

    def __init__(self, store: ChainStore) -> None:
        self.store = store
        self._db = store.state_db
        self._history = store.history_db

    @property
    def height(self) -> int:
        return self.store.height

    def blocks(self) -> Iterator[SourceItem]:
        """Every block from 0 to the stored height, with the records kept beside it."""
        for height in range(self.height + 1):
            try:
                yield self.read_block(height)
            except plyvel.Error as exc:
                yield Divergence(height, "store.record", f"LevelDB cannot read it ({exc})")
                return

    def read_block(self, height: int) -> SourceItem:
        """The block at `height` as an export map, or a `store.record` divergence."""
        data = self._history.get(block_key(height))
        if data is None:
            message = f"no block record at height {height} (stored height {self.height})"
            return Divergence(height, "store.record", message)
        record = _unpack(data)
        if not isinstance(record, dict) or record.keys() != STORED_BLOCK_FIELDS:
            message = f"the block record at height {height} is not a map of commit, header, tx_ids"
            return Divergence(height, "store.record", message, found=data)
        envelopes, receipts = [], []
        records = self._history.iterator(prefix=tx_records_prefix(height))
        for index, (tx_key, value) in enumerate(records):
            pair = _unpack(value)
            if tx_key != tx_record_key(height, index):
                message = f"transaction record {index} of block {height} is missing"
                return Divergence(height, "store.record", message, tx_index=index)
            if not (isinstance(pair, list) and len(pair) == 2 and _all_bytes(pair)):
                message = f"transaction record {index} of block {height} is not [envelope, receipt]"
                return Divergence(height, "store.record", message, found=value, tx_index=index)
            envelopes.append(pair[0])
            receipts.append(pair[1])
        export = {
            "commit": record["commit"],
            "header": record["header"],
            "receipts": receipts,
            "txs": envelopes,
        }
        return SourceBlock(height, export, self._stored(height, record["tx_ids"]))

    def _stored(self, height: int, tx_ids: Any) -> StoredRecords:
        return StoredRecords(
            tx_ids=tx_ids,
            write_set=self.store.get_write_set(height),
            envelopes_digest=self._history.get(envelopes_digest_key(height)),
        )

    def final_divergence(self, result: AuditResult) -> Divergence | None:
        """After a clean replay: the chain metadata, the `t:` index, then the whole state.

        `store.meta` or `store.state` at the stored height, `store.tx_index` at the height
        of the transaction concerned, or None.
        """
        height = self.height
        meta = (
            ("state_root", META_STATE_ROOT, result.state_root),
            ("last_hash", META_LAST_HASH, result.block_hash),
        )
        for name, key, expected in meta:
            found = self._db.get(key)
            if found != expected:
                message = f"the chain metadata m:{name} is not the last block's"
                return Divergence(height, "store.meta", message, expected, found)
        divergence = self._tx_index_divergence(result.tx_positions)
        if divergence is not None:
            return divergence
        return state_divergence(height, self._stored_state(), result.state)

    def _stored_state(self) -> Iterator[tuple[bytes, bytes]]:
        """Every `s:` entry as key and value, a separated value read from the history entry
        it refers to. A reference to nothing, or to another key's entry, stands for
        itself, and so differs from the replay."""
        for key, stored in self._db.iterator(prefix=STATE_PREFIX):
            state_key = key[len(STATE_PREFIX) :]
            entry = self.store.separated_value(stored)
            if entry is not None and entry[0] == state_key and entry[1] is not None:
                yield state_key, entry[1]
            else:
                yield state_key, stored

    def _tx_index_divergence(self, positions: dict[bytes, int]) -> Divergence | None:
        """Every `t:` entry points at its transaction, and every transaction has one.

        One sequential scan (entries are in tx_id order, not chain order); only when
        entries are missing are the transactions looked up one by one, in chain order, to
        name the first without one.
        """
        entries = 0
        for key, value in self._db.iterator(prefix=TX_PREFIX):
            tx_id = key[len(TX_PREFIX) :]
            entries += 1
            position = positions.get(tx_id)
            expected = None if position is None else _position_bytes(position)
            if value != expected:
                height = _position_height(value if position is None else expected)
                message = (
                    "the t: index names a transaction the chain does not have"
                    if position is None
                    else "the t: index entry of this transaction points elsewhere"
                )
                return Divergence(height, "store.tx_index", message, expected, value, tx_id=tx_id)
        if entries == len(positions):
            return None
        for tx_id, position in positions.items():
            if self._db.get(TX_PREFIX + tx_id) is None:
                height, index = position >> TX_INDEX_BITS, position & TX_INDEX_MASK
                message = "the transaction has no t: index entry"
                expected = _position_bytes(position)
                return Divergence(height, "store.tx_index", message, expected, None, index, tx_id)
        return None  # not reached: fewer entries than transactions means one is missing


def _position_bytes(position: int) -> bytes:
    """`<height 8><index 4>`, as the `t:` index stores a position."""
    index = position & TX_INDEX_MASK
    return height_key(position >> TX_INDEX_BITS) + index.to_bytes(TX_INDEX_BYTES, "big")


def _position_height(value: bytes | None) -> int:
    if value is None or len(value) != 8 + TX_INDEX_BYTES:
        return -1
    return int.from_bytes(value[:8], "big")


def _unpack(data: bytes) -> Any:
    """A stored record's msgpack, or None when it does not decode."""
    try:
        return msgpack.unpackb(data, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None


def _all_bytes(items: list[Any]) -> bool:
    return all(isinstance(item, bytes) for item in items)


def audit_data_dir(
    data_dir: Path,
    genesis: Genesis,
    auditor: ChainAuditor,
    *,
    on_total: TotalListener | None = None,
    on_progress: ProgressListener | None = None,
    snapshot_parent: Path | None = None,
) -> AuditResult:
    """Audit the chain in a node's data directory, which is left exactly as it was.

    Raises:
        AuditSourceError: not a readable data directory, or another chain's.
    """
    with data_snapshot(data_dir, snapshot_parent) as snapshot:
        store = _open_snapshot(snapshot.path, data_dir, genesis)
        try:
            chain = StoredChain(store)
            if on_total is not None:
                on_total(chain.height + 1)
            result = auditor.run(chain.blocks(), on_progress)
            if result.clean:
                try:
                    divergence = chain.final_divergence(result)
                except plyvel.Error as exc:
                    message = f"LevelDB cannot read the indexes or the state ({exc})"
                    divergence = Divergence(chain.height, "store.record", message)
                if divergence is not None:
                    result = dataclasses.replace(result, divergence=divergence)
            return result
        finally:
            store.close()


def _open_snapshot(path: Path, data_dir: Path, genesis: Genesis) -> ChainStore:
    """Open a snapshot as a node opens its data directory (migrated, recovered), never
    creating a chain.

    Raises:
        AuditSourceError: no chain, another chain's, or records too damaged to open.
    """
    try:
        return ChainStore.open(path, genesis, create=False)
    except StorageError as exc:
        raise AuditSourceError(str(exc).replace(str(path), str(data_dir))) from None
    except Exception as exc:  # a damaged record met while migrating or recovering
        raise AuditSourceError(f"{data_dir}: the stores cannot be opened ({exc})") from None
