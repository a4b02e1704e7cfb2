"""`chancery audit` on a chain the real 4-node network produced under load: clean from one
node's export stream, from another's live data directory and from a stopped node's copied
data directory; a byte flipped in a stored block of a copy is caught at that height."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgpack
import plyvel
import pytest

from node.client import Client, ClientError
from node.crypto import SigningKey, load_key_file
from node.localnet import LocalNetwork
from node.storage import HISTORY_DIR, block_key
from node.transaction import sign_transaction

CHANCERY: Final = Path(sys.executable).with_name("chancery")
VALIDATORS: Final = 4
LOAD_S: Final = 4.0
CLIENTS_PER_NODE: Final = 1
COMMIT_WAIT_MS: Final = 10_000
WAIT_S: Final = 30.0
POLL_S: Final = 0.1
AUDIT_TIMEOUT_S: Final = 60.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def wait_until(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s:g} s: {what}")
        time.sleep(POLL_S)


def statuses(net: LocalNetwork) -> list[dict[str, Any]]:
    return [net.get_json("/v1/status", index)[1] for index in range(VALIDATORS)]


@pytest.fixture
def loaded_network(tmp_path: Path) -> Iterator[LocalNetwork]:
    """Four validators that committed a few seconds of load from clients on every node,
    then agreed on one tip with empty mempools."""
    net = LocalNetwork.generate(tmp_path / "net", validators=VALIDATORS)
    net.start_all()
    try:
        wait_until(
            lambda: all(
                all(v["connected"] for v in status["validators"]) for status in statuses(net)
            ),
            WAIT_S,
            "the validators did not connect",
        )
        committed = put_load(net)
        assert committed >= 20, f"the load committed only {committed} transactions"
        wait_until(
            lambda: (
                len({(s["height"], s["last_block_hash"]) for s in statuses(net)}) == 1
                and all(s["mempool"]["size"] == 0 for s in statuses(net))
            ),
            WAIT_S,
            "the nodes did not agree on one tip",
        )
        yield net
    finally:
        net.stop_all()


def put_load(net: LocalNetwork) -> int:
    """Clients on every node submit add_member calls with wait=commit for LOAD_S seconds;
    returns how many committed."""
    keys = [load_key_file(org.admin_key) for org in net.testnet.orgs]
    chain_id = net.testnet.chain_id
    stop = threading.Event()
    committed: list[int] = []
    errors: list[BaseException] = []

    def client(index: int, key: SigningKey) -> None:
        try:
            with Client(net.url(index), timeout_s=COMMIT_WAIT_MS / 1000 + 5) as api:
                serial = 0
                while not stop.is_set():
                    serial += 1
                    tx = sign_transaction(
                        key,
                        chain_id,
                        "membership",
                        "add_member",
                        {"public_key": os.urandom(32), "name": f"load {index}-{serial}"},
                        int.from_bytes(os.urandom(7), "big"),
                        now_ms(),
                    )
                    try:
                        api.submit_envelope(tx.envelope, wait="commit", timeout_ms=COMMIT_WAIT_MS)
                        committed.append(1)
                    except ClientError:
                        time.sleep(0.2)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=client, args=(index, keys[index % len(keys)]))
        for index in range(VALIDATORS)
        for _ in range(CLIENTS_PER_NODE)
    ]
    for thread in threads:
        thread.start()
    time.sleep(LOAD_S)
    stop.set()
    for thread in threads:
        thread.join(COMMIT_WAIT_MS / 1000 + 10)
    assert not errors, errors
    return len(committed)


def audit(net: LocalNetwork, *source: str) -> tuple[int, dict[str, Any], str]:
    result = subprocess.run(
        [str(CHANCERY), "audit", *source, "--genesis", str(net.testnet.genesis_path), "--json"],
        capture_output=True,
        text=True,
        timeout=AUDIT_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    report = json.loads(result.stdout) if result.stdout else {}
    return result.returncode, report, result.stderr


def data_dir(net: LocalNetwork, index: int) -> Path:
    return net.testnet.nodes[index].home / "data"


@pytest.mark.timeout(120)
def test_a_chain_made_under_load_audits_clean_and_a_flipped_byte_is_caught(
    loaded_network: LocalNetwork, tmp_path: Path, record_property: Any
) -> None:
    net = loaded_network
    height = statuses(net)[0]["height"]

    code, report, err = audit(net, "--from", net.url(0))
    assert code == 0, (report, err)
    assert report["result"] == "clean" and report["height"] >= height
    assert report["transactions"] >= 20
    for name in ("blocks", "transactions", "tx_per_s"):
        print(f"[audit] --from {name} = {report[name]}")  # visible with -s
        record_property(f"audit_from_{name}", report[name])

    code, report, err = audit(net, "--data", str(data_dir(net, 1)))  # node 1 keeps running
    assert code == 0, (report, err)
    assert report["result"] == "clean" and report["height"] >= height

    net.stop(2)
    copy = tmp_path / "node2-data"
    shutil.copytree(data_dir(net, 2), copy)
    code, report, err = audit(net, "--data", str(copy))
    assert code == 0, (report, err)
    assert (report["result"], report["height"]) == ("clean", height)

    flipped = height // 2 + 1
    db = plyvel.DB(str(copy / HISTORY_DIR))
    try:
        key = block_key(flipped)
        record = msgpack.unpackb(db.get(key), raw=False)
        header = bytearray(record["header"])
        header[len(header) // 2] ^= 0x01
        record["header"] = bytes(header)
        db.put(key, msgpack.packb(record, use_bin_type=True))
    finally:
        db.close()
    code, report, err = audit(net, "--data", str(copy))
    assert code == 1, (report, err)
    assert report["result"] == "divergent"
    assert report["divergence"]["height"] == flipped, report
    assert report["height"] == flipped - 1
