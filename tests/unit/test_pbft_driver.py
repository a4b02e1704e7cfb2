"""The PBFT driver's ordering promises, on its real commit thread: it does not wait for
vote writes, yet no message leaves before the votes persisted ahead of it are written,
and messages leave in the order the replica produced them. And a backup's proposal check
reuses what admission verified, even while that admission is still under way."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from consensus.events import Broadcast, PersistVote, Send
from consensus.messages import Commit, Prepare
from node.ledger import ProposalRejected
from node.pbft import ConsensusDriver
from node.runner import Consensus
from node.services import NodeServices, build_services
from node.transaction import Transaction
from tests.helpers import LocalTestnet, create_testnet

WRITE_WAIT_S = 5.0


class SlowLog:
    """Stands in for the consensus log: each write waits until the test lets it finish."""

    def __init__(self, order: list[Any]) -> None:
        self.order = order
        self.release = threading.Event()

    def persist(self, records: list[Any]) -> None:
        assert self.release.wait(WRITE_WAIT_S), "the test never released the write"
        self.order.extend(f"written {vote.kind} {vote.height}" for vote, _ in records)

    def forget_prepared(self, height: int) -> None:
        pass


@pytest.fixture
def testnet(tmp_path: Path) -> LocalTestnet:
    return create_testnet(tmp_path / "net")


@pytest.fixture
def services(testnet: LocalTestnet) -> Iterator[NodeServices]:
    built = build_services(testnet.config())
    yield built
    built.close()


def driver_recording(services: NodeServices, order: list[Any]) -> tuple[ConsensusDriver, SlowLog]:
    driver = Consensus.build(services).driver
    log = SlowLog(order)
    driver.log = log  # type: ignore[assignment]
    driver.transport.broadcast = lambda wire: order.append(f"sent {wire['type']} {wire['height']}")  # type: ignore[method-assign]
    driver.transport.send = lambda peer, wire: order.append(  # type: ignore[method-assign]
        f"sent {wire['type']} {wire['height']} to {peer}"
    )
    return driver, log


def prepare(height: int) -> Prepare:
    return Prepare(0, height, bytes(32), 0, bytes(64))


async def test_a_message_leaves_only_after_the_votes_before_it_are_written(
    services: NodeServices,
) -> None:
    order: list[Any] = []
    driver, log = driver_recording(services, order)
    await driver._carry_out([PersistVote(0, 1, "prepare", bytes(32)), Broadcast(prepare(1))])
    # The driver went on while the vote is being written; the message waits for it.
    assert order == []
    commit = Commit(0, 1, bytes(32), bytes(64), 0, bytes(64))
    await driver._carry_out([Send(2, prepare(2)), Broadcast(commit)])
    assert order == []  # behind the first message, in order
    log.release.set()
    await driver._drain()
    assert order == ["written prepare 1", "sent prepare 1", "sent prepare 2 to 2", "sent commit 1"]
    # Nothing being written: a message leaves at once.
    await driver._carry_out([Broadcast(prepare(3))])
    assert order[-1] == "sent prepare 3"


def test_a_drain_as_the_last_send_finishes_lets_the_event_loop_run(
    services: NodeServices,
) -> None:
    """The livelock behind a node that went silent after a view change: the drain before
    entering a view found the outbox's last send done but not yet cleared (its done
    callback runs on the next loop turn) and awaited it again and again, never giving
    that turn. A drain waiting on the same write as the send, and released with it, is
    that interleaving. It runs on a loop of its own thread: a spinning loop cannot time
    itself out."""
    order: list[Any] = []
    drained = threading.Event()

    async def scenario() -> None:
        driver, log = driver_recording(services, order)
        await driver._carry_out([PersistVote(0, 1, "view", bytes(32)), Broadcast(prepare(1))])
        drain = asyncio.ensure_future(driver._drain())
        await asyncio.sleep(0)  # the drain waits on the write, after the send did
        log.release.set()
        await drain
        drained.set()

    runner = threading.Thread(target=asyncio.run, args=(scenario(),), daemon=True)
    runner.start()
    assert drained.wait(WRITE_WAIT_S), "the drain spun on a finished send, the loop stalled"
    runner.join(WRITE_WAIT_S)
    assert order == ["written view 1", "sent prepare 1"]


class GatedVerifier:
    """Wraps the node's real verifier: holds every batch until the test opens the gate,
    and records how many signatures proposal checks asked it for."""

    def __init__(self, services: NodeServices) -> None:
        self.real = services.verifier
        self.gate = asyncio.Event()
        self.proposal_checks: list[int] = []
        real_map_chunks = self.real.map_chunks
        real_verify_many = self.real.verify_many

        async def map_chunks(function: Any, items: Sequence[Any], *args: Any) -> list[Any]:
            await self.gate.wait()
            return await real_map_chunks(function, items, *args)

        async def verify_many(checks: Sequence[Any]) -> list[bool]:
            self.proposal_checks.append(len(checks))
            return await real_verify_many(checks)

        self.real.map_chunks = map_chunks  # type: ignore[method-assign]
        self.real.verify_many = verify_many  # type: ignore[method-assign]


async def test_a_proposal_check_takes_transactions_still_being_admitted_from_admission(
    services: NodeServices, testnet: LocalTestnet
) -> None:
    """A peer's relayed batch is on the verifier when the proposal holding it arrives: the
    check waits for that admission instead of verifying the same signatures again, and
    verifies only the transaction nobody is admitting."""
    driver = Consensus.build(services).driver
    verifier = GatedVerifier(services)
    relayed = [testnet.add_member() for _ in range(3)]
    stranger = testnet.add_member()
    admitting = asyncio.create_task(
        services.admission.admit_many([tx.envelope for tx in relayed], announce=False)
    )
    await asyncio.sleep(0)  # the admission is under way, held at the verifier
    checking = asyncio.create_task(
        driver._decode_proposed([tx.envelope for tx in [*relayed, stranger]])
    )
    await asyncio.sleep(0.05)
    assert not checking.done() and verifier.proposal_checks == []

    verifier.gate.set()
    admitted = await admitting
    decoded: list[Transaction] = await checking

    assert all(isinstance(tx, Transaction) for tx in admitted)
    assert [tx.tx_id for tx in decoded] == [tx.tx_id for tx in [*relayed, stranger]]
    assert all(mine is theirs for mine, theirs in zip(decoded, admitted, strict=False))
    assert verifier.proposal_checks == [1], "only the stranger was verified by the check"


async def test_a_proposal_check_still_refuses_a_forged_signature(
    services: NodeServices, testnet: LocalTestnet
) -> None:
    driver = Consensus.build(services).driver
    honest = testnet.add_member()
    forged = testnet.add_member(nonce=7)
    forged_envelope = forged.envelope.replace(forged.signature, bytes(64))

    with pytest.raises(ProposalRejected) as rejected:
        await driver._decode_proposed([honest.envelope, forged_envelope])

    assert rejected.value.code == "proposal.bad_tx_signature"
