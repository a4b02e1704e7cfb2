"""Tests for node.transaction: envelopes and bodies (PROTOCOL.md section 3)."""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.crypto import DOMAIN_TX, SigningKey, verify
from node.encoding import canonical_packb
from node.errors import ChanceryError
from node.transaction import (
    NONCE_MAX,
    Transaction,
    decode_body,
    decode_envelope,
    encode_body,
    encode_envelope,
    sign_transaction,
)

KEY = SigningKey.from_seed(b"\x07" * 32)
CHAIN = "chancery-test"
TIMESTAMP = 1_700_000_000_000
VALID_BODY: dict[str, Any] = {
    "args": {"name": "alice", "public_key": b"\x01" * 32},
    "chain_id": CHAIN,
    "contract": "membership",
    "method": "add_member",
    "nonce": 7,
    "timestamp": TIMESTAMP,
}


def raw_pack(value: Any) -> bytes:
    """Plain msgpack in insertion order: lets a test write exactly the bytes it wants."""
    return msgpack.packb(value, use_bin_type=True)


def sorted_body(**changes: Any) -> dict[str, Any]:
    body = {**VALID_BODY, **changes}
    return {key: body[key] for key in sorted(body)}


_DEFAULT: Any = object()


def envelope_of(body_bytes: Any, signer: Any = _DEFAULT, signature: Any = _DEFAULT) -> bytes:
    return raw_pack(
        {
            "body": body_bytes,
            "signature": bytes(64) if signature is _DEFAULT else signature,
            "signer": KEY.public_key if signer is _DEFAULT else signer,
        }
    )


def malformed(data: bytes) -> str:
    """Decode `data`, expecting a tx.malformed refusal; returns its message."""
    with pytest.raises(ChanceryError) as info:
        decode_envelope(data)
    assert info.value.code == "tx.malformed"
    assert info.value.http_status == 400
    return info.value.message


def signed() -> Transaction:
    body = VALID_BODY
    return sign_transaction(
        KEY,
        body["chain_id"],
        body["contract"],
        body["method"],
        body["args"],
        body["nonce"],
        body["timestamp"],
    )


# --- the happy path -------------------------------------------------------------------------


def test_sign_then_decode_round_trip() -> None:
    tx = signed()
    decoded = decode_envelope(tx.envelope)
    assert decoded == tx
    assert decoded.body.args == {"name": "alice", "public_key": b"\x01" * 32}
    assert decoded.body.chain_id == CHAIN
    assert decoded.body.contract == "membership"
    assert decoded.body.method == "add_member"
    assert decoded.body.nonce == 7
    assert decoded.body.timestamp == TIMESTAMP
    assert decoded.signer == KEY.public_key
    assert decoded.size_bytes == len(tx.envelope)


def test_body_bytes_are_canonical_and_signed_under_the_tx_domain() -> None:
    tx = signed()
    assert tx.body_bytes == canonical_packb(VALID_BODY)
    assert list(msgpack.unpackb(tx.body_bytes, raw=False)) == [
        "args",
        "chain_id",
        "contract",
        "method",
        "nonce",
        "timestamp",
    ]
    assert verify(KEY.public_key, DOMAIN_TX, tx.body_bytes, tx.signature)
    assert tx.signature == KEY.sign(b"chancery/tx/v1\n", tx.body_bytes)


def test_tx_id_is_sha256_of_the_body_bytes() -> None:
    tx = signed()
    assert tx.tx_id == hashlib.sha256(tx.body_bytes).digest()
    assert tx.tx_id != hashlib.sha256(tx.envelope).digest()
    other = sign_transaction(
        KEY, CHAIN, "membership", "add_member", VALID_BODY["args"], 8, TIMESTAMP
    )
    assert other.tx_id != tx.tx_id


def test_envelope_is_the_canonical_three_field_map() -> None:
    tx = signed()
    expected = (
        b"\x83"
        + b"\xa4body"
        + raw_pack(tx.body_bytes)
        + b"\xa9signature\xc4\x40"
        + tx.signature
        + b"\xa6signer\xc4\x20"
        + tx.signer
    )
    assert tx.envelope == expected
    assert encode_envelope(tx.body_bytes, tx.signer, tx.signature) == expected


def test_unsorted_envelope_decodes_and_is_stored_canonically() -> None:
    tx = signed()
    unsorted = raw_pack({"signer": tx.signer, "signature": tx.signature, "body": tx.body_bytes})
    decoded = decode_envelope(unsorted)
    assert decoded.tx_id == tx.tx_id
    assert decoded.envelope == tx.envelope != unsorted


