"""The HTTP API (API.md) driven through a real aiohttp server on a real LevelDB chain.

Each test builds a one-validator testnet in `tmp_path`, wires the node's services, starts
the node's real consensus path (unless the test needs transactions to stay pending) and
talks to the app through aiohttp's `TestClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from node.api.app import ROUTES, create_app
from node.api.read_auth import read_payload
from node.crypto import DOMAIN_READ, SigningKey
from node.genesis import parse_genesis
from node.localnet import P2P_PORT_RANGE, free_port_base
from node.proof import build_tx_proof, verify_proof_bundle
from node.runner import Consensus
from node.services import NodeServices, build_services
from node.transaction import Transaction, encode_envelope
from tests.helpers import LocalTestnet, create_testnet, now_ms

MSGPACK = "application/msgpack"
JSON = "application/json"
SMALL_LIMITS = {"body_bytes_max": 64 * 1024, "batch_envelopes_max": 5, "export_blocks_max": 10}
READ_TIMEOUT_S = 10.0


@dataclass
class Node:
    testnet: LocalTestnet
    services: NodeServices
    client: TestClient
    app: web.Application

    async def submit(
        self, tx: Transaction, *, wait: str = "none", as_json: bool = False, **query: str
    ) -> tuple[int, Any]:
        params = {"wait": wait, **query}
        if as_json:
            body = json.dumps(envelope_json(tx)).encode()
            response = await self.client.post(
                "/v1/transactions", data=body, params=params, headers={"Content-Type": JSON}
            )
        else:
            response = await self.client.post(
                "/v1/transactions",
                data=tx.envelope,
                params=params,
                headers={"Content-Type": MSGPACK},
            )
        return response.status, await response.json()

    async def commit(self, tx: Transaction) -> dict[str, Any]:
        status, answer = await self.submit(tx, wait="commit")
        assert status == 200, answer
        return answer

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        response = await self.client.get(path, **kwargs)
        return response.status, await response.json()


def envelope_json(tx: Transaction) -> dict[str, str]:
    return {"body": tx.body_bytes.hex(), "signer": tx.signer.hex(), "signature": tx.signature.hex()}


@contextlib.asynccontextmanager
async def consensus_running(services: NodeServices) -> AsyncIterator[None]:
    """The node's real consensus path (a single validator: PBFT with a quorum of one)."""
    consensus = Consensus.build(services)
    await consensus.start()
    task = asyncio.create_task(consensus.driver.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consensus.stop()


@contextlib.asynccontextmanager
async def running_node(
    tmp_path: Path, *, produce: bool = True, **api_settings: Any
) -> AsyncIterator[Node]:
    testnet = create_testnet(tmp_path / "net")
    config = testnet.config(**{**SMALL_LIMITS, **api_settings})
    p2p = dataclasses.replace(config.p2p, port=free_port_base(1, P2P_PORT_RANGE))
    services = build_services(dataclasses.replace(config, p2p=p2p))
    app = create_app(services)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if produce:
                await stack.enter_async_context(consensus_running(services))
            client = await stack.enter_async_context(TestClient(TestServer(app)))
            yield Node(testnet, services, client, app)
    finally:
        services.close()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with running_node(tmp_path) as started:
        yield started


@pytest.fixture
async def idle_node(tmp_path: Path) -> AsyncIterator[Node]:
    """No block production: admitted transactions stay pending."""
    async with running_node(tmp_path, produce=False) as started:
        yield started


def assert_error(status: int, answer: Any, expected_status: int, code: str) -> dict[str, Any]:
    assert status == expected_status, answer
    assert set(answer) == {"error"}, answer
    assert set(answer["error"]) == {"code", "message", "details"}, answer
    assert answer["error"]["code"] == code, answer
    return answer["error"]


async def post_raw(node: Node, path: str, body: bytes, content_type: str) -> tuple[int, Any]:
    response = await node.client.post(path, data=body, headers={"Content-Type": content_type})
    return response.status, await response.json()


# --- submission ------------------------------------------------------------------------


async def test_submit_msgpack_answers_202_pending(node: Node) -> None:
    tx = node.testnet.add_member()
    status, answer = await node.submit(tx)
    assert status == 202
    assert answer == {"tx_id": tx.tx_id.hex(), "status": "pending"}


async def test_submit_json_answers_202_pending(node: Node) -> None:
    tx = node.testnet.add_member()
    status, answer = await node.submit(tx, as_json=True)
    assert status == 202
    assert answer == {"tx_id": tx.tx_id.hex(), "status": "pending"}


async def test_wait_commit_answers_200_with_height_index_and_receipt(node: Node) -> None:
    tx = node.testnet.add_member()
    answer = await node.commit(tx)
    assert answer["tx_id"] == tx.tx_id.hex()
    assert answer["status"] == "committed"
    assert answer["height"] == 1
    assert answer["index"] == 0
    receipt = answer["receipt"]
    assert receipt["ok"] is True
    assert receipt["error"] is None
    assert receipt["tx_id"] == tx.tx_id.hex()
    assert receipt["events"][0]["name"] == "member_added"


async def test_wait_commit_over_json(node: Node) -> None:
    tx = node.testnet.add_member()
    status, answer = await node.submit(tx, wait="commit", as_json=True)
    assert status == 200
    assert answer["status"] == "committed"


async def test_duplicate_of_committed_tx_is_409_with_its_status(node: Node) -> None:
    tx = node.testnet.add_member()
    await node.commit(tx)
    status, answer = await node.submit(tx)
    error = assert_error(status, answer, 409, "tx.duplicate")
    assert error["details"]["status"] == "committed"
    assert error["details"]["height"] == 1


async def test_duplicate_of_pending_tx_is_409_pending(idle_node: Node) -> None:
    tx = idle_node.testnet.add_member()
    assert (await idle_node.submit(tx))[0] == 202
    status, answer = await idle_node.submit(tx, as_json=True)
    error = assert_error(status, answer, 409, "tx.duplicate")
    assert error["details"]["status"] == "pending"


async def test_wait_commit_timeout_is_504_and_tx_stays_pending(idle_node: Node) -> None:
    tx = idle_node.testnet.add_member()
    status, answer = await idle_node.submit(tx, wait="commit", timeout_ms="50")
    error = assert_error(status, answer, 504, "tx.commit_timeout")
    assert error["details"] == {"tx_id": tx.tx_id.hex(), "status": "pending"}
    assert idle_node.services.notifier.waiter_count == 0
    status, answer = await idle_node.get(f"/v1/transactions/{tx.tx_id.hex()}")
    assert status == 200
    assert answer["status"] == "pending"


async def test_failed_contract_call_is_committed_with_failed_receipt(node: Node) -> None:
    public_key = os.urandom(32)
    first = await node.commit(node.testnet.add_member(public_key=public_key))
    second = await node.commit(node.testnet.add_member(public_key=public_key))
    assert first["receipt"]["ok"] is True
    assert second["status"] == "committed"
    assert second["receipt"]["ok"] is False
    assert second["receipt"]["error"] == "membership.exists"


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ({"wait": "later"}, "wait"),
        ({"wait": "commit", "timeout_ms": "soon"}, "timeout_ms"),
        ({"wait": "commit", "timeout_ms": "0"}, "timeout_ms"),
        ({"wait": "commit", "timeout_ms": "-5"}, "timeout_ms"),
        ({"wait": "commit", "timeout_ms": "60001"}, "timeout_ms"),
        ({"wait": "commit", "timeout_ms": "1.5"}, "timeout_ms"),
    ],
)
async def test_bad_wait_parameters_are_400(
    idle_node: Node, query: dict[str, str], parameter: str
) -> None:
    tx = idle_node.testnet.add_member()
    response = await idle_node.client.post(
        "/v1/transactions", data=tx.envelope, params=query, headers={"Content-Type": MSGPACK}
    )
    error = assert_error(response.status, await response.json(), 400, "request.malformed")
    assert error["details"]["parameter"] == parameter
    assert len(idle_node.services.mempool) == 0


