"""An event follower keeps its place across a kill -9 and restart of the node it follows.

`Client.events(from_height=1)` runs in a thread while the node is killed (no shutdown code
runs), restarted, and given more transactions. The follower must deliver every block height
exactly once and in order, and every committed transaction's event exactly once, matching
the chain the node serves afterwards. Every wait is bounded: a stuck follower fails the
test instead of hanging it.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Final

import pytest

from node import client as client_module
from node.client import Client, ClientError
from node.crypto import SigningKey, load_key_file
from node.localnet import LocalNetwork
from node.transaction import Transaction, sign_transaction

TXS_BEFORE_KILL: Final = 3
TXS_AFTER_RESTART: Final = 4
FOLLOW_TIMEOUT_S: Final = 30.0
DOWN_TIME_S: Final = 1.0


def reconnect_budget_s() -> float:
    """How long `Client.events` keeps retrying an unreachable node before giving up."""
    return sum(
        min(
            client_module.EVENTS_RECONNECT_DELAY_S_MIN * 2**attempt,
            client_module.EVENTS_RECONNECT_DELAY_S_MAX,
        )
        for attempt in range(client_module.EVENTS_RECONNECT_ATTEMPTS_MAX)
    )


def presign(key: SigningKey, chain_id: str, count: int, label: str) -> list[Transaction]:
    """Signed add_member transactions whose tx_ids are known before they are sent."""
    now_ms = time.time_ns() // 1_000_000
    return [
        sign_transaction(
            key,
            chain_id,
            "membership",
            "add_member",
            {"public_key": os.urandom(32), "name": f"{label}{i}"},
            int.from_bytes(os.urandom(8), "big"),
            now_ms,
        )
        for i in range(count)
    ]


class Follower(threading.Thread):
    """Reads `events(from_height=1)` until every expected tx event has arrived."""

    def __init__(self, url: str, expected_tx_ids: set[str]) -> None:
        super().__init__(name="event-follower", daemon=True)
        self.url = url
        self.expected_tx_ids = expected_tx_ids
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            with Client(self.url) as client:
                for event in client.events(from_height=1):
                    with self._lock:
                        self.events.append(event)
                    if self.expected_tx_ids <= self.tx_ids():
                        return
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def tx_ids(self) -> set[str]:
        return {e["data"]["tx_id"] for e in self.snapshot() if e["event"] == "tx"}

    def block_heights(self) -> list[int]:
        return [e["data"]["height"] for e in self.snapshot() if e["event"] == "block"]

    def wait_for_height(self, height: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.block_heights() or self.block_heights()[-1] < height:
            assert self.is_alive(), f"follower ended early: {self.error!r}"
            assert time.monotonic() < deadline, (
                f"follower stuck: saw heights {self.block_heights()}, waiting for {height}"
            )
            time.sleep(0.05)


def commit_all(client: Client, txs: list[Transaction]) -> list[dict[str, Any]]:
    answers = []
    for tx in txs:
        answer = client.submit_envelope(tx.envelope, wait="commit", timeout_ms=10_000)
        assert answer["status"] == "committed" and answer["receipt"]["ok"] is True, answer
        answers.append(answer)
    return answers


@pytest.mark.timeout(120)
def test_follower_sees_every_event_once_across_kill_9(network: LocalNetwork) -> None:
    url = network.url()
    chain_id = network.testnet.chain_id
    admin = load_key_file(network.testnet.org("notary").admin_key)
    before = presign(admin, chain_id, TXS_BEFORE_KILL, "before")
    after = presign(admin, chain_id, TXS_AFTER_RESTART, "after")
    expected = {tx.tx_id.hex() for tx in before + after}

    with Client(url) as client:
        committed_before = commit_all(client, before)
    height_before_kill = max(answer["height"] for answer in committed_before)

    follower = Follower(url, expected)
    follower.start()
    follower.wait_for_height(height_before_kill, FOLLOW_TIMEOUT_S)

    # One more transaction in flight as the node dies: it may or may not have committed.
    in_flight = presign(admin, chain_id, 1, "in-flight")[0]
    with Client(url) as client:
        client.submit_envelope(in_flight.envelope, wait="none")
    network.kill(0)
    down_since = time.monotonic()
    time.sleep(DOWN_TIME_S)  # the follower meets a dead node and backs off
    assert follower.is_alive(), f"follower gave up while the node was down: {follower.error!r}"
    network.start(0)
    down_for_s = time.monotonic() - down_since
    # The follower's retries must outlast the outage by a wide margin.
    assert down_for_s < reconnect_budget_s() / 4, (down_for_s, reconnect_budget_s())

    with Client(url) as client:
        commit_all(client, after)
        final_height = client.status()["height"]
        chain = [client.block(height) for height in range(1, final_height + 1)]
        try:
            in_flight_committed = client.transaction(in_flight.tx_id.hex())["status"]
        except ClientError as exc:
            assert exc.code == "not_found", exc
            in_flight_committed = "lost"

    follower.join(FOLLOW_TIMEOUT_S)
    assert not follower.is_alive(), (
        f"follower stuck after the restart: saw heights {follower.block_heights()}, "
        f"chain height {final_height}, missing {sorted(expected - follower.tx_ids())}"
    )
    assert follower.error is None, repr(follower.error)
    events = follower.snapshot()

    # Every block height exactly once, in order, and the very blocks the node serves.
    blocks = [e["data"] for e in events if e["event"] == "block"]
    assert [b["height"] for b in blocks] == list(range(1, final_height + 1))
    assert [b["hash"] for b in blocks] == [block["hash"] for block in chain]
    assert [b["tx_ids"] for b in blocks] == [block["tx_ids"] for block in chain]

    # Every committed transaction's event exactly once, after its block's event and
    # before the next block's.
    tx_events = [e["data"] for e in events if e["event"] == "tx"]
    chain_tx_ids = [tx_id for block in chain for tx_id in block["tx_ids"]]
    assert [t["tx_id"] for t in tx_events] == chain_tx_ids
    assert len(set(chain_tx_ids)) == len(chain_tx_ids)
    current_height = 0
    for event in events:
        if event["event"] == "block":
            current_height = event["data"]["height"]
        else:
            assert event["data"]["height"] == current_height, event
    assert expected <= set(chain_tx_ids)
    assert all(t["ok"] is True for t in tx_events if t["tx_id"] in expected)
    if in_flight_committed == "committed":
        assert in_flight.tx_id.hex() in chain_tx_ids
    else:
        assert in_flight.tx_id.hex() not in chain_tx_ids
