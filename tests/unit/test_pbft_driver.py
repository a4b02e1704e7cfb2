"""The PBFT driver's ordering promises, on its real commit thread: it does not wait for
vote writes, yet no message leaves before the votes persisted ahead of it are written,
and messages leave in the order the replica produced them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consensus.events import Broadcast, PersistVote, Send
from consensus.messages import Commit, Prepare
from node.pbft import ConsensusDriver
from node.runner import Consensus
from node.services import NodeServices, build_services
from tests.helpers import create_testnet

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
def services(tmp_path: Path) -> Iterator[NodeServices]:
    testnet = create_testnet(tmp_path / "net")
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