async def test_mempool_full_is_429_with_retry_after(idle_node: Node) -> None:
    idle_node.services.mempool.txs_max = 1
    assert (await idle_node.submit(idle_node.testnet.add_member()))[0] == 202
    tx = idle_node.testnet.add_member()
    response = await idle_node.client.post(
        "/v1/transactions", data=tx.envelope, headers={"Content-Type": MSGPACK}
    )
    assert_error(response.status, await response.json(), 429, "mempool.full")
    assert response.headers["Retry-After"] == "1"


async def test_a_full_mempool_refuses_a_batch_before_decoding_it(idle_node: Node) -> None:
    """The body is never read: even bytes that are not msgpack get 429, not 400."""
    idle_node.services.mempool.txs_max = 1
    assert (await idle_node.submit(idle_node.testnet.add_member()))[0] == 202
    response = await idle_node.client.post(
        "/v1/transactions/batch", data=b"\xc1 not msgpack", headers={"Content-Type": MSGPACK}
    )
    assert_error(response.status, await response.json(), 429, "mempool.full")
    assert response.headers["Retry-After"] == "1"
    idle_node.services.mempool.txs_max = 2  # room again: the same bytes are now malformed
    response = await idle_node.client.post(
        "/v1/transactions/batch", data=b"\xc1 not msgpack", headers={"Content-Type": MSGPACK}
    )
    assert_error(response.status, await response.json(), 400, "request.malformed")


async def test_too_many_commit_waiters_is_429_before_admission(tmp_path: Path) -> None:
    async with running_node(tmp_path, produce=False, commit_waiters_max=1) as node:
        waiting = asyncio.create_task(
            node.submit(node.testnet.add_member(), wait="commit", timeout_ms="2000")
        )
        await asyncio.sleep(0.1)
        tx = node.testnet.add_member()
        status, answer = await node.submit(tx, wait="commit")
        assert_error(status, answer, 429, "node.busy")
        assert tx.tx_id not in node.services.mempool
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting


# --- bad input -------------------------------------------------------------------------


def _envelope_with(tx: Transaction, **fields: Any) -> bytes:
    envelope = {"body": tx.body_bytes, "signature": tx.signature, "signer": tx.signer}
    envelope.update(fields)
    return msgpack.packb({k: v for k, v in envelope.items() if v is not None}, use_bin_type=True)


async def test_bad_msgpack_inputs_are_400_tx_malformed(idle_node: Node) -> None:
    tx = idle_node.testnet.add_member()
    bad_bodies = {
        "not msgpack": b"\xc1\xc1\xc1",
        "empty": b"",
        "truncated": tx.envelope[:-10],
        "trailing bytes": tx.envelope + b"\x00",
        "not a map": msgpack.packb([tx.body_bytes, tx.signer, tx.signature]),
        "signer as text": _envelope_with(tx, signer=tx.signer.hex()),
        "short signature": _envelope_with(tx, signature=tx.signature[:63]),
        "extra field": _envelope_with(tx, memo=b"x"),
        "missing field": msgpack.packb({"body": tx.body_bytes, "signer": tx.signer}),
        "body not msgpack": encode_envelope(b"\xc1", tx.signer, tx.signature),
    }
    for label, body in bad_bodies.items():
        status, answer = await post_raw(idle_node, "/v1/transactions", body, MSGPACK)
        assert (status, answer["error"]["code"]) == (400, "tx.malformed"), label
    assert len(idle_node.services.mempool) == 0


