"""The `chancery` console script as a user runs it: real subprocesses against a real node."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from node.crypto import load_key_file
from node.genesis import load_genesis
from node.localnet import LocalNetwork
from node.proof import verify_proof_bundle

CHANCERY: Final = Path(sys.executable).with_name("chancery")
COMMAND_TIMEOUT_S: Final = 60.0


def chancery(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run the installed console script; never hangs past COMMAND_TIMEOUT_S."""
    assert CHANCERY.exists(), f"console script missing: {CHANCERY}"
    env = {key: value for key, value in os.environ.items() if key != "CHANCERY_URL"}
    return subprocess.run(
        [str(CHANCERY), *argv],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return json.loads(result.stdout)


def failed(result: subprocess.CompletedProcess[str]) -> str:
    """The error line of a failed command (asserts it failed with one `error:` message)."""
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    return result.stderr


# --- client commands ---------------------------------------------------------------------


def test_status_prints_the_chain(network: LocalNetwork) -> None:
    status = ok_json(chancery("status", "--url", network.url()))
    assert status["chain_id"] == network.testnet.chain_id
    assert status["genesis_hash"] == network.testnet.genesis_hash.hex()
    assert status["node"]["index"] == 0
    assert isinstance(status["height"], int)


def test_keygen_send_show_prove_and_blocks(network: LocalNetwork, tmp_path: Path) -> None:
    url = network.url()
    key_path = tmp_path / "clerk.key"
    keygen = chancery("keygen", "--out", str(key_path))
    assert keygen.returncode == 0, keygen.stderr
    public_hex = keygen.stdout.strip()
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert load_key_file(key_path).public_key.hex() == public_hex

    admin_key = network.testnet.org("notary").admin_key
    args = json.dumps({"public_key": public_hex, "name": "x"})
    sent = ok_json(
        chancery(
            "tx",
            "send",
            "--key",
            str(admin_key),
            "membership",
            "add_member",
            "--args",
            args,
            "--wait",
            "--url",
            url,
        )
    )
    assert sent["status"] == "committed"
    assert sent["receipt"]["ok"] is True
    tx_id = sent["tx_id"]
    assert len(tx_id) == 64
    height = sent["height"]

    # The new key is now a member of the notary's organisation.
    member = network.get_json(f"/v1/contracts/membership/members/{public_hex}")
    assert member[0] == 200 and member[1]["org"] == "notary" and member[1]["name"] == "x"

    shown = ok_json(chancery("tx", "show", tx_id, "--url", url))
    assert shown["status"] == "committed"
    assert shown["height"] == height
    assert shown["receipt"] == sent["receipt"]

    bundle = ok_json(chancery("tx", "show", tx_id, "--proof", "--url", url))
    report = verify_proof_bundle(bundle, load_genesis(network.testnet.genesis_path))
    assert report.ok, report.to_json()
    # The bundle really is about this transaction: tampering with it is caught.
    tampered = json.loads(json.dumps(bundle).replace(tx_id, "00" * 32))
    assert tampered != bundle
    assert not verify_proof_bundle(tampered, load_genesis(network.testnet.genesis_path)).ok

    latest = ok_json(chancery("block", "show", "latest", "--url", url))
    assert latest["header"]["height"] == height
    assert tx_id in latest["tx_ids"]
    assert set(latest) == {"hash", "header", "tx_ids", "commit"}

    first = ok_json(chancery("block", "show", "1", "--full", "--url", url))
    assert first["header"]["height"] == 1
    assert len(first["envelopes"]) == len(first["tx_ids"]) == len(first["receipts"]) >= 1
    if height == 1:
        assert first["hash"] == latest["hash"]


def test_cli_reports_api_refusals(network: LocalNetwork) -> None:
    url = network.url()
    missing = failed(chancery("tx", "show", "ab" * 32, "--url", url))
    assert "not_found" in missing
    member_key = network.testnet.org("notary").member_key
    args = json.dumps({"public_key": "cd" * 32, "name": "y"})
    forbidden = failed(
        chancery(
            "tx",
            "send",
            "--key",
            str(member_key),
            "membership",
            "add_member",
            "--args",
            args,
            "--url",
            url,
        )
    )
    assert "tx.forbidden" in forbidden
    no_block = failed(chancery("block", "show", "999999", "--url", url))
    assert "not_found" in no_block


# --- chancery start: refusals that name what is wrong ------------------------------------


@pytest.fixture
def open_key(network: LocalNetwork) -> Iterator[Path]:
    """The node key made readable by group and others, restored afterwards."""
    key_path = network.testnet.nodes[0].home / "node.key"
    key_path.chmod(0o644)
    try:
        yield key_path
    finally:
        key_path.chmod(0o600)


def test_start_refuses_a_key_readable_by_others(network: LocalNetwork, open_key: Path) -> None:
    home = network.testnet.nodes[0].home
    message = failed(chancery("start", "--home", str(home)))
    assert "644" in message
    assert str(open_key) in message
    # The running node was not disturbed.
    assert network.get_json("/v1/health") == (200, {"ok": True})


def test_start_twice_says_the_port_is_in_use(network: LocalNetwork) -> None:
    home = network.testnet.nodes[0].home
    message = failed(chancery("start", "--home", str(home)))
    port = network.testnet.nodes[0].api_port
    assert "in use" in message
    assert str(port) in message


def test_start_twice_is_refused_without_harm(network: LocalNetwork) -> None:
    # Whatever the message, a second process must not start, and the first keeps serving.
    home = network.testnet.nodes[0].home
    failed(chancery("start", "--home", str(home)))
    assert network.processes[0].exit_code() is None
    assert network.get_json("/v1/health") == (200, {"ok": True})


def test_start_on_an_occupied_api_port_says_so(network: LocalNetwork) -> None:
    network.stop(0)
    node = network.testnet.nodes[0]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        # The stopped node's connections may leave the port in TIME_WAIT.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", node.api_port))
        squatter.listen()
        message = failed(chancery("start", "--home", str(node.home)))
    assert "in use" in message
    assert f"{node.api_port}" in message


def test_start_names_an_unknown_config_key(network: LocalNetwork, tmp_path: Path) -> None:
    home = network.testnet.nodes[0].home
    other = tmp_path / "home"
    other.mkdir()
    config = (home / "config.toml").read_text()
    assert "\n[api]\n" in config
    (other / "config.toml").write_text(
        config.replace("\n[api]\n", "\n[api]\nbody_bytes_maximum = 5\n")
    )
    message = failed(chancery("start", "--home", str(other)))
    assert "unknown key [api].body_bytes_maximum" in message
    assert str(other / "config.toml") in message


def test_start_names_the_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-home"
    message = failed(chancery("start", "--home", str(missing)))
    assert str(missing / "config.toml") in message
    assert "not found" in message


def test_python_dash_m_node_is_the_same_cli(network: LocalNetwork) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "node", "status", "--url", network.url()],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    assert ok_json(result)["chain_id"] == network.testnet.chain_id
