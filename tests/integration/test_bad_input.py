"""Every way a client can be wrong, against a real node process, and the node survives it.

Each refusal is checked for its exact HTTP status, its stable `error.code` (API.md and
docs/protocol-notes.md) and the one error shape `{"error": {"code", "message", "details"}}`.
Requests go over plain `http.client` or raw sockets, never through the in-process app or
the client library, so what is tested is what a foreign client sees on the wire.

Two networks, started once per module with small limits set through `CHANCERY_*`
environment overrides:

- `limited`: small body, envelope and batch limits, normal block production. Every case
  that needs a commit or a limit runs here; a transaction committed before the barrage is
  checked after it (last test in the file).
- `stalled`: a 2-transaction mempool and a 3 s batch interval, so the mempool stays full
  and `wait=commit` times out.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import msgpack
import pytest

from node.crypto import DOMAIN_TX, SigningKey, load_key_file
from node.encoding import canonical_packb
from node.localnet import LocalNetwork
from node.transaction import Transaction, encode_envelope, sign_transaction

BODY_BYTES_MAX: Final = 16384
ENVELOPE_BYTES_MAX: Final = 2048
BATCH_ENVELOPES_MAX: Final = 5
STALLED_TXS_MAX: Final = 2
STALLED_BATCH_INTERVAL_MS: Final = 3000
REQUEST_TIMEOUT_S: Final = 10.0
# A refusal by Content-Length must not wait for a body that never comes.
PROMPT_ANSWER_S: Final = 2.0
COMMIT_POLL_TIMEOUT_S: Final = 15.0


# --- networks ----------------------------------------------------------------------------


def _start_network(directory: Path, env: dict[str, str]) -> LocalNetwork:
    """A 1-validator network whose node process starts with `env` in its environment."""
    net = LocalNetwork.generate(directory, validators=1)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        net.start_all()
    return net


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    net = _start_network(
        tmp_path_factory.mktemp("limited") / "net",
        {
            "CHANCERY_API_BODY_BYTES_MAX": str(BODY_BYTES_MAX),
            "CHANCERY_MEMPOOL_ENVELOPE_BYTES_MAX": str(ENVELOPE_BYTES_MAX),
            "CHANCERY_API_BATCH_ENVELOPES_MAX": str(BATCH_ENVELOPES_MAX),
        },
    )
    try:
        yield net
    finally:
        net.stop_all()


@pytest.fixture(scope="module")
def stalled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    net = _start_network(
        tmp_path_factory.mktemp("stalled") / "net",
        {
            "CHANCERY_MEMPOOL_TXS_MAX": str(STALLED_TXS_MAX),
            "CHANCERY_CONSENSUS_BATCH_INTERVAL_MS": str(STALLED_BATCH_INTERVAL_MS),
        },
    )
    try:
        yield net
    finally:
        net.stop_all()


# --- wire helpers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _host_port(net: LocalNetwork) -> tuple[str, int]:
    parts = urlsplit(net.url())
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def request(
    net: LocalNetwork,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str | None = None,
) -> Answer:
    """One HTTP/1.1 request on a fresh connection; any status is returned, never raised."""
    host, port = _host_port(net)
    connection = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT_S)
    headers = {} if content_type is None else {"Content-Type": content_type}
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        connection.close()


def post_msgpack(net: LocalNetwork, body: bytes, path: str = "/v1/transactions") -> Answer:
    return request(net, "POST", path, body, "application/msgpack")


def post_json(net: LocalNetwork, value: Any, path: str = "/v1/transactions") -> Answer:
    return request(net, "POST", path, json.dumps(value).encode(), "application/json")


def assert_error(answer: Answer, status: int, code: str) -> dict[str, Any]:
    """The answer is `status` with exactly the API's error shape and `code`; its details."""
    assert answer.status == status, (answer.status, answer.body[:500])
    assert answer.headers.get_content_type() == "application/json", answer.headers
    document = answer.json()
    assert list(document) == ["error"], document
    error = document["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["details"], dict), error
    return error["details"]


def _read_response(sock: socket.socket) -> Answer:
    response = http.client.HTTPResponse(sock)
    response.begin()
    try:
        return Answer(response.status, response.headers, response.read())
    finally:
        response.close()


# --- transactions ------------------------------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def random_nonce() -> int:
    return int.from_bytes(os.urandom(8), "big")


def admin_key(net: LocalNetwork, org: str = "notary") -> SigningKey:
    return load_key_file(net.testnet.org(org).admin_key)


def member_key(net: LocalNetwork, org: str = "notary") -> SigningKey:
    return load_key_file(net.testnet.org(org).member_key)


def signed(
    key: SigningKey,
    chain_id: str,
    contract: str = "membership",
    method: str = "add_member",
    args: dict[str, Any] | None = None,
) -> Transaction:
    if args is None:
        args = {"public_key": os.urandom(32), "name": "clerk"}
    return sign_transaction(key, chain_id, contract, method, args, random_nonce(), now_ms())


def add_member_tx(net: LocalNetwork, **overrides: Any) -> Transaction:
    """A valid `membership.add_member` by the notary admin (fresh key, fresh nonce)."""
    return signed(admin_key(net), net.testnet.chain_id, **overrides)


def body_fields(net: LocalNetwork) -> dict[str, Any]:
    """The six body fields of a valid add_member call, as a plain dict."""
    return {
        "args": {"name": "clerk", "public_key": os.urandom(32)},
        "chain_id": net.testnet.chain_id,
        "contract": "membership",
        "method": "add_member",
        "nonce": random_nonce(),
        "timestamp": now_ms(),
    }


def envelope_signing(key: SigningKey, body: bytes) -> bytes:
    """An envelope around exactly `body`, correctly signed by `key`."""
    return encode_envelope(body, key.public_key, key.sign(DOMAIN_TX, body))


def raw_envelope(**parts: Any) -> bytes:
    """An envelope map with whatever fields and types the test asks for."""
    return msgpack.packb(parts, use_bin_type=True)


def json_envelope(tx: Transaction) -> dict[str, str]:
    return {"body": tx.body_bytes.hex(), "signer": tx.signer.hex(), "signature": tx.signature.hex()}


# --- a committed transaction from before the barrage -------------------------------------


@dataclass(frozen=True)
class Baseline:
    tx: Transaction
    committed: dict[str, Any]
    height: int
    block_hash: str


@pytest.fixture(scope="module")
def baseline(limited: LocalNetwork) -> Baseline:
    """Commit one transaction before any bad input is sent; the last test re-checks it."""
    tx = add_member_tx(limited)
    answer = post_msgpack(limited, tx.envelope, "/v1/transactions?wait=commit")
    assert answer.status == 200, answer.body
    committed = answer.json()
    assert committed["status"] == "committed" and committed["receipt"]["ok"] is True
    status = request(limited, "GET", "/v1/status").json()
    block = request(limited, "GET", f"/v1/blocks/{committed['height']}").json()
    return Baseline(tx, committed, status["height"], block["hash"])


# --- undecodable and malformed envelopes -------------------------------------------------

Case = Callable[[LocalNetwork], Answer]


def _truncated(net: LocalNetwork) -> Answer:
    return post_msgpack(net, add_member_tx(net).envelope[:-10])


def _signer_31_bytes(net: LocalNetwork) -> Answer:
    tx = add_member_tx(net)
    return post_msgpack(
        net, raw_envelope(body=tx.body_bytes, signature=tx.signature, signer=tx.signer[:31])
    )


def _signature_as_str(net: LocalNetwork) -> Answer:
    tx = add_member_tx(net)
    return post_msgpack(
        net, raw_envelope(body=tx.body_bytes, signature=tx.signature.hex(), signer=tx.signer)
    )


def _body_as_map(net: LocalNetwork) -> Answer:
    tx = add_member_tx(net)
    return post_msgpack(
        net, raw_envelope(body=body_fields(net), signature=tx.signature, signer=tx.signer)
    )


def _envelope_extra_field(net: LocalNetwork) -> Answer:
    tx = add_member_tx(net)
    return post_msgpack(
        net,
        raw_envelope(body=tx.body_bytes, memo=b"x", signature=tx.signature, signer=tx.signer),
    )


def _envelope_missing_field(net: LocalNetwork) -> Answer:
    tx = add_member_tx(net)
    return post_msgpack(net, raw_envelope(body=tx.body_bytes, signer=tx.signer))


def _envelope_not_a_map(net: LocalNetwork) -> Answer:
    tx = add_member_tx(net)
    return post_msgpack(
        net, msgpack.packb([tx.body_bytes, tx.signature, tx.signer], use_bin_type=True)
    )


def _envelope_trailing_bytes(net: LocalNetwork) -> Answer:
    return post_msgpack(net, add_member_tx(net).envelope + b"\x00")


def _body_extra_field(net: LocalNetwork) -> Answer:
    fields = body_fields(net) | {"memo": "hello"}
    return post_msgpack(net, envelope_signing(admin_key(net), canonical_packb(fields)))


def _body_missing_field(net: LocalNetwork) -> Answer:
    fields = body_fields(net)
    del fields["nonce"]
    return post_msgpack(net, envelope_signing(admin_key(net), canonical_packb(fields)))


def _body_unsorted_keys(net: LocalNetwork) -> Answer:
    # Same six fields, written in reverse key order: valid msgpack, correctly signed,
    # but not the canonical encoding.
    fields = dict(reversed(list(body_fields(net).items())))
    body = msgpack.packb(fields, use_bin_type=True)
    assert body != canonical_packb(fields)
    return post_msgpack(net, envelope_signing(admin_key(net), body))


def _body_non_minimal_integer(net: LocalNetwork) -> Answer:
    # Canonical except the nonce: 5 as uint64 (0xcf + 8 bytes) instead of a fixint.
    fields = body_fields(net) | {"nonce": 5}
    body = canonical_packb(fields)
    fixint = b"\xa5nonce\x05"
    assert body.count(fixint) == 1
    body = body.replace(fixint, b"\xa5nonce\xcf" + (5).to_bytes(8, "big"))
    return post_msgpack(net, envelope_signing(admin_key(net), body))


def _body_wrong_type(net: LocalNetwork) -> Answer:
    fields = body_fields(net) | {"nonce": "5"}
    return post_msgpack(net, envelope_signing(admin_key(net), canonical_packb(fields)))


def _body_float(net: LocalNetwork) -> Answer:
    fields = body_fields(net)
    body = msgpack.packb({**fields, "timestamp": float(fields["timestamp"])}, use_bin_type=True)
    return post_msgpack(net, envelope_signing(admin_key(net), body))


def _json_envelope_missing_field(net: LocalNetwork) -> Answer:
    document = json_envelope(add_member_tx(net))
    del document["signature"]
    return post_json(net, document)


def _json_envelope_not_hex(net: LocalNetwork) -> Answer:
    document = json_envelope(add_member_tx(net)) | {"signer": "not hex at all"}
    return post_json(net, document)


def _json_envelope_number(net: LocalNetwork) -> Answer:
    document = json_envelope(add_member_tx(net)) | {"signature": 12345}
    return post_json(net, document)


def _json_envelope_list(net: LocalNetwork) -> Answer:
    return post_json(net, ["body", "signer", "signature"])


TX_MALFORMED_CASES: Final[dict[str, Case]] = {
    "msgpack-garbage": lambda net: post_msgpack(net, b"\xc1\xc1 this is not msgpack"),
    "msgpack-empty-body": lambda net: post_msgpack(net, b""),
    "truncated-envelope": _truncated,
    "signer-31-bytes": _signer_31_bytes,
    "signature-as-str": _signature_as_str,
    "body-as-map": _body_as_map,
    "envelope-extra-field": _envelope_extra_field,
    "envelope-missing-field": _envelope_missing_field,
    "envelope-not-a-map": _envelope_not_a_map,
    "envelope-trailing-bytes": _envelope_trailing_bytes,
    "body-extra-field": _body_extra_field,
    "body-missing-field": _body_missing_field,
    "body-unsorted-keys": _body_unsorted_keys,
    "body-non-minimal-integer": _body_non_minimal_integer,
    "body-wrong-field-type": _body_wrong_type,
    "body-float": _body_float,
    "json-envelope-missing-field": _json_envelope_missing_field,
    "json-envelope-not-hex": _json_envelope_not_hex,
    "json-envelope-number": _json_envelope_number,
    "json-envelope-list": _json_envelope_list,
}


@pytest.mark.parametrize("case", list(TX_MALFORMED_CASES))
def test_malformed_envelope_is_tx_malformed(
    limited: LocalNetwork, baseline: Baseline, case: str
) -> None:
    assert_error(TX_MALFORMED_CASES[case](limited), 400, "tx.malformed")


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"\xff\xfe\x00", b'{"body": NaN}', b"[1, 2"],
    ids=["garbage", "empty", "not-utf8", "nan", "truncated"],
)
def test_json_that_is_not_json_is_request_malformed(
    limited: LocalNetwork, baseline: Baseline, body: bytes
) -> None:
    answer = request(limited, "POST", "/v1/transactions", body, "application/json")
    assert_error(answer, 400, "request.malformed")


