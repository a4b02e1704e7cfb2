"""Tests for the `chancery` command line: what it writes, prints and how it fails.

Failures must be one `error: ...` line on stderr with exit code 2 (usage, config, keys)
or 1 (runtime), never a traceback. A small fake node (aiohttp, in a thread) stands in
for the real one where a command needs an answer.
"""

from __future__ import annotations

import asyncio
import json
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from node import bench
from node.cli import main
from node.crypto import DOMAIN_TX, SigningKey, load_key_file, verify, write_key_file
from node.localnet import API_PORT_RANGE, free_port_base
from node.testnet import load_network
from node.transaction import decode_envelope

KEY_HEX = "ab" * 32


def free_port() -> int:
    # Below the ephemeral range, so no outbound connection can take it before it is bound.
    return free_port_base(1, API_PORT_RANGE)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(err: str, *fragments: str) -> None:
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "signer.key"
    write_key_file(path, SigningKey.generate())
    return path


@pytest.fixture
def fake_node() -> Iterator[tuple[str, list[Any]]]:
    """A node answering /v1/status and POST /v1/transactions; records what it received."""
    received: list[Any] = []

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"chain_id": "test-chain", "height": 7})

    async def submit(request: web.Request) -> web.Response:
        received.append((request.content_type, dict(request.query), await request.read()))
        tx = decode_envelope(received[-1][2])
        return web.json_response({"tx_id": tx.tx_id.hex(), "status": "pending"}, status=202)

    async def refuse(request: web.Request) -> web.Response:
        error = {"code": "not_found", "message": "no such block", "details": {"height": 9}}
        return web.json_response({"error": error}, status=404)

    app = web.Application()
    app.add_routes(
        [
            web.get("/v1/status", status),
            web.post("/v1/transactions", submit),
            web.get("/v1/blocks/{height}", refuse),
        ]
    )
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    port = free_port()
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", received
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


# --- keygen ----------------------------------------------------------------------------


def test_keygen_writes_a_private_key_and_prints_its_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "alice.key"
    code, out, err = run(capsys, "keygen", "--out", str(path))
    assert (code, err) == (0, "")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert out.strip() == load_key_file(path).public_key.hex()