async def test_bad_json_inputs(idle_node: Node) -> None:
    tx = idle_node.testnet.add_member()
    status, answer = await post_raw(idle_node, "/v1/transactions", b"{not json", JSON)
    assert_error(status, answer, 400, "request.malformed")
    status, answer = await post_raw(idle_node, "/v1/transactions", b"\xff\xfe", JSON)
    assert_error(status, answer, 400, "request.malformed")
    status, answer = await post_raw(idle_node, "/v1/transactions", b'{"a": NaN}', JSON)
    assert_error(status, answer, 400, "request.malformed")
    good = envelope_json(tx)
    bad_objects = [
        [good],
        {**good, "extra": "00"},
        {"body": good["body"], "signer": good["signer"]},
        {**good, "signer": 5},
        {**good, "signature": "zz"},
    ]
    for obj in bad_objects:
        status, answer = await post_raw(
            idle_node, "/v1/transactions", json.dumps(obj).encode(), JSON
        )
        assert_error(status, answer, 400, "tx.malformed")


async def test_wrong_field_types_in_body_are_400(idle_node: Node) -> None:
    admin = idle_node.testnet.admins["notary"]
    body = msgpack.packb(
        {
            "args": {},
            "chain_id": idle_node.testnet.chain_id,
            "contract": "membership",
            "method": "add_member",
            "nonce": "one",
            "timestamp": now_ms(),
        },
        use_bin_type=True,
    )
    signature = admin.sign(b"chancery/tx/v1\n", body)
    envelope = encode_envelope(body, admin.public_key, signature)
    status, answer = await post_raw(idle_node, "/v1/transactions", envelope, MSGPACK)
    assert_error(status, answer, 400, "tx.malformed")


async def test_signature_by_another_key_is_401(idle_node: Node) -> None:
    testnet = idle_node.testnet
    tx = testnet.add_member()
    forged = testnet.add_member(key=testnet.admins["taxoffice"])
    envelope = encode_envelope(tx.body_bytes, tx.signer, forged.signature)
    status, answer = await post_raw(idle_node, "/v1/transactions", envelope, MSGPACK)
    assert_error(status, answer, 401, "tx.bad_signature")


async def test_unknown_signer_is_403(idle_node: Node) -> None:
    tx = idle_node.testnet.add_member(key=SigningKey.generate())
    status, answer = await idle_node.submit(tx)
    error = assert_error(status, answer, 403, "tx.unknown_signer")
    assert error["details"]["revoked"] is False


async def test_member_calling_admin_method_is_403_forbidden(idle_node: Node) -> None:
    tx = idle_node.testnet.add_member(key=idle_node.testnet.members["notary"])
    status, answer = await idle_node.submit(tx)
    assert_error(status, answer, 403, "tx.forbidden")


async def test_wrong_chain_is_400(idle_node: Node) -> None:
    tx = idle_node.testnet.add_member(chain_id="another-chain")
    status, answer = await idle_node.submit(tx)
    assert_error(status, answer, 400, "tx.wrong_chain")


async def test_unsupported_media_type_is_415(idle_node: Node) -> None:
    tx = idle_node.testnet.add_member()
    for content_type in ("text/plain", "application/octet-stream"):
        status, answer = await post_raw(idle_node, "/v1/transactions", tx.envelope, content_type)
        assert_error(status, answer, 415, "request.unsupported_media_type")
    status, answer = await post_raw(idle_node, "/v1/transactions/batch", b"[]", "text/csv")
    assert_error(status, answer, 415, "request.unsupported_media_type")


async def test_oversized_body_by_content_length_is_413_before_reading(idle_node: Node) -> None:
    limit = idle_node.services.config.api.body_bytes_max
    status, answer = await post_raw(idle_node, "/v1/transactions", b"\x00" * (limit + 1), MSGPACK)
    assert_error(status, answer, 413, "request.too_large")
    # Only the headers are sent: the node must answer from Content-Length alone.
    head = (
        "POST /v1/transactions HTTP/1.1\r\nHost: test\r\n"
        f"Content-Type: {MSGPACK}\r\nContent-Length: {limit * 100}\r\n\r\n"
    )
    status_line, body = await raw_exchange(idle_node, head.encode())
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    assert json.loads(body)["error"]["code"] == "request.too_large"