def test_malformed_batch_bodies_are_request_malformed(
    limited: LocalNetwork, baseline: Baseline
) -> None:
    assert_error(
        post_msgpack(limited, b"\xc1garbage", "/v1/transactions/batch"), 400, "request.malformed"
    )
    not_a_list = post_json(limited, {"body": "00"}, "/v1/transactions/batch")
    assert_error(not_a_list, 400, "request.malformed")
    trailing = msgpack.packb([add_member_tx(limited).envelope], use_bin_type=True) + b"\x00"
    assert_error(
        post_msgpack(limited, trailing, "/v1/transactions/batch"), 400, "request.malformed"
    )


def test_batch_reports_each_bad_item_in_place(limited: LocalNetwork, baseline: Baseline) -> None:
    good = add_member_tx(limited)
    items = [b"\xc1", good.envelope, "a string, not bin"]
    answer = post_msgpack(
        limited, msgpack.packb(items, use_bin_type=True), "/v1/transactions/batch"
    )
    assert answer.status == 200, answer.body
    first, second, third = answer.json()
    assert first["error"]["code"] == "tx.malformed"
    assert second == {"tx_id": good.tx_id.hex(), "status": "pending"}
    assert third["error"]["code"] == "tx.malformed"


# --- well-formed transactions that admission refuses -------------------------------------


