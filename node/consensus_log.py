"""The replica's durable memory: what it voted, what it prepared, which view it is in.

Written before the vote leaves the node (synced LevelDB puts), read back at start into a
`RecoveredState`, so a replica restarted after `kill -9` never contradicts itself.

Records (under the store's `c:` prefix):
- `view` -> msgpack `[view, in_view_change]`
- `v:<height 8B><view 8B><kind>` -> block hash (kind `prepare` or `commit`)
- `p:<height 8B>` -> `{"certificate": wire map, "txs": [envelope, ...]}`: the latest prepared
  certificate at that height and the block's transactions (deleted once it commits)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgpack

from consensus.events import PersistVote
from consensus.messages import (
    MessageFormatError,
    PreparedCertificate,
    certificate_from_wire,
    certificate_to_wire,
)
from consensus.replica import RecoveredState
from node.storage import ChainStore

VIEW_KEY: Final = b"view"
VOTE_PREFIX: Final = b"v:"
PREPARED_PREFIX: Final = b"p:"


def _height(value: int) -> bytes:
    return value.to_bytes(8, "big")


def _record(action: PersistVote, txs: tuple[bytes, ...]) -> tuple[bytes, bytes] | None:
    """The consensus-log record of `action` (a checkpoint writes none)."""
    if action.kind == "view":
        return VIEW_KEY, msgpack.packb([action.view, action.in_view_change])
    if action.kind in ("prepare", "commit"):
        key = VOTE_PREFIX + _height(action.height) + _height(action.view) + action.kind.encode()
        return key, action.block_hash
    if action.kind == "prepared" and action.certificate is not None:
        record = {"certificate": certificate_to_wire(action.certificate), "txs": list(txs)}
        return PREPARED_PREFIX + _height(action.height), msgpack.packb(record, use_bin_type=True)
    return None


class ConsensusLog:
    """Persists `PersistVote` actions and rebuilds the replica's recovered state."""

    def __init__(self, store: ChainStore) -> None:
        self.store = store

    def persist(self, votes: Sequence[tuple[PersistVote, tuple[bytes, ...]]]) -> None:
        """Make `votes` durable in one synced write (blocking), then apply any checkpoint
        among them. Each comes with its block's envelopes (used by a `prepared` record).

        A replica that becomes prepared also votes commit at once: one fsync for both,
        not two, on the path every block waits for.
        """
        records = [record for action, txs in votes if (record := _record(action, txs))]
        if records:
            self.store.put_consensus(records)
        for action, _ in votes:
            if action.kind == "checkpoint":
                self.prune_through(action.height)

    def forget_prepared(self, height: int) -> None:
        """The block at `height` is committed: its prepared record is no longer needed."""
        self.store.delete_consensus([PREPARED_PREFIX + _height(height)])

    def prune_through(self, height: int) -> None:
        """Forget votes and certificates at or below a stable checkpoint."""
        stale = [
            key
            for key, _ in self.store.consensus_records()
            if key[:2] in (VOTE_PREFIX, PREPARED_PREFIX)
            and int.from_bytes(key[2:10], "big") <= height
        ]
        self.store.delete_consensus(stale)

    def recover(self) -> RecoveredState:
        """What the replica persisted, plus the committed tip and its certificate."""
        view, in_view_change = 0, False
        votes: dict[tuple[int, int, str], bytes] = {}
        prepared: dict[int, PreparedCertificate] = {}
        prepared_txs: dict[bytes, tuple[bytes, ...]] = {}
        for key, value in self.store.consensus_records():
            if key == VIEW_KEY:
                view, in_view_change = msgpack.unpackb(value)
            elif key.startswith(VOTE_PREFIX):
                height = int.from_bytes(key[2:10], "big")
                vote_view = int.from_bytes(key[10:18], "big")
                votes[(height, vote_view, key[18:].decode())] = value
            elif key.startswith(PREPARED_PREFIX):
                record = msgpack.unpackb(value, raw=False)
                try:
                    certificate = certificate_from_wire(record["certificate"])
                except MessageFormatError:  # pragma: no cover - we wrote it ourselves
                    continue
                prepared[certificate.height] = certificate
                prepared_txs[certificate.block_hash] = tuple(record["txs"])
        summary = self.store.get_block_summary(self.store.height)
        signatures = summary[3].signatures if summary is not None else ()
        return RecoveredState(
            view=view,
            in_view_change=in_view_change,
            committed_height=self.store.height,
            committed_hash=self.store.last_block_hash,
            committed_signatures=signatures,
            votes=votes,
            prepared=prepared,
            prepared_txs=prepared_txs,
        )