async def test_oversized_chunked_body_is_413_while_streaming(idle_node: Node) -> None:
    limit = idle_node.services.config.api.body_bytes_max

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(limit // 1024 + 2):
            yield b"\x00" * 1024

    response = await idle_node.client.post(
        "/v1/transactions", data=chunks(), headers={"Content-Type": MSGPACK}
    )
    assert_error(response.status, await response.json(), 413, "request.too_large")
    # One chunk over the limit and no end of stream: the node must not wait for the rest.
    chunk = b"\x00" * (limit + 1)
    head = (
        (
            "POST /v1/transactions/batch HTTP/1.1\r\nHost: test\r\n"
            f"Content-Type: {MSGPACK}\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
        + f"{len(chunk):x}\r\n".encode()
        + chunk
        + b"\r\n"
    )
    status_line, body = await raw_exchange(idle_node, head)
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    assert json.loads(body)["error"]["code"] == "request.too_large"


async def raw_exchange(node: Node, request: bytes) -> tuple[bytes, bytes]:
    """Send raw bytes without finishing the body; return the status line and JSON body."""
    server = node.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(READ_TIMEOUT_S):
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length)
    finally:
        writer.close()
    return status_line, body


async def test_unknown_route_is_404_json(node: Node) -> None:
    status, answer = await node.get("/v1/nothing-here")
    assert_error(status, answer, 404, "not_found")


async def test_wrong_method_is_405_json_with_allow(node: Node) -> None:
    response = await node.client.delete("/v1/status")
    assert_error(response.status, await response.json(), 405, "request.method_not_allowed")
    assert "GET" in response.headers["Allow"]


# --- batch -----------------------------------------------------------------------------


async def test_batch_msgpack_results_in_order_with_mixed_good_and_bad(idle_node: Node) -> None:
    testnet = idle_node.testnet
    good = [testnet.add_member() for _ in range(2)]
    forbidden = testnet.add_member(key=testnet.members["notary"])
    envelopes = [good[0].envelope, b"\xc1", forbidden.envelope, good[1].envelope, good[0].envelope]
    body = msgpack.packb(envelopes, use_bin_type=True)
    response = await idle_node.client.post(
        "/v1/transactions/batch", data=body, headers={"Content-Type": MSGPACK}
    )
    assert response.status == 200
    results = await response.json()
    assert results[0] == {"tx_id": good[0].tx_id.hex(), "status": "pending"}
    assert results[1]["tx_id"] is None
    assert results[1]["error"]["code"] == "tx.malformed"
    assert results[2]["tx_id"] == forbidden.tx_id.hex()
    assert results[2]["error"]["code"] == "tx.forbidden"
    assert results[3] == {"tx_id": good[1].tx_id.hex(), "status": "pending"}
    assert results[4]["error"]["code"] == "tx.duplicate"
    assert results[4]["error"]["details"]["status"] == "pending"
    assert len(idle_node.services.mempool) == 2


async def test_batch_json_and_non_bin_items(idle_node: Node) -> None:
    tx = idle_node.testnet.add_member()
    body = json.dumps([envelope_json(tx), {"body": "00"}]).encode()
    status, results = await post_raw(idle_node, "/v1/transactions/batch", body, JSON)
    assert status == 200
    assert results[0] == {"tx_id": tx.tx_id.hex(), "status": "pending"}
    assert results[1]["error"]["code"] == "tx.malformed"
    # A msgpack batch holds envelope bytes; a map item is refused, not read as JSON.
    as_map = {"body": tx.body_bytes.hex(), "signer": "", "signature": ""}
    body = msgpack.packb([as_map], use_bin_type=True)
    status, results = await post_raw(idle_node, "/v1/transactions/batch", body, MSGPACK)
    assert status == 200
    assert results == [{"tx_id": None, "error": results[0]["error"]}]
    assert results[0]["error"]["code"] == "tx.malformed"


async def test_batch_over_the_limit_is_413(idle_node: Node) -> None:
    limit = idle_node.services.config.api.batch_envelopes_max
    envelopes = [idle_node.testnet.add_member().envelope for _ in range(limit + 1)]
    body = msgpack.packb(envelopes, use_bin_type=True)
    status, answer = await post_raw(idle_node, "/v1/transactions/batch", body, MSGPACK)
    error = assert_error(status, answer, 413, "request.batch_too_large")
    assert error["details"] == {"count": limit + 1, "limit": limit}
    # Only the array header is read: an over-long array with no items is refused the same.
    header_only = b"\xdc" + (limit + 1).to_bytes(2, "big")
    status, answer = await post_raw(idle_node, "/v1/transactions/batch", header_only, MSGPACK)
    assert_error(status, answer, 413, "request.batch_too_large")
    body = json.dumps([{}] * (limit + 1)).encode()
    status, answer = await post_raw(idle_node, "/v1/transactions/batch", body, JSON)
    assert_error(status, answer, 413, "request.batch_too_large")
    assert len(idle_node.services.mempool) == 0


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"\xc1", MSGPACK),
        (msgpack.packb({"a": 1}), MSGPACK),
        (b"\x92\xc4\x01a", MSGPACK),  # array of 2 with only one item
        (msgpack.packb([b"a"]) + b"\x00", MSGPACK),
        (b'{"a": 1}', JSON),
        (b"[", JSON),
    ],
)
async def test_batch_that_does_not_decode_is_400(
    idle_node: Node, body: bytes, content_type: str
) -> None:
    status, answer = await post_raw(idle_node, "/v1/transactions/batch", body, content_type)
    assert_error(status, answer, 400, "request.malformed")


# --- reading transactions and blocks ---------------------------------------------------


async def wait_committed(node: Node, tx: Transaction) -> None:
    async with asyncio.timeout(READ_TIMEOUT_S):
        while tx.tx_id in node.services.mempool or not node.services.store.has_tx(tx.tx_id):
            await asyncio.sleep(0.01)


async def test_get_pending_then_committed_transaction(tmp_path: Path) -> None:
    async with running_node(tmp_path, produce=False) as node:
        tx = node.testnet.add_member()
        await node.submit(tx)
        status, answer = await node.get(f"/v1/transactions/{tx.tx_id.hex()}")
        assert status == 200
        assert answer == {
            "tx_id": tx.tx_id.hex(),
            "status": "pending",
            "height": None,
            "index": None,
            "receipt": None,
            "envelope": tx.envelope.hex(),
        }
        status, answer = await node.get(f"/v1/transactions/{tx.tx_id.hex()}?proof=true")
        assert_error(status, answer, 404, "not_found")
        async with consensus_running(node.services):
            await wait_committed(node, tx)
        status, answer = await node.get(f"/v1/transactions/{tx.tx_id.hex().upper()}")
        assert status == 200
        assert answer["status"] == "committed"
        assert (answer["height"], answer["index"]) == (1, 0)
        assert answer["receipt"]["ok"] is True
        assert answer["envelope"] == tx.envelope.hex()