def test_signature_by_another_key_is_bad_signature(
    limited: LocalNetwork, baseline: Baseline
) -> None:
    tx = add_member_tx(limited)
    impostor = SigningKey.generate()
    forged = encode_envelope(tx.body_bytes, tx.signer, impostor.sign(DOMAIN_TX, tx.body_bytes))
    assert_error(post_msgpack(limited, forged), 401, "tx.bad_signature")
    # The same via JSON, and a signature over other bytes (the domain left out).
    wrong_domain = json_envelope(tx) | {
        "signature": admin_key(limited).sign(b"", tx.body_bytes).hex()
    }
    assert_error(post_json(limited, wrong_domain), 401, "tx.bad_signature")


def test_unknown_signer_is_refused(limited: LocalNetwork, baseline: Baseline) -> None:
    stranger = SigningKey.generate()
    tx = signed(stranger, limited.testnet.chain_id)
    details = assert_error(post_msgpack(limited, tx.envelope), 403, "tx.unknown_signer")
    assert details["revoked"] is False


def test_revoked_signer_is_refused_as_revoked(limited: LocalNetwork, baseline: Baseline) -> None:
    chain_id = limited.testnet.chain_id
    admin = admin_key(limited)
    member = SigningKey.generate()
    added = signed(admin, chain_id, args={"public_key": member.public_key, "name": "temp"})
    answer = post_msgpack(limited, added.envelope, "/v1/transactions?wait=commit")
    assert answer.status == 200 and answer.json()["receipt"]["ok"] is True, answer.body
    # While active, the member may sign what members may sign.
    own_key = {"encryption_key": os.urandom(32)}
    before = signed(member, chain_id, "membership", "set_encryption_key", own_key)
    answer = post_msgpack(limited, before.envelope, "/v1/transactions?wait=commit")
    assert answer.status == 200 and answer.json()["receipt"]["ok"] is True, answer.body
    revoked = signed(
        admin, chain_id, "membership", "revoke_member", {"public_key": member.public_key}
    )
    answer = post_msgpack(limited, revoked.envelope, "/v1/transactions?wait=commit")
    assert answer.status == 200 and answer.json()["receipt"]["ok"] is True, answer.body
    after = signed(member, chain_id, "membership", "set_encryption_key", own_key)
    details = assert_error(post_msgpack(limited, after.envelope), 403, "tx.unknown_signer")
    assert details["revoked"] is True
    # Its transaction from before the revocation stays on the record.
    looked_up = request(limited, "GET", f"/v1/transactions/{before.tx_id.hex()}")
    assert looked_up.status == 200 and looked_up.json()["status"] == "committed"


