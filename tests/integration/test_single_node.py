"""One validator as a real process: submit, commit, query, prove, stream, survive kill -9,
show its threads' stacks on SIGUSR1."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

from node.client import Client, ClientError
from node.crypto import SigningKey, load_key_file
from node.genesis import load_genesis
from node.localnet import LocalNetwork
from node.proof import verify_proof_bundle


def _admin(network: LocalNetwork, org: str = "notary") -> SigningKey:
    return load_key_file(network.testnet.org(org).admin_key)


def test_submit_commit_query_and_offline_proof(network: LocalNetwork) -> None:
    admin = _admin(network)
    with Client(network.url()) as client:
        answer = client.submit(
            "membership",
            "add_member",
            {"public_key": os.urandom(32), "name": "clerk"},
            admin,
            wait="commit",
        )
        assert answer["status"] == "committed"
        assert answer["receipt"]["ok"] is True
        tx_id = answer["tx_id"]
        looked_up = client.transaction(tx_id)
        assert looked_up["status"] == "committed"
        assert looked_up["height"] == answer["height"]
        bundle = client.transaction(tx_id, proof=True)
    # The bundle is checked offline, with nothing but the genesis file.
    bundle = json.loads(json.dumps(bundle))
    report = verify_proof_bundle(bundle, load_genesis(network.testnet.genesis_path))
    assert report.ok, report.to_json()


def test_failed_contract_call_is_committed_with_a_failed_receipt(network: LocalNetwork) -> None:
    admin = _admin(network)
    new_key = os.urandom(32)
    args = {"public_key": new_key, "name": "clerk"}
    with Client(network.url()) as client:
        first = client.submit("membership", "add_member", args, admin, wait="commit")
        second = client.submit("membership", "add_member", args, admin, wait="commit")
    assert first["receipt"]["ok"] is True
    assert second["status"] == "committed"
    assert second["receipt"]["ok"] is False
    assert second["receipt"]["error"] == "membership.exists"


def test_event_stream_replays_after_reconnect(network: LocalNetwork) -> None:
    admin = _admin(network)
    with Client(network.url()) as client:
        committed = [
            client.submit(
                "membership",
                "add_member",
                {"public_key": os.urandom(32), "name": f"m{i}"},
                admin,
                wait="commit",
            )
            for i in range(3)
        ]
        heights = sorted({answer["height"] for answer in committed})
        seen_tx_ids: set[str] = set()
        seen_heights: list[int] = []
        for event in client.events(from_height=1):
            if event["event"] == "block":
                seen_heights.append(event["data"]["height"])
            else:
                seen_tx_ids.add(event["data"]["tx_id"])
            if seen_heights and seen_heights[-1] >= heights[-1] and len(seen_tx_ids) >= 3:
                break
        assert seen_heights == list(range(1, heights[-1] + 1))
        assert {answer["tx_id"] for answer in committed} <= seen_tx_ids
        # A new subscription from the next height sees only what came after.
        later = client.submit(
            "membership",
            "add_member",
            {"public_key": os.urandom(32), "name": "late"},
            admin,
            wait="commit",
        )
        for event in client.events(from_height=heights[-1] + 1):
            assert event["event"] in {"block", "tx"}
            if event["event"] == "block":
                assert event["data"]["height"] == later["height"]
                break


def test_kill_9_keeps_every_committed_transaction(network: LocalNetwork) -> None:
    admin = _admin(network)
    acknowledged: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with Client(network.url()) as client:
            while not stop.is_set():
                try:
                    answer = client.submit(
                        "membership",
                        "add_member",
                        {"public_key": os.urandom(32), "name": "load"},
                        admin,
                        wait="commit",
                    )
                except ClientError:
                    return  # the node died under us: anything unacknowledged may be lost
                acknowledged.append(answer["tx_id"])

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(2.0)
    _, before = network.get_json("/v1/status")
    network.kill(0)
    stop.set()
    for worker in workers:
        worker.join(15)
    assert len(acknowledged) > 10
    network.start(0)
    with Client(network.url()) as client:
        status = client.status()
        assert status["height"] >= before["height"]
        for tx_id in acknowledged:
            assert client.transaction(tx_id)["status"] == "committed"
        # The chain continues after the restart, each block on the one before. (A block
        # prepared before the kill may commit first, from the consensus log: a proposal
        # the node voted for is not lost either.)
        answer = client.submit(
            "membership",
            "add_member",
            {"public_key": os.urandom(32), "name": "after"},
            admin,
            wait="commit",
        )
        assert answer["height"] > status["height"]
        for height in range(status["height"] + 1, answer["height"] + 1):
            block, parent = client.block(height), client.block(height - 1)
            assert block["header"]["prev_hash"] == parent["hash"]


def test_restart_serves_exactly_what_it_served_before(network: LocalNetwork) -> None:
    admin = _admin(network)
    with Client(network.url()) as client:
        for i in range(5):
            client.submit(
                "membership",
                "add_member",
                {"public_key": os.urandom(32), "name": f"r{i}"},
                admin,
                wait="commit",
            )
        height = client.status()["height"]
        before = [client.block(h, full=True) for h in range(height + 1)]
    network.stop(0)
    network.start(0)
    with Client(network.url()) as client:
        after = [client.block(h, full=True) for h in range(height + 1)]
    assert after == before


def test_data_directory_of_another_chain_is_refused(tmp_path: Path) -> None:
    first = LocalNetwork.generate(tmp_path / "a")
    second = LocalNetwork.generate(tmp_path / "b")
    first.start_all()
    first.stop_all()
    # Point the second network's node at the first network's data directory.
    other_data = first.testnet.nodes[0].home / "data"
    config_path = second.testnet.nodes[0].home / "config.toml"
    text = config_path.read_text().replace('data_dir = "data"', f'data_dir = "{other_data}"')
    config_path.write_text(text)
    node = second.start(0, wait=False)
    assert node.process.wait(30) == 2
    assert "another chain" in second.log_tail(0)


def _children(pid: int) -> set[int]:
    """The processes whose parent is `pid`, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def _alive(pids: set[int]) -> set[int]:
    """Those of `pids` still running (an exited child nobody reaped yet is a zombie, Z)."""
    running = set()
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            running.add(pid)
    return running