def test_nonce_extremes_accepted() -> None:
    assert NONCE_MAX == 2**64 - 1
    for nonce in (0, 2**64 - 1):
        body = encode_body(CHAIN, "membership", "add_member", {}, nonce, TIMESTAMP)
        assert decode_envelope(envelope_of(body)).body.nonce == nonce


def test_decode_does_not_check_the_signature() -> None:
    tx = decode_envelope(envelope_of(canonical_packb(VALID_BODY), signature=b"\x00" * 64))
    assert not verify(tx.signer, DOMAIN_TX, tx.body_bytes, tx.signature)


# --- envelope refusals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", b"\xff\xff", b"not msgpack at all", b"\x81\xa4bod"],
    ids=["empty", "reserved", "two-ints", "text", "truncated"],
)
def test_not_msgpack(data: bytes) -> None:
    assert "envelope" in malformed(data)


@pytest.mark.parametrize("value", [[1, 2, 3], "body", b"body", 5, None, True])
def test_not_a_map(value: Any) -> None:
    assert "not a map" in malformed(raw_pack(value))


def test_missing_envelope_field() -> None:
    body = canonical_packb(VALID_BODY)
    for drop in ("body", "signature", "signer"):
        fields = {"body": body, "signature": bytes(64), "signer": KEY.public_key}
        del fields[drop]
        assert "exactly the fields" in malformed(raw_pack(fields))


def test_extra_envelope_field() -> None:
    fields = {
        "body": canonical_packb(VALID_BODY),
        "signature": bytes(64),
        "signer": KEY.public_key,
        "tip": 1,
    }
    assert "exactly the fields" in malformed(raw_pack(fields))


@pytest.mark.parametrize("signer", [b"", b"\x01" * 31, b"\x01" * 33, "a" * 32, 5, None])
def test_signer_not_32_bytes(signer: Any) -> None:
    assert "'signer'" in malformed(envelope_of(canonical_packb(VALID_BODY), signer=signer))


@pytest.mark.parametrize("signature", [b"", b"\x01" * 63, b"\x01" * 65, "s" * 64, [0] * 64])
def test_signature_not_64_bytes(signature: Any) -> None:
    message = malformed(envelope_of(canonical_packb(VALID_BODY), signature=signature))
    assert "'signature'" in message


@pytest.mark.parametrize("body", ["text body", 1, None, [1], {"args": {}}])
def test_body_not_bin(body: Any) -> None:
    assert "'body' must be bin" in malformed(envelope_of(body))


def test_envelope_with_float_refused() -> None:
    data = raw_pack(
        {"body": canonical_packb(VALID_BODY), "signature": 1.5, "signer": KEY.public_key}
    )
    assert "float" in malformed(data)


# --- body refusals --------------------------------------------------------------------------


def test_body_with_unsorted_keys() -> None:
    unsorted = dict(reversed(list(sorted_body().items())))
    message = malformed(envelope_of(raw_pack(unsorted)))
    assert "canonical" in message


def test_body_with_unsorted_args_keys() -> None:
    body = sorted_body(args={"public_key": b"\x01" * 32, "name": "alice"})
    assert "canonical" in malformed(envelope_of(raw_pack(body)))


def test_body_with_non_minimal_integer() -> None:
    canonical = canonical_packb(VALID_BODY)
    padded = canonical.replace(b"\xa5nonce\x07", b"\xa5nonce\xcf" + bytes(7) + b"\x07")
    assert padded != canonical
    assert "canonical" in malformed(envelope_of(padded))


def test_body_not_a_map() -> None:
    assert "body is not a map" in malformed(envelope_of(canonical_packb([1, 2])))


@pytest.mark.parametrize("field", sorted(VALID_BODY))
def test_body_missing_field(field: str) -> None:
    body = {key: value for key, value in VALID_BODY.items() if key != field}
    message = malformed(envelope_of(canonical_packb(body)))
    assert "missing" in message
    assert field in message


def test_body_extra_field() -> None:
    message = malformed(envelope_of(canonical_packb({**VALID_BODY, "fee": 1})))
    assert "unknown field" in message
    assert "fee" in message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("args", []),
        ("args", "x"),
        ("args", None),
        ("chain_id", b"chancery-test"),
        ("chain_id", 1),
        ("contract", b"membership"),
        ("contract", None),
        ("method", ["add_member"]),
        ("method", 3),
        ("nonce", True),
        ("nonce", False),
        ("nonce", "7"),
        ("nonce", b"\x07"),
        ("timestamp", None),
        ("timestamp", True),
        ("timestamp", "1700000000000"),
    ],
)
def test_body_field_with_wrong_type(field: str, value: Any) -> None:
    message = malformed(envelope_of(canonical_packb({**VALID_BODY, field: value})))
    assert f"'{field}'" in message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("nonce", -1),
        ("nonce", -(2**63)),
        ("timestamp", -1),
        ("timestamp", 2**63),
        ("contract", ""),
        ("method", ""),
        ("method", "m" * 65),
    ],
)
def test_body_field_out_of_range(field: str, value: Any) -> None:
    message = malformed(envelope_of(canonical_packb({**VALID_BODY, field: value})))
    assert f"'{field}'" in message