def test_member_key_may_not_call_an_admin_method(limited: LocalNetwork, baseline: Baseline) -> None:
    tx = signed(member_key(limited), limited.testnet.chain_id)
    details = assert_error(post_msgpack(limited, tx.envelope), 403, "tx.forbidden")
    assert details["org"] == "notary"


def test_replayed_envelope_is_a_duplicate(limited: LocalNetwork, baseline: Baseline) -> None:
    tx = add_member_tx(limited)
    first = post_msgpack(limited, tx.envelope, "/v1/transactions?wait=commit")
    assert first.status == 200, first.body
    committed = first.json()
    for path in ("/v1/transactions", "/v1/transactions?wait=commit"):
        details = assert_error(post_msgpack(limited, tx.envelope, path), 409, "tx.duplicate")
        assert details["status"] == "committed"
        assert details["tx_id"] == tx.tx_id.hex()
        assert details["height"] == committed["height"]
    details = assert_error(post_json(limited, json_envelope(tx)), 409, "tx.duplicate")
    assert details["status"] == "committed"
    # The replay of the transaction committed before the barrage, too.
    details = assert_error(post_msgpack(limited, baseline.tx.envelope), 409, "tx.duplicate")
    assert details == {
        "status": "committed",
        "tx_id": baseline.tx.tx_id.hex(),
        "height": baseline.committed["height"],
    }


