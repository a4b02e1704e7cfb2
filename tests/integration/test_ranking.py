"""`chancery ranking` on a real 4-validator network: import (resumed), close, check."""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import pytest

from node import merkle
from node.cli import main as cli_main
from node.client import Client
from node.crypto import load_key_file
from node.localnet import LocalNetwork
from node.ranking_cli import chunks, order_digest, read_orders
from node.supervisor import wait_until_healthy

VALIDATORS: Final = 4
CONNECT_TIMEOUT_S: Final = 30.0
COMMIT_TIMEOUT_MS: Final = 60_000
ORDERS: Final = 70_000  # more than one close step (65,536)
WINNERS: Final = 100
WINDOW_START_MS: Final = 1_762_790_400_000  # 2025-11-10T16:00:00Z
WINDOW_END_MS: Final = WINDOW_START_MS + 3_600_000
SALT: Final = b"merchant salt 2025"


@dataclass
class RankingNet:
    net: LocalNetwork
    chain_id: str
    directory: Path

    def cli(self, *argv: str, org: str = "enterprise-a") -> tuple[int, str, str]:
        common = [
            "--key",
            str(self.net.testnet.org(org).member_key),
            "--url",
            self.net.url(0),
            "--genesis",
            str(self.net.testnet.genesis_path),
            "--timeout-ms",
            str(COMMIT_TIMEOUT_MS),
        ]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(["ranking", *argv, *common])
        return code, out.getvalue(), err.getvalue()

    def cli_ok(self, *argv: str, org: str = "enterprise-a") -> str:
        code, out, err = self.cli(*argv, org=org)
        assert code == 0, (argv, out, err)
        return out


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RankingNet]:
    directory = tmp_path_factory.mktemp("ranking")
    net = LocalNetwork.generate(directory / "net", validators=VALIDATORS)
    try:
        for index in range(VALIDATORS):
            net.start(index, wait=False)
        wait_until_healthy(list(net.processes.values()))
        chain_id = json.loads(net.testnet.genesis_path.read_bytes())["chain_id"]
        key = load_key_file(net.testnet.org("notary").member_key)
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        for index in range(VALIDATORS):
            with Client(net.url(index), chain_id=chain_id, read_key=key) as client:
                while not all(v["connected"] for v in client.status()["validators"]):
                    assert time.monotonic() < deadline, f"node {index} is not connected"
                    time.sleep(0.2)
        yield RankingNet(net, chain_id, directory)
    finally:
        net.stop_all()


def _paid_at_ms(n: int) -> int:
    """Times that tie often, and some orders outside the window on either side."""
    return WINDOW_START_MS - 5_000 + (n * 7919) % (3_600_000 + 10_000)


def _write_orders(path: Path) -> list[tuple[bytes, int]]:
    """The CSV (a header, every tenth time as ISO-8601) and the (digest, time) pairs."""
    pairs = []
    with path.open("w") as stream:
        stream.write("order_no,paid_at\n")
        for n in range(ORDERS):
            paid_at = _paid_at_ms(n)
            number = f"TM-{n:08d}"
            if n % 10 == 0:
                moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=paid_at)
                stream.write(f"{number},{moment.isoformat(timespec='milliseconds')}\n")
            else:
                stream.write(f"{number},{paid_at}\n")
            pairs.append((order_digest(SALT, number), paid_at))
    return pairs