def test_body_64_char_method_accepted() -> None:
    body = canonical_packb({**VALID_BODY, "method": "m" * 64})
    assert decode_envelope(envelope_of(body)).body.method == "m" * 64


@pytest.mark.parametrize("args", [{"x": 1.5}, {"x": [1, {"y": 0.0}]}])
def test_float_inside_args(args: dict[str, Any]) -> None:
    body = raw_pack(sorted_body(args=args))
    assert "float" in malformed(envelope_of(body))


def test_bin_map_key_inside_args() -> None:
    body = raw_pack(sorted_body(args={b"k": 1}))
    assert "not a string" in malformed(envelope_of(body))


def test_decode_body_alone_uses_the_same_code() -> None:
    with pytest.raises(ChanceryError) as info:
        decode_body(b"\xc1")
    assert info.value.code == "tx.malformed"


# --- properties -----------------------------------------------------------------------------

arg_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.binary(max_size=33)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.fixed_dictionaries(
    {
        "args": st.dictionaries(st.text(max_size=8), arg_values, max_size=4),
        "chain_id": st.text(max_size=16),
        "contract": st.text(min_size=1, max_size=64),
        "method": st.text(min_size=1, max_size=64),
        "nonce": st.integers(0, 2**64 - 1),
        "timestamp": st.integers(0, 2**63 - 1),
    }
)


@settings(max_examples=60, deadline=None)
@given(bodies)
def test_any_valid_body_round_trips(body: dict[str, Any]) -> None:
    tx = sign_transaction(KEY, **body)
    decoded = decode_envelope(tx.envelope)
    assert decoded == tx
    assert decoded.tx_id == hashlib.sha256(canonical_packb(body)).digest()


@settings(max_examples=25, deadline=None)
@given(bodies)
def test_every_truncated_envelope_is_tx_malformed(body: dict[str, Any]) -> None:
    envelope = sign_transaction(KEY, **body).envelope
    for length in range(len(envelope)):
        malformed(envelope[:length])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_chancery_errors(data: bytes) -> None:
    try:
        decode_envelope(data)
    except ChanceryError as exc:
        assert exc.code == "tx.malformed"


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=120), st.binary(max_size=40), st.binary(max_size=70))
def test_arbitrary_parts_in_an_envelope_raise_only_chancery_errors(
    body: bytes, signer: bytes, signature: bytes
) -> None:
    try:
        tx = decode_envelope(envelope_of(body, signer=signer, signature=signature))
    except ChanceryError as exc:
        assert exc.code == "tx.malformed"
    else:
        assert tx.body_bytes == body
        assert len(tx.signer) == 32
        assert len(tx.signature) == 64


@settings(max_examples=100, deadline=None)
@given(bodies, st.integers(min_value=0), st.integers(0, 255))
def test_flipping_any_body_byte_never_crashes(body: dict[str, Any], where: int, xor: int) -> None:
    tx = sign_transaction(KEY, **body)
    mutated = bytearray(tx.body_bytes)
    mutated[where % len(mutated)] ^= xor or 1
    try:
        decoded = decode_envelope(envelope_of(bytes(mutated), tx.signer, tx.signature))
    except ChanceryError as exc:
        assert exc.code == "tx.malformed"
    else:
        assert decoded.tx_id != tx.tx_id
        assert not verify(decoded.signer, DOMAIN_TX, decoded.body_bytes, decoded.signature)


def test_peek_tx_id_matches_the_full_decode_and_refuses_non_envelopes() -> None:
    from node.transaction import peek_tx_id

    key = SigningKey.generate()
    tx = sign_transaction(key, "c", "membership", "add_member", {"name": "x"}, 7, 1)
    assert peek_tx_id(tx.envelope) == tx.tx_id == decode_envelope(tx.envelope).tx_id
    assert peek_tx_id(b"\xc1") is None  # not msgpack
    assert peek_tx_id(msgpack.packb([1, 2])) is None  # not a map
    assert peek_tx_id(msgpack.packb({"body": "text"})) is None  # body not bin