def test_wrong_chain_is_refused(limited: LocalNetwork, baseline: Baseline) -> None:
    tx = signed(admin_key(limited), "some-other-chain")
    details = assert_error(post_msgpack(limited, tx.envelope), 400, "tx.wrong_chain")
    assert details["expected"] == limited.testnet.chain_id


@pytest.mark.parametrize(
    ("contract", "method"),
    [("membership", "no_such_method"), ("no_such_contract", "add_member")],
)
def test_unknown_method_is_refused(
    limited: LocalNetwork, baseline: Baseline, contract: str, method: str
) -> None:
    tx = add_member_tx(limited, contract=contract, method=method)
    assert_error(post_msgpack(limited, tx.envelope), 400, "tx.unknown_method")


@pytest.mark.parametrize(
    "args",
    [
        {"public_key": os.urandom(31), "name": "short key"},
        {"public_key": os.urandom(32)},
        {"public_key": os.urandom(32), "name": "clerk", "surprise": 1},
        {"public_key": os.urandom(32).hex(), "name": "key as str"},
        {"public_key": os.urandom(32), "name": 7},
    ],
    ids=["key-31-bytes", "missing-name", "unknown-arg", "key-as-str", "name-as-int"],
)
def test_bad_args_are_invalid_args(
    limited: LocalNetwork, baseline: Baseline, args: dict[str, Any]
) -> None:
    tx = add_member_tx(limited, args=args)
    assert_error(post_msgpack(limited, tx.envelope), 400, "tx.invalid_args")