def test_keygen_refuses_to_overwrite_an_existing_file(
    key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = key_file.read_bytes()
    code, _, err = run(capsys, "keygen", "--out", str(key_file))
    assert code == 2
    assert_one_error_line(err, "exists already")
    assert key_file.read_bytes() == before


# --- testnet ---------------------------------------------------------------------------


def test_testnet_generates_the_network_and_says_where_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "net"
    code, out, err = run(
        capsys,
        "testnet",
        "--validators",
        "2",
        "--out",
        str(out_dir),
        "--base-api-port",
        "18600",
        "--chain-id",
        "demo",
    )
    assert (code, err) == (0, "")
    network = load_network(out_dir)
    assert network.chain_id == "demo"
    assert [node.api_url for node in network.nodes] == [
        "http://127.0.0.1:18600",
        "http://127.0.0.1:18601",
    ]
    assert "http://127.0.0.1:18601" in out
    assert str(network.org("notary").admin_key) in out
    assert f"chancery up --dir {out_dir}" in out


def test_testnet_refuses_a_directory_with_a_network(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "testnet", "--validators", "1", "--out", str(tmp_path))
    code, _, err = run(capsys, "testnet", "--validators", "1", "--out", str(tmp_path))
    assert code == 2
    assert_one_error_line(err, "genesis.json exists already")


# --- usage mistakes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["frobnicate"], "invalid choice"),
        (["keygen"], "--out"),
        (["testnet", "--validators", "many", "--out", "x"], "invalid int value"),
        (["tx", "show", "abc"], "TX_ID must be 64 hex characters"),
        (["block", "show", "-"], "HEIGHT must be a number"),
        (["status", "--url", "localhost:8600"], "http://host:port"),
    ],
)
def test_usage_mistakes_are_one_line_and_exit_2(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert_one_error_line(err, fragment)


def test_tx_send_refuses_a_key_file_readable_by_others_naming_the_mode(
    key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file.chmod(0o644)
    code, _, err = run(
        capsys,
        "tx",
        "send",
        "--key",
        str(key_file),
        "membership",
        "revoke_member",
        "--args",
        json.dumps({"public_key": KEY_HEX}),
        "--url",
        f"http://127.0.0.1:{free_port()}",
    )
    assert code != 0
    assert_one_error_line(err, "mode 644", "chmod 600")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ("{not json", "--args is not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"public_key": "xyz"}', "argument 'public_key' must be hex"),
        ('{"public_key": "' + KEY_HEX + '", "n": 0.5}', "float"),
    ],
)
def test_tx_send_refuses_bad_args_before_contacting_the_node(
    key_file: Path, args: str, fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys,
        "tx",
        "send",
        "--key",
        str(key_file),
        "membership",
        "revoke_member",
        "--args",
        args,
        "--url",
        "http://127.0.0.1:1",
    )
    assert code == 2
    assert_one_error_line(err, fragment)


# --- runtime failures ------------------------------------------------------------------


def test_unreachable_node_is_a_clear_runtime_error(
    key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = run(
        capsys,
        "tx",
        "send",
        "--key",
        str(key_file),
        "membership",
        "revoke_member",
        "--args",
        json.dumps({"public_key": KEY_HEX}),
        "--url",
        url,
    )
    assert (code, out) == (1, "")
    assert_one_error_line(err, f"cannot reach the node at {url}")


def test_an_error_without_a_message_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bare TimeoutError (aiohttp's total timeout raises one) once printed `error: `."""

    def times_out(*args: object) -> None:
        raise TimeoutError

    monkeypatch.setattr(bench, "run_fresh", times_out)
    code, out, err = run(capsys, "bench", "--validators", "1", "--duration", "1")
    assert (code, out) == (1, "")
    assert_one_error_line(err, "timed out")


def test_status_uses_chancery_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("CHANCERY_URL", url)
    code, _, err = run(capsys, "status")
    assert code == 1
    assert_one_error_line(err, url)


def test_api_error_shows_code_status_and_details(
    fake_node: tuple[str, list[Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = fake_node
    code, out, err = run(capsys, "block", "show", "9", "--url", url)
    assert (code, out) == (1, "")
    assert_one_error_line(err, "not_found", "no such block", "HTTP 404", '"height":9')


def test_tx_send_posts_a_signed_msgpack_envelope_and_prints_the_answer(
    fake_node: tuple[str, list[Any]], key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, received = fake_node
    code, out, err = run(
        capsys,
        "tx",
        "send",
        "--key",
        str(key_file),
        "membership",
        "add_member",
        "--args",
        json.dumps({"public_key": KEY_HEX, "name": "A"}),
        "--wait",
        "--timeout-ms",
        "1500",
        "--url",
        url,
    )
    assert (code, err) == (0, "")
    content_type, query, envelope = received[-1]
    assert content_type == "application/msgpack"
    assert query == {"wait": "commit", "timeout_ms": "1500"}
    tx = decode_envelope(envelope)
    assert tx.signer == load_key_file(key_file).public_key
    assert verify(tx.signer, DOMAIN_TX, tx.body_bytes, tx.signature)
    assert tx.body.chain_id == "test-chain"
    assert tx.body.args == {"public_key": bytes.fromhex(KEY_HEX), "name": "A"}
    assert 0 <= tx.body.nonce < 2**63
    assert json.loads(out) == {"tx_id": tx.tx_id.hex(), "status": "pending"}


def test_tx_send_without_wait_does_not_wait_for_commit(
    fake_node: tuple[str, list[Any]], key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, received = fake_node
    code, _, _ = run(
        capsys,
        "tx",
        "send",
        "--key",
        str(key_file),
        "membership",
        "set_encryption_key",
        "--args",
        json.dumps({"encryption_key": KEY_HEX}),
        "--url",
        url,
    )
    assert code == 0
    assert received[-1][1] == {"wait": "none"}


def test_up_reports_a_node_that_exits_early_with_its_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from node import supervisor

    def failing_node(home: Path) -> list[str]:
        return ["sh", "-c", "echo 'error: boom at start-up' >&2; exit 3"]

    monkeypatch.setattr(supervisor, "node_command", failing_node)
    base = free_port()
    run(
        capsys,
        "testnet",
        "--validators",
        "1",
        "--out",
        str(tmp_path),
        "--base-api-port",
        str(base),
        "--base-p2p-port",
        str(free_port()),
    )
    code, _, err = run(capsys, "up", "--dir", str(tmp_path))
    assert code == 1
    assert err.startswith("error: node 0 exited with code 3 early")
    assert "error: boom at start-up" in err
    assert "Traceback" not in err