def test_import_close_and_check_through_the_cli(network: RankingNet) -> None:
    salt_file = network.directory / "salt"
    salt_file.write_bytes(SALT + b"\n")
    orders_file = network.directory / "orders.csv"
    pairs = _write_orders(orders_file)
    network.cli_ok(
        "create",
        "double11",
        "--title",
        "first 100 paid orders",
        "--winners",
        str(WINNERS),
        "--window-start",
        datetime.fromtimestamp(WINDOW_START_MS / 1000, UTC).isoformat(),
        "--window-end",
        str(WINDOW_END_MS),
    )

    # An earlier run that stopped after its first chunk.
    first = next(chunks(read_orders(orders_file), SALT, 0, 10_000))
    key = load_key_file(network.net.testnet.org("enterprise-a").member_key)
    with Client(network.net.url(1), chain_id=network.chain_id, read_key=key) as client:
        answer = client.submit(
            "ranking",
            "add_orders",
            {"campaign_id": "double11", "orders": first},
            key,
            timeout_ms=COMMIT_TIMEOUT_MS,
        )
    assert answer["receipt"]["ok"], answer

    summary = json.loads(
        network.cli_ok("import", "double11", str(orders_file), "--salt-file", str(salt_file))
    )
    assert summary["resumed_after"] == 10_000
    assert summary["order_count"] == ORDERS
    in_window = sorted(
        (paid_at, order) for order, paid_at in pairs if WINDOW_START_MS <= paid_at < WINDOW_END_MS
    )
    assert summary["window_count"] == len(in_window)

    code, out, err = network.cli(
        "import", "double11", str(orders_file), "--salt-file", str(salt_file)
    )
    assert code == 0 and json.loads(out)["imported"] == 0, (out, err)

    closed = json.loads(network.cli_ok("close", "double11"))
    ranked = [order for _, order in in_window]
    assert closed["status"] == "closed"
    assert closed["ranking_root"] == merkle.merkle_root(ranked).hex()

    positions = {order: index for index, order in enumerate(ranked)}
    winner = next(n for n in range(ORDERS) if positions.get(pairs[n][0], ORDERS) < WINNERS)
    loser = next(n for n in range(ORDERS) if positions.get(pairs[n][0], -1) >= WINNERS)
    outside = next(n for n in range(ORDERS) if pairs[n][0] not in positions)
    for n, won in ((winner, True), (loser, False)):
        report = json.loads(
            network.cli_ok(
                "check",
                "double11",
                "--order",
                f"TM-{n:08d}",
                "--salt-file",
                str(salt_file),
                org="enterprise-b",
            )
        )
        assert report["verified"] is True
        assert report["won"] is won
        assert report["rank"] == positions[pairs[n][0]] + 1
    code, out, _ = network.cli(
        "check", "double11", "--order", f"TM-{outside:08d}", "--salt-file", str(salt_file)
    )
    assert code == 1
    assert json.loads(out)["in_window"] is False

    late = network.cli("import", "double11", str(orders_file), "--salt-file", str(salt_file))
    assert late[0] == 0  # nothing left to add; the chain already has every row


def test_only_the_merchant_closes(network: RankingNet) -> None:
    network.cli_ok(
        "create",
        "other",
        "--title",
        "t",
        "--winners",
        "1",
        "--window-start",
        "0",
        "--window-end",
        "10",
    )
    code, _, err = network.cli("close", "other", org="enterprise-b")
    assert code == 1
    assert "ranking.not_merchant" in err


@pytest.mark.slow
def test_scale_one_million_orders_import_close_and_check(network: RankingNet) -> None:
    """The issue's scale run (docs/ranking.md): prints import, close and check times.

    `RANKING_SCALE_ORDERS` shrinks it for a quick try; the default is one million."""
    total = int(os.environ.get("RANKING_SCALE_ORDERS", "1000000"))
    salt_file = network.directory / "scale-salt"
    salt_file.write_bytes(SALT)
    orders_file = network.directory / "scale.csv"
    with orders_file.open("w") as stream:
        for n in range(total):
            stream.write(f"SC-{n:09d},{WINDOW_START_MS + (n * 7919) % 3_600_000}\n")
    network.cli_ok(
        "create",
        "scale",
        "--title",
        "scale",
        "--winners",
        str(WINNERS),
        "--window-start",
        str(WINDOW_START_MS),
        "--window-end",
        str(WINDOW_END_MS),
    )
    timings = {}
    for step, argv in (
        ("import", ("import", "scale", str(orders_file), "--salt-file", str(salt_file))),
        ("close", ("close", "scale")),
        ("check", ("check", "scale", "--order", "SC-000004242", "--salt-file", str(salt_file))),
    ):
        began = time.perf_counter()
        out = network.cli_ok(*argv)
        timings[step] = round(time.perf_counter() - began, 1)
    assert json.loads(out)["verified"] is True
    print(f"{total} orders on {VALIDATORS} validators: {timings} s")