# --- sizes -------------------------------------------------------------------------------


def _oversized_headers(net: LocalNetwork, path: str, length: int) -> bytes:
    host, port = _host_port(net)
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/msgpack\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("path", ["/v1/transactions", "/v1/transactions/batch"])
@pytest.mark.parametrize("length", [BODY_BYTES_MAX + 1, 10**12])
def test_declared_oversized_body_is_refused_before_it_is_sent(
    limited: LocalNetwork, baseline: Baseline, path: str, length: int
) -> None:
    with socket.create_connection(_host_port(limited), timeout=PROMPT_ANSWER_S) as sock:
        started = time.monotonic()
        sock.sendall(_oversized_headers(limited, path, length))
        # Not one byte of the body is sent: a node that waits for it times this out.
        answer = _read_response(sock)
        elapsed = time.monotonic() - started
    details = assert_error(answer, 413, "request.too_large")
    assert details["limit_bytes"] == BODY_BYTES_MAX
    assert elapsed < PROMPT_ANSWER_S


def test_chunked_body_over_the_limit_is_refused(limited: LocalNetwork, baseline: Baseline) -> None:
    host, port = _host_port(limited)
    head = (
        f"POST /v1/transactions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/msgpack\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"\x00" * 1024
    chunks = BODY_BYTES_MAX // len(chunk) + 4
    with socket.create_connection((host, port), timeout=REQUEST_TIMEOUT_S) as sock:
        sock.sendall(head)
        for _ in range(chunks):
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        answer = _read_response(sock)
    details = assert_error(answer, 413, "request.too_large")
    assert details["limit_bytes"] == BODY_BYTES_MAX


def test_chunked_body_under_the_limit_is_read(limited: LocalNetwork, baseline: Baseline) -> None:
    # The control for the test above: chunked encoding itself is accepted.
    host, port = _host_port(limited)
    tx = add_member_tx(limited)
    head = (
        f"POST /v1/transactions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/msgpack\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    half = len(tx.envelope) // 2
    with socket.create_connection((host, port), timeout=REQUEST_TIMEOUT_S) as sock:
        sock.sendall(head)
        for part in (tx.envelope[:half], tx.envelope[half:]):
            sock.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        answer = _read_response(sock)
    assert answer.status == 202, answer.body
    assert answer.json() == {"tx_id": tx.tx_id.hex(), "status": "pending"}


def test_envelope_over_its_limit_is_tx_too_large(limited: LocalNetwork, baseline: Baseline) -> None:
    tx = add_member_tx(limited, args={"public_key": os.urandom(32), "name": "x" * 3000})
    assert ENVELOPE_BYTES_MAX < len(tx.envelope) < BODY_BYTES_MAX // 2
    assert_error(post_msgpack(limited, tx.envelope), 413, "tx.too_large")
    assert_error(post_json(limited, json_envelope(tx)), 413, "tx.too_large")
    # In a batch, the item is refused in place; the request itself is fine.
    batch = post_msgpack(
        limited, msgpack.packb([tx.envelope], use_bin_type=True), "/v1/transactions/batch"
    )
    assert batch.status == 200, batch.body
    (item,) = batch.json()
    assert item["error"]["code"] == "tx.too_large"


def test_batch_over_its_limit_is_refused(limited: LocalNetwork, baseline: Baseline) -> None:
    txs = [add_member_tx(limited) for _ in range(BATCH_ENVELOPES_MAX + 1)]
    packed = msgpack.packb([tx.envelope for tx in txs], use_bin_type=True)
    details = assert_error(
        post_msgpack(limited, packed, "/v1/transactions/batch"), 413, "request.batch_too_large"
    )
    assert details == {"count": BATCH_ENVELOPES_MAX + 1, "limit": BATCH_ENVELOPES_MAX}
    as_json = post_json(limited, [json_envelope(tx) for tx in txs], "/v1/transactions/batch")
    assert_error(as_json, 413, "request.batch_too_large")
    # Nothing of a refused batch was admitted.
    for tx in txs:
        answer = request(limited, "GET", f"/v1/transactions/{tx.tx_id.hex()}")
        assert_error(answer, 404, "not_found")
    # Exactly at the limit is accepted.
    at_limit = msgpack.packb([tx.envelope for tx in txs[:BATCH_ENVELOPES_MAX]], use_bin_type=True)
    answer = post_msgpack(limited, at_limit, "/v1/transactions/batch")
    assert answer.status == 200, answer.body
    assert [item["status"] for item in answer.json()] == ["pending"] * BATCH_ENVELOPES_MAX


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None]
)
@pytest.mark.parametrize("path", ["/v1/transactions", "/v1/transactions/batch"])
def test_unsupported_content_type_is_415(
    limited: LocalNetwork, baseline: Baseline, content_type: str | None, path: str
) -> None:
    answer = request(limited, "POST", path, add_member_tx(limited).envelope, content_type)
    assert_error(answer, 415, "request.unsupported_media_type")