def test_verification_workers_exit_when_the_node_is_killed(network: LocalNetwork) -> None:
    """A node verifies in worker processes; a `kill -9` of the node must not leave them
    running (nothing in the node gets to shut them down)."""
    with Client(network.url()) as client:
        client.submit(
            "membership",
            "add_member",
            {"public_key": os.urandom(32), "name": "w"},
            _admin(network),
            wait="commit",
        )
    workers = _children(network.processes[0].pid)
    assert workers, "the node started no verification workers"
    network.kill(0)
    deadline = time.monotonic() + 10
    while _alive(workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(workers), f"workers outlived the node: {_alive(workers)}"


def _main_thread_dumped(log_text: str) -> bool:
    # The main thread is the oldest, so the dump's last; its outermost frame ends it.
    return "node/runner.py" in log_text and "in _run_module_as_main" in log_text


def test_sigusr1_writes_every_thread_stack_to_the_log_and_the_node_goes_on(
    network: LocalNetwork,
) -> None:
    """What an operator does with a node that went silent: `kill -USR1` shows where each
    thread is, in the node's own log. The node keeps serving, and its loop watchdog is
    exported (no stall so far)."""
    log_path = network.testnet.nodes[0].log_path
    os.kill(network.processes[0].pid, signal.SIGUSR1)
    # The dump is written thread by thread: wait for the whole of it.
    deadline = time.monotonic() + 10
    while not _main_thread_dumped(log_path.read_text(errors="replace")):
        assert time.monotonic() < deadline, network.log_tail(0)
        time.sleep(0.1)
    assert "\nThread 0x" in log_path.read_text(errors="replace")  # not only the signalled one
    assert network.get_json("/v1/health")[0] == 200
    with urllib.request.urlopen(network.url() + "/metrics", timeout=10) as answer:
        metrics = answer.read().decode()
    assert "chancery_event_loop_stalls_total 0.0" in metrics