async def test_get_transaction_proof_bundle(node: Node) -> None:
    tx = node.testnet.add_member()
    committed = await node.commit(tx)
    status, bundle = await node.get(f"/v1/transactions/{tx.tx_id.hex()}", params={"proof": "true"})
    assert status == 200
    assert bundle["format"] == "chancery-proof/1"
    assert bundle["tx"]["tx_id"] == tx.tx_id.hex()
    assert bundle["commit"]["height"] == committed["height"]


async def test_get_transaction_errors(node: Node) -> None:
    for bad in ("abc", "zz" * 32, "0" * 63, "0" * 65):
        status, answer = await node.get(f"/v1/transactions/{bad}")
        assert_error(status, answer, 400, "request.malformed")
    status, answer = await node.get(f"/v1/transactions/{'ab' * 32}")
    assert_error(status, answer, 404, "not_found")
    status, answer = await node.get(f"/v1/transactions/{'ab' * 32}?proof=maybe")
    assert_error(status, answer, 400, "request.malformed")


async def test_blocks_latest_by_height_and_full(node: Node) -> None:
    tx = node.testnet.add_member()
    committed = await node.commit(tx)
    height = committed["height"]
    status, latest = await node.get("/v1/blocks/latest")
    assert status == 200
    assert set(latest) == {"hash", "header", "tx_ids", "commit"}
    assert latest["header"]["height"] == height
    assert latest["tx_ids"] == [tx.tx_id.hex()]
    assert latest["commit"]["block_hash"] == latest["hash"]
    status, by_height = await node.get(f"/v1/blocks/{height}")
    assert (status, by_height) == (200, latest)
    status, full = await node.get(f"/v1/blocks/{height}", params={"full": "true"})
    assert status == 200
    assert full["envelopes"] == [tx.envelope.hex()]
    assert full["receipts"][0]["tx_id"] == tx.tx_id.hex()
    status, genesis_block = await node.get("/v1/blocks/0")
    assert status == 200
    assert genesis_block["hash"] == node.services.store.genesis_hash.hex()


async def test_block_errors(node: Node) -> None:
    status, answer = await node.get("/v1/blocks/7")
    assert_error(status, answer, 404, "not_found")
    for bad in ("-1", "one", "1.5", "+1", "99999999999999999999"):
        status, answer = await node.get(f"/v1/blocks/{bad}")
        assert_error(status, answer, 400, "request.malformed")
    status, answer = await node.get("/v1/blocks/0?full=yes")
    assert_error(status, answer, 400, "request.malformed")


async def test_export_stream_decodes_with_unpacker(node: Node) -> None:
    txs = [node.testnet.add_member() for _ in range(3)]
    for tx in txs:
        await node.commit(tx)
    tip = node.services.store.height
    response = await node.client.get("/v1/blocks", params={"from": "1", "limit": "10"})
    assert response.status == 200
    assert response.content_type == MSGPACK
    unpacker = msgpack.Unpacker(raw=False)
    async for chunk in response.content.iter_any():
        unpacker.feed(chunk)
    blocks = list(unpacker)
    assert len(blocks) == tip
    for height, block in enumerate(blocks, start=1):
        assert set(block) == {"commit", "header", "receipts", "txs"}
        assert block["commit"]["height"] == height
        assert hashlib.sha256(block["header"]).digest() == block["commit"]["block_hash"]
    exported = [envelope for block in blocks for envelope in block["txs"]]
    assert exported == [tx.envelope for tx in txs]
    response = await node.client.get("/v1/blocks", params={"from": "0", "limit": "2"})
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(await response.read())
    assert [b["commit"]["height"] for b in unpacker] == [0, 1]
    for params in ({"limit": "0"}, {"limit": "11"}, {"from": "-1"}, {"from": "x"}):
        status, answer = await node.get("/v1/blocks", params=params)
        assert_error(status, answer, 400, "request.malformed")


# --- chain documents -------------------------------------------------------------------


async def test_genesis_is_served_byte_for_byte(node: Node) -> None:
    response = await node.client.get("/v1/genesis")
    assert response.status == 200
    assert response.content_type == JSON
    assert await response.read() == node.testnet.genesis_raw


async def test_status_shape(node: Node) -> None:
    await node.commit(node.testnet.add_member())
    status, answer = await node.get("/v1/status")
    assert status == 200
    assert set(answer) == {
        "chain_id",
        "genesis_hash",
        "node",
        "height",
        "last_block_hash",
        "view",
        "primary",
        "validators",
        "mempool",
        "syncing",
    }
    assert answer["chain_id"] == node.testnet.chain_id
    assert answer["node"] == {
        "index": 0,
        "org": "notary",
        "public_key": node.testnet.validator_key.public_key.hex(),
    }
    assert answer["height"] == 1
    assert answer["last_block_hash"] == node.services.store.last_block_hash.hex()
    assert answer["validators"] == [
        {
            "index": 0,
            "org": "notary",
            "public_key": node.testnet.validator_key.public_key.hex(),
            "connected": True,
        }
    ]
    assert answer["mempool"] == {"size": 0, "bytes": 0}
    assert answer["syncing"] is False


async def test_health_and_ready(node: Node) -> None:
    assert await node.get("/v1/health") == (200, {"ok": True})
    assert await node.get("/v1/ready") == (200, {"ready": True})
    node.services.consensus.syncing = True
    status, answer = await node.get("/v1/ready")
    error = assert_error(status, answer, 503, "node.unavailable")
    assert error["details"]["reason"] == "syncing"