# --- routes and parameters ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/nothing-here", 404, "not_found"),
        ("GET", "/v2/status", 404, "not_found"),
        ("POST", "/v1/nothing-here", 404, "not_found"),
        ("GET", "/v1/blocks/999999", 404, "not_found"),
        ("GET", "/v1/blocks/999999?full=true", 404, "not_found"),
        ("GET", "/v1/blocks/abc", 400, "request.malformed"),
        ("GET", "/v1/blocks/-1", 400, "request.malformed"),
        ("GET", "/v1/blocks/1.5", 400, "request.malformed"),
        ("GET", "/v1/blocks/99999999999999999999", 400, "request.malformed"),
        ("GET", "/v1/blocks/1?full=yes", 400, "request.malformed"),
        ("GET", "/v1/transactions/" + "zz" * 32, 400, "request.malformed"),
        ("GET", "/v1/transactions/abcd", 400, "request.malformed"),
        ("GET", "/v1/transactions/" + "ab" * 33, 400, "request.malformed"),
        ("GET", "/v1/transactions/" + "ab" * 32, 404, "not_found"),
        ("GET", "/v1/transactions/" + "ab" * 32 + "?proof=true", 404, "not_found"),
        ("GET", "/v1/transactions/" + "ab" * 32 + "?proof=maybe", 400, "request.malformed"),
        ("GET", "/v1/events?from_height=x", 400, "request.malformed"),
        ("GET", "/v1/contracts/membership/members/" + "ab" * 32, 404, "not_found"),
        ("GET", "/v1/contracts/no_such_contract/x", 404, "not_found"),
        ("PUT", "/v1/status", 405, "request.method_not_allowed"),
        ("GET", "/v1/transactions", 405, "request.method_not_allowed"),
    ],
)
def test_route_and_parameter_errors(
    limited: LocalNetwork, baseline: Baseline, method: str, path: str, status: int, code: str
) -> None:
    assert_error(request(limited, method, path), status, code)


@pytest.mark.parametrize(
    "query",
    [
        "wait=commit&timeout_ms=60001",
        "wait=commit&timeout_ms=0",
        "wait=commit&timeout_ms=-5",
        "wait=commit&timeout_ms=soon",
        "wait=later",
    ],
)
def test_bad_submission_query_is_request_malformed(
    limited: LocalNetwork, baseline: Baseline, query: str
) -> None:
    tx = add_member_tx(limited)
    details = assert_error(
        post_msgpack(limited, tx.envelope, f"/v1/transactions?{query}"), 400, "request.malformed"
    )
    assert details["parameter"] in {"timeout_ms", "wait"}
    # Refused before admission: the transaction is not pending.
    assert_error(request(limited, "GET", f"/v1/transactions/{tx.tx_id.hex()}"), 404, "not_found")


