"""The replica's durable memory survives a restart: votes, view, prepared blocks."""

from __future__ import annotations

from pathlib import Path

from consensus.config import ReplicaConfig
from consensus.events import PersistVote
from consensus.messages import Prepare, PreparedCertificate
from consensus.replica import Replica
from node.consensus_log import ConsensusLog
from node.storage import ChainStore
from tests.unit.conftest import Consortium

BLOCK = bytes(range(32))
PARENT = bytes(32)


def _certificate(height: int, view: int) -> PreparedCertificate:
    prepares = tuple(Prepare(view, height, BLOCK, sender, bytes(64)) for sender in range(3))
    return PreparedCertificate(view, height, BLOCK, PARENT, b"header", prepares)


def test_votes_view_and_prepared_blocks_are_recovered(
    tmp_path: Path, consortium: Consortium
) -> None:
    store = ChainStore.open(tmp_path / "data", consortium.genesis)
    log = ConsensusLog(store)
    log.persist([(PersistVote(3, 0, "view", in_view_change=True), ())])
    log.persist([(PersistVote(2, 1, "prepare", BLOCK), ())])
    # A replica that becomes prepared votes commit at once: both in one synced write.
    log.persist(
        [
            (PersistVote(2, 1, "prepared", BLOCK, _certificate(1, 2)), (b"tx-a", b"tx-b")),
            (PersistVote(2, 1, "commit", BLOCK), ()),
        ]
    )
    store.close()

    recovered = ConsensusLog(ChainStore.open(tmp_path / "data", consortium.genesis)).recover()
    assert (recovered.view, recovered.in_view_change) == (3, True)
    assert recovered.votes == {(1, 2, "prepare"): BLOCK, (1, 2, "commit"): BLOCK}
    assert recovered.prepared[1].block_hash == BLOCK
    assert recovered.prepared_txs == {BLOCK: (b"tx-a", b"tx-b")}
    # The replica can re-propose the prepared block from what it recovered alone.
    replica = Replica(ReplicaConfig("c", 4, 0), auth=None, recovered=recovered)  # type: ignore[arg-type]
    assert replica.proposals[BLOCK].txs == (b"tx-a", b"tx-b")


def test_committed_heights_forget_their_prepared_record(
    tmp_path: Path, consortium: Consortium
) -> None:
    store = ChainStore.open(tmp_path / "data", consortium.genesis)
    log = ConsensusLog(store)
    log.persist([(PersistVote(0, 1, "prepared", BLOCK, _certificate(1, 0)), (b"tx",))])
    log.forget_prepared(1)
    assert log.recover().prepared == {}
    log.persist([(PersistVote(0, 1, "prepare", BLOCK), ()), (PersistVote(0, 1, "checkpoint"), ())])
    assert log.recover().votes == {}