async def test_ready_without_quorum_is_503(node: Node) -> None:
    # Pretend the chain had four validators: alone, this node cannot reach 2f+1 = 3.
    services = node.services
    four = (services.genesis.validators[0],) * 4
    object.__setattr__(services.genesis, "validators", four)
    status, answer = await node.get("/v1/ready")
    error = assert_error(status, answer, 503, "node.unavailable")
    assert error["details"]["reason"] == "no_quorum"


async def test_metrics_are_valid_prometheus_text(node: Node) -> None:
    await node.commit(node.testnet.add_member())
    await node.get("/v1/blocks/1")
    await node.get("/v1/blocks/2")
    await node.get("/v1/no-such-route")
    response = await node.client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    assert "chancery_block_height 1.0" in text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert "chancery_mempool_size" in families
    requests = families["chancery_http_requests"]
    labels = {
        (s.labels["route"], s.labels["method"], s.labels["status"])
        for s in requests.samples
        if s.name == "chancery_http_requests_total"
    }
    assert ("/v1/blocks/{height}", "GET", "200") in labels
    assert ("/v1/blocks/{height}", "GET", "404") in labels
    assert ("/v1/transactions", "POST", "200") in labels
    assert ("unmatched", "GET", "404") in labels
    assert all(route != "/v1/blocks/1" for route, _, _ in labels)


# --- events ----------------------------------------------------------------------------


async def read_sse(response: Any, count: int) -> list[tuple[str, str | None, Any]]:
    """The next `count` events as (event, id, data); comments are skipped."""
    events: list[tuple[str, str | None, Any]] = []
    name, event_id, data = "message", None, None
    async with asyncio.timeout(READ_TIMEOUT_S):
        while len(events) < count:
            line = (await response.content.readline()).decode().rstrip("\n")
            if line.startswith(":"):
                continue
            if line == "":
                if data is not None:
                    events.append((name, event_id, json.loads(data)))
                name, event_id, data = "message", None, None
                continue
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "id":
                event_id = value
            elif field == "data":
                data = value
    return events


async def test_events_replay_from_height_then_follow_live(node: Node) -> None:
    first = [await node.commit(node.testnet.add_member()) for _ in range(2)]
    response = await node.client.get("/v1/events", params={"from_height": "1"})
    assert response.status == 200
    assert response.content_type == "text/event-stream"
    replayed = await read_sse(response, 4)
    assert [(e[0], e[1]) for e in replayed] == [
        ("block", "1"),
        ("tx", None),
        ("block", "2"),
        ("tx", None),
    ]
    assert replayed[0][2]["height"] == 1
    assert replayed[0][2]["tx_ids"] == [first[0]["tx_id"]]
    assert replayed[1][2] == {
        "tx_id": first[0]["tx_id"],
        "height": 1,
        "ok": True,
        "error": None,
        "events": first[0]["receipt"]["events"],
    }
    assert replayed[2][1] == "2"
    live_tx = node.testnet.add_member()
    await node.submit(live_tx)
    live = await read_sse(response, 2)
    assert live[0][0] == "block"
    assert live[0][2]["height"] == 3
    assert live[1][2]["tx_id"] == live_tx.tx_id.hex()
    response.close()


async def test_events_resume_from_last_event_id_and_default_to_live(node: Node) -> None:
    for _ in range(2):
        await node.commit(node.testnet.add_member())
    response = await node.client.get(
        "/v1/events", params={"from_height": "1"}, headers={"Last-Event-ID": "1"}
    )
    resumed = await read_sse(response, 1)
    assert resumed[0][2]["height"] == 2
    response.close()
    live_only = await node.client.get("/v1/events")
    await asyncio.sleep(0.05)
    await node.submit(node.testnet.add_member())
    events = await read_sse(live_only, 1)
    assert events[0][2]["height"] == 3
    live_only.close()


async def test_events_bad_start_is_400(node: Node) -> None:
    status, answer = await node.get("/v1/events", params={"from_height": "-1"})
    assert_error(status, answer, 400, "request.malformed")
    status, answer = await node.get("/v1/events", headers={"Last-Event-ID": "x"})
    assert_error(status, answer, 400, "request.malformed")
    assert node.services.notifier._subscriptions == set()


async def test_overflowed_subscriber_stream_ends(tmp_path: Path) -> None:
    async with running_node(tmp_path, produce=False, sse_queue_events_max=1) as node:
        response = await node.client.get("/v1/events")
        await asyncio.sleep(0.05)
        notifier = node.services.notifier
        assert len(notifier._subscriptions) == 1
        genesis_block = node.services.store.get_block(0)
        # Two publishes before the stream runs again: the second overflows its queue.
        notifier.publish(genesis_block, ())
        notifier.publish(genesis_block, ())
        async with asyncio.timeout(READ_TIMEOUT_S):
            rest = await response.content.read()
        assert b"event:" not in rest
        assert response.content.at_eof()
        assert notifier._subscriptions == set()


# --- contracts -------------------------------------------------------------------------


async def test_contract_queries(node: Node) -> None:
    status, orgs = await node.get("/v1/contracts/membership/orgs")
    assert status == 200
    assert [org["id"] for org in orgs["orgs"]] == [
        "notary",
        "taxoffice",
        "enterprise-a",
        "enterprise-b",
    ]
    status, notary = await node.get("/v1/contracts/membership/orgs/notary")
    assert status == 200
    assert notary["roles"] == ["notary"]
    admin_key = node.testnet.admins["notary"].public_key.hex()
    assert admin_key in [key["public_key"] for key in notary["keys"]]
    status, member = await node.get(f"/v1/contracts/membership/members/{admin_key}")
    assert status == 200
    assert member["org"] == "notary"
    assert member["admin"] is True
    for path in (
        "/v1/contracts/membership/nothing",
        "/v1/contracts/membership/orgs/nobody",
        f"/v1/contracts/membership/members/{'00' * 32}",
        "/v1/contracts/membership/",
        "/v1/contracts/no-such-contract/orgs",
    ):
        status, answer = await node.get(path)
        assert_error(status, answer, 404, "not_found")