# --- a full mempool and a commit that takes too long (the stalled network) ---------------


def test_commit_timeout_then_full_mempool(stalled: LocalNetwork) -> None:
    first = add_member_tx(stalled)
    timed_out = post_msgpack(stalled, first.envelope, "/v1/transactions?wait=commit&timeout_ms=50")
    details = assert_error(timed_out, 504, "tx.commit_timeout")
    assert details == {"tx_id": first.tx_id.hex(), "status": "pending"}
    pending = request(stalled, "GET", f"/v1/transactions/{first.tx_id.hex()}")
    assert pending.status == 200 and pending.json()["status"] == "pending"
    # A resubmission while it is pending is a duplicate with that status.
    details = assert_error(post_msgpack(stalled, first.envelope), 409, "tx.duplicate")
    assert details["status"] == "pending"

    second = add_member_tx(stalled)
    accepted = post_msgpack(stalled, second.envelope)
    assert accepted.status == 202, accepted.body
    third = add_member_tx(stalled)
    full = post_msgpack(stalled, third.envelope)
    assert_error(full, 429, "mempool.full")
    retry_after = full.headers.get("Retry-After")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1
    # A batch to a full mempool is refused whole, before it is read (overload must be
    # cheap to refuse), with the same code and Retry-After.
    batch = post_msgpack(
        stalled, msgpack.packb([third.envelope], use_bin_type=True), "/v1/transactions/batch"
    )
    assert_error(batch, 429, "mempool.full")
    assert batch.headers.get("Retry-After") == retry_after
    status = request(stalled, "GET", "/v1/status").json()
    assert status["mempool"]["size"] == STALLED_TXS_MAX
    assert_error(request(stalled, "GET", f"/v1/transactions/{third.tx_id.hex()}"), 404, "not_found")

    # The timed-out transaction stayed pending and commits with the next block.
    deadline = time.monotonic() + COMMIT_POLL_TIMEOUT_S
    while True:
        looked_up = request(stalled, "GET", f"/v1/transactions/{first.tx_id.hex()}").json()
        if looked_up["status"] == "committed" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert looked_up["status"] == "committed"
    assert looked_up["receipt"]["ok"] is True
    second_now = request(stalled, "GET", f"/v1/transactions/{second.tx_id.hex()}").json()
    assert second_now["status"] == "committed"
    assert request(stalled, "GET", "/v1/health").status == 200


# --- after all of the above --------------------------------------------------------------


def test_node_still_serves_with_its_data_intact(limited: LocalNetwork, baseline: Baseline) -> None:
    """Last in the file on purpose: runs after the barrage against the same node."""
    health = request(limited, "GET", "/v1/health")
    assert health.status == 200 and health.json() == {"ok": True}
    assert limited.processes[0].exit_code() is None
    tx_id = baseline.tx.tx_id.hex()
    looked_up = request(limited, "GET", f"/v1/transactions/{tx_id}")
    assert looked_up.status == 200
    record = looked_up.json()
    assert record["status"] == "committed"
    assert record["height"] == baseline.committed["height"]
    assert record["index"] == baseline.committed["index"]
    assert record["receipt"] == baseline.committed["receipt"]
    assert bytes.fromhex(record["envelope"]) == baseline.tx.envelope
    block = request(limited, "GET", f"/v1/blocks/{baseline.committed['height']}").json()
    assert block["hash"] == baseline.block_hash
    status = request(limited, "GET", "/v1/status").json()
    assert status["height"] >= baseline.height
    # It still admits and commits new work.
    tx = add_member_tx(limited)
    answer = post_msgpack(limited, tx.envelope, "/v1/transactions?wait=commit")
    assert answer.status == 200 and answer.json()["receipt"]["ok"] is True, answer.body
    # No request of the barrage was answered 500 (a 500 is a bug, API.md).
    metrics = request(limited, "GET", "/metrics").body.decode()
    assert 'status="500"' not in metrics
    assert "internal error" not in limited.log_tail(0, 2000)