# --- evidence ----------------------------------------------------------------------------

DOCUMENT_HASH = hashlib.sha256(b"the signed contract").digest()
BATCH_ROOT = hashlib.sha256(b"a batch of invoices").digest()


async def commit_evidence(
    node: Node, org: str, method: str, args: dict[str, Any]
) -> tuple[Transaction, dict[str, Any]]:
    """Commit an evidence call by `org`'s member key; fails the test unless it succeeded."""
    tx = node.testnet.sign(node.testnet.members[org], "evidence", method, args)
    answer = await node.commit(tx)
    assert answer["receipt"]["ok"] is True, answer
    return tx, answer


async def test_evidence_queries(node: Node) -> None:
    args = {"hash": DOCUMENT_HASH, "kind": "contract", "subject": "SKU-7", "meta": {"v": b"\x01"}}
    first, committed = await commit_evidence(node, "enterprise-a", "anchor", args)
    assert committed["receipt"]["result"] == {
        "hash": DOCUMENT_HASH.hex(),
        "kind": "contract",
        "org": "enterprise-a",
        "subject": "SKU-7",
    }
    assert committed["receipt"]["events"][0]["name"] == "anchored"
    second, _ = await commit_evidence(node, "notary", "anchor", {**args, "meta": {}})
    duplicate = node.testnet.sign(node.testnet.admins["enterprise-a"], "evidence", "anchor", args)
    refused = await node.commit(duplicate)
    assert refused["receipt"]["ok"] is False
    assert refused["receipt"]["error"] == "evidence.duplicate"

    status, answer = await node.get(f"/v1/contracts/evidence/anchors/{DOCUMENT_HASH.hex()}")
    assert status == 200, answer
    assert answer["hash"] == DOCUMENT_HASH.hex()
    assert [entry["org"] for entry in answer["anchors"]] == ["enterprise-a", "notary"]
    entry = answer["anchors"][0]
    assert entry == {
        "hash": DOCUMENT_HASH.hex(),
        "org": "enterprise-a",
        "signer": node.testnet.members["enterprise-a"].public_key.hex(),
        "height": committed["height"],
        "timestamp": entry["timestamp"],
        "tx_id": first.tx_id.hex(),
        "kind": "contract",
        "subject": "SKU-7",
        "meta": {"v": "01"},
        "method": "anchor",
    }
    block = node.services.store.get_block(committed["height"])
    assert block is not None
    assert entry["timestamp"] == block.header.timestamp

    status, timeline = await node.get("/v1/contracts/evidence/subjects/SKU-7")
    assert status == 200, timeline
    assert (timeline["subject"], timeline["total"], timeline["next"]) == ("SKU-7", 2, None)
    assert [e["tx_id"] for e in timeline["anchors"]] == [first.tx_id.hex(), second.tx_id.hex()]
    status, rest = await node.get("/v1/contracts/evidence/subjects/SKU-7/from/1")
    assert status == 200, rest
    assert [e["tx_id"] for e in rest["anchors"]] == [second.tx_id.hex()]

    for path in (f"anchors/{BATCH_ROOT.hex()}", "subjects/SKU-8", "nothing"):
        status, answer = await node.get(f"/v1/contracts/evidence/{path}")
        assert_error(status, answer, 404, "not_found")
    for path in ("anchors/abc", f"anchors/{'zz' * 32}", "subjects/SKU-7/from/x"):
        status, answer = await node.get(f"/v1/contracts/evidence/{path}")
        error = assert_error(status, answer, 400, "request.malformed")
        assert error["details"]["code"] == "query.invalid_args"


async def test_evidence_proof_bundles_verify_offline(node: Node) -> None:
    genesis = parse_genesis(node.testnet.genesis_raw)
    args = {"hash": DOCUMENT_HASH, "kind": "photo", "subject": "case-1"}
    first, committed = await commit_evidence(node, "enterprise-b", "anchor", args)
    second, later = await commit_evidence(node, "taxoffice", "anchor", args)
    base = f"/v1/contracts/evidence/anchors/{DOCUMENT_HASH.hex()}/proof"

    status, bundle = await node.get(base)
    assert status == 200, bundle
    report = verify_proof_bundle(bundle, genesis)
    assert report.ok, report.to_json()
    assert bundle["tx"]["tx_id"] == first.tx_id.hex()
    assert bundle["commit"]["height"] == committed["height"]
    assert bundle["evidence"] == {
        "contract": "evidence",
        "method": "anchor",
        "org": "enterprise-b",
        "signer": node.testnet.members["enterprise-b"].public_key.hex(),
        "height": committed["height"],
        "timestamp": bundle["block"]["header"]["timestamp"],
        "kind": "photo",
        "meta": None,
        "tx_id": first.tx_id.hex(),
        "hash": DOCUMENT_HASH.hex(),
        "subject": "case-1",
    }
    # The section is added on top of the transaction's own bundle, which is unchanged.
    plain = build_tx_proof(node.services.store, node.services.genesis, first.tx_id)
    assert {k: v for k, v in bundle.items() if k != "evidence"} == json.loads(json.dumps(plain))

    status, by_org = await node.get(base, params={"org": "taxoffice"})
    assert status == 200, by_org
    assert verify_proof_bundle(by_org, genesis).ok
    assert by_org["tx"]["tx_id"] == by_org["evidence"]["tx_id"] == second.tx_id.hex()
    assert by_org["evidence"]["height"] == later["height"]

    batch = {"root": BATCH_ROOT, "count": 1_000_000, "kind": "invoices", "meta": {"n": 1}}
    batch_tx, _ = await commit_evidence(node, "enterprise-a", "anchor_batch", batch)
    status, batch_bundle = await node.get(
        f"/v1/contracts/evidence/anchors/{BATCH_ROOT.hex().upper()}/proof"
    )
    assert status == 200, batch_bundle
    assert verify_proof_bundle(batch_bundle, genesis).ok
    section = batch_bundle["evidence"]
    assert (section["method"], section["root"], section["count"]) == (
        "anchor_batch",
        BATCH_ROOT.hex(),
        1_000_000,
    )
    assert "hash" not in section
    assert "subject" not in section
    assert section["tx_id"] == batch_tx.tx_id.hex()


async def test_evidence_proof_errors(node: Node) -> None:
    await commit_evidence(node, "notary", "anchor", {"hash": DOCUMENT_HASH, "kind": "deed"})
    base = f"/v1/contracts/evidence/anchors/{DOCUMENT_HASH.hex()}/proof"
    for path, params in (
        (f"/v1/contracts/evidence/anchors/{BATCH_ROOT.hex()}/proof", {}),
        (base, {"org": "taxoffice"}),
        (base, {"org": "no-such-org"}),
    ):
        status, answer = await node.get(path, params=params)
        assert_error(status, answer, 404, "not_found")
    for path, params in (
        ("/v1/contracts/evidence/anchors/abc/proof", {}),
        (f"/v1/contracts/evidence/anchors/{'zz' * 32}/proof", {}),
        (base, {"org": "a b"}),
        (base, {"org": ""}),
    ):
        status, answer = await node.get(path, params=params)
        assert_error(status, answer, 400, "request.malformed")


# --- openapi and internal errors -------------------------------------------------------


async def test_openapi_lists_every_route_and_status(node: Node) -> None:
    status, document = await node.get("/v1/openapi.json")
    assert status == 200
    assert document["openapi"].startswith("3.1")
    paths = document["paths"]
    for route in node.app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else None
        assert canonical in paths, canonical
        assert route.method.lower() in paths[canonical], (canonical, route.method)
    assert len(ROUTES) == sum(len(operations) for operations in paths.values())
    submit = paths["/v1/transactions"]["post"]["responses"]
    assert {"200", "202", "400", "401", "403", "409", "413", "415", "429", "504"} <= set(submit)
    assert "401" not in paths["/v1/status"]["get"]["responses"]
    error_schema = document["components"]["schemas"]["Error"]
    assert error_schema["required"] == ["error"]


async def test_openapi_lists_read_auth_statuses_when_members_only(tmp_path: Path) -> None:
    async with running_node(tmp_path, read_access="members") as node:
        status, document = await node.get("/v1/openapi.json")
        assert status == 200
        assert {"401", "403"} <= set(document["paths"]["/v1/status"]["get"]["responses"])
        assert "401" not in document["paths"]["/v1/health"]["get"]["responses"]
        assert "signer" in document["components"]["securitySchemes"]


async def test_unexpected_exception_is_500_internal_json(tmp_path: Path) -> None:
    testnet = create_testnet(tmp_path / "net")
    services = build_services(testnet.config())

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    app = create_app(services)
    app.router.add_get("/broken", broken)
    try:
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/broken")
            assert_error(response.status, await response.json(), 500, "internal")
    finally:
        services.close()


# --- signed reads ----------------------------------------------------------------------


def signed_headers(
    node: Node, key: SigningKey, target: str, *, timestamp_ms: int | None = None
) -> dict[str, str]:
    timestamp_ms = now_ms() if timestamp_ms is None else timestamp_ms
    payload = read_payload(node.testnet.chain_id, "GET", target, timestamp_ms)
    return {
        "X-Chancery-Signer": key.public_key.hex(),
        "X-Chancery-Timestamp": str(timestamp_ms),
        "X-Chancery-Signature": key.sign(DOMAIN_READ, payload).hex(),
    }


async def test_members_read_access(tmp_path: Path) -> None:
    async with running_node(tmp_path, read_access="members") as node:
        member = node.testnet.members["enterprise-a"]
        status, answer = await node.get("/v1/status")
        assert_error(status, answer, 401, "request.unauthenticated")
        assert (await node.get("/v1/health"))[0] == 200
        assert (await node.client.get("/metrics")).status == 200
        assert (await node.get("/v1/openapi.json"))[0] == 200
        target = "/v1/contracts/membership/orgs?x=1"
        status, answer = await node.get(target, headers=signed_headers(node, member, target))
        assert status == 200, answer
        stale = now_ms() - 120_000
        headers = signed_headers(node, member, "/v1/status", timestamp_ms=stale)
        status, answer = await node.get("/v1/status", headers=headers)
        assert_error(status, answer, 401, "request.unauthenticated")
        headers = signed_headers(node, member, "/v1/blocks/0")
        status, answer = await node.get("/v1/status", headers=headers)
        assert_error(status, answer, 401, "request.unauthenticated")
        headers = signed_headers(node, SigningKey.generate(), "/v1/status")
        status, answer = await node.get("/v1/status", headers=headers)
        assert_error(status, answer, 403, "request.forbidden")
        # Writes are authorised by the transaction's own signature.
        status, answer = await node.submit(node.testnet.add_member())
        assert status == 202, answer
