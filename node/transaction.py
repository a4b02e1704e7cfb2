"""Transaction envelopes and bodies (PROTOCOL.md section 3): decoded once, at the edge.

`decode_envelope` turns untrusted bytes into a typed `Transaction` or raises a
`ChanceryError` with the precise code; nothing past it re-parses client bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from node.crypto import DOMAIN_TX, PUBLIC_KEY_BYTES, SIGNATURE_BYTES, SigningKey
from node.encoding import EncodingError, canonical_packb, pack_trusted, unpackb_strict
from node.errors import ChanceryError

ENVELOPE_FIELDS: Final = frozenset({"body", "signature", "signer"})
BODY_FIELD_TYPES: Final[dict[str, type]] = {
    "args": dict,
    "chain_id": str,
    "contract": str,
    "method": str,
    "nonce": int,
    "timestamp": int,
}
NONCE_MAX: Final = 2**64 - 1
TIMESTAMP_MS_MAX: Final = 2**63 - 1
NAME_CHARS_MAX: Final = 64


@dataclass(frozen=True, slots=True)
class TransactionBody:
    """The signed part of a transaction."""

    args: dict[str, Any]
    chain_id: str
    contract: str
    method: str
    nonce: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class Transaction:
    """An admitted-shape transaction: the exact body bytes signed, and their decoding.

    `envelope` is the canonical envelope encoding stored in blocks; `body_bytes` is what the
    client signed, never re-encoded. `args_checked` records that the arguments already
    passed the built-in contracts' checks at admission (node/envelope_check.py); it is
    knowledge about this object, not part of the transaction, so equality ignores it.
    """

    tx_id: bytes
    envelope: bytes
    body_bytes: bytes
    body: TransactionBody
    signer: bytes
    signature: bytes
    args_checked: bool = field(default=False, compare=False)

    @property
    def size_bytes(self) -> int:
        return len(self.envelope)


def compute_tx_id(body_bytes: bytes) -> bytes:
    return hashlib.sha256(body_bytes).digest()


def peek_tx_id(envelope_bytes: bytes) -> bytes | None:
    """The tx_id of an envelope without decoding its body, or None if it is not an envelope.

    Lets a replica recognise transactions it already holds (verified) in a proposal without
    paying for a full decode; anything unknown still goes through `decode_envelope`.
    """
    try:
        raw = msgpack.unpackb(envelope_bytes, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    body = raw.get("body") if isinstance(raw, dict) else None
    return compute_tx_id(body) if isinstance(body, bytes) else None


def encode_envelope(body_bytes: bytes, signer: bytes, signature: bytes) -> bytes:
    """The canonical envelope: keys `body`, `signature`, `signer` in that (sorted) order."""
    return pack_trusted({"body": body_bytes, "signature": signature, "signer": signer})


def _malformed(message: str) -> ChanceryError:
    return ChanceryError("tx.malformed", message)


def decode_body(body_bytes: bytes) -> TransactionBody:
    """Decode and type-check a body: exactly six fields, canonical encoding, no floats.

    Raises:
        ChanceryError: `tx.malformed` naming the field that is wrong.
    """
    try:
        raw = unpackb_strict(body_bytes, require_canonical=True)
    except EncodingError as exc:
        raise _malformed(f"body: {exc}") from None
    if not isinstance(raw, dict):
        raise _malformed("body is not a map")
    missing = BODY_FIELD_TYPES.keys() - raw.keys()
    if missing:
        raise _malformed(f"body is missing field(s) {sorted(missing)}")
    extra = raw.keys() - BODY_FIELD_TYPES.keys()
    if extra:
        raise _malformed(f"body has unknown field(s) {sorted(extra)}")
    for name, expected in BODY_FIELD_TYPES.items():
        value = raw[name]
        if not isinstance(value, expected) or isinstance(value, bool):
            raise _malformed(f"body field {name!r} must be {expected.__name__}")
    if not 0 <= raw["nonce"] <= NONCE_MAX:
        raise _malformed("body field 'nonce' must be in 0 .. 2**64-1")
    if not 0 <= raw["timestamp"] <= TIMESTAMP_MS_MAX:
        raise _malformed("body field 'timestamp' must be a non-negative ms timestamp")
    for name in ("contract", "method"):
        if not 0 < len(raw[name]) <= NAME_CHARS_MAX:
            raise _malformed(f"body field {name!r} must be 1..{NAME_CHARS_MAX} characters")
    return TransactionBody(**raw)


def decode_envelope(envelope_bytes: bytes) -> Transaction:
    """Decode an envelope and its body. Does not check the signature or the chain.

    Raises:
        ChanceryError: `tx.malformed` for any decoding, field or type problem.
    """
    return build_transaction(*split_envelope(envelope_bytes))


def split_envelope(envelope_bytes: bytes) -> tuple[bytes, bytes, bytes]:
    """`(body, signer, signature)` of an envelope, type-checked; the body is not decoded.

    Enough for a transaction whose body a commit certificate already vouches for.

    Raises:
        ChanceryError: `tx.malformed` for any decoding, field or type problem.
    """
    try:
        raw = unpackb_strict(envelope_bytes)
    except EncodingError as exc:
        raise _malformed(f"envelope: {exc}") from None
    if not isinstance(raw, dict):
        raise _malformed("envelope is not a map")
    if raw.keys() != ENVELOPE_FIELDS:
        raise _malformed(f"envelope must have exactly the fields {sorted(ENVELOPE_FIELDS)}")
    body_bytes, signer, signature = raw["body"], raw["signer"], raw["signature"]
    _check_envelope_parts(body_bytes, signer, signature)
    return body_bytes, signer, signature


def _check_envelope_parts(body_bytes: Any, signer: Any, signature: Any) -> None:
    if not isinstance(body_bytes, bytes):
        raise _malformed("envelope field 'body' must be bin")
    if not isinstance(signer, bytes) or len(signer) != PUBLIC_KEY_BYTES:
        raise _malformed("envelope field 'signer' must be bin(32)")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise _malformed("envelope field 'signature' must be bin(64)")


def build_transaction(body_bytes: Any, signer: Any, signature: Any) -> Transaction:
    """Type-check the three envelope parts and decode the body.

    Raises:
        ChanceryError: `tx.malformed` naming the wrong part.
    """
    _check_envelope_parts(body_bytes, signer, signature)
    body = decode_body(body_bytes)
    return Transaction(
        tx_id=compute_tx_id(body_bytes),
        envelope=encode_envelope(body_bytes, signer, signature),
        body_bytes=body_bytes,
        body=body,
        signer=signer,
        signature=signature,
    )


def encode_body(
    chain_id: str, contract: str, method: str, args: dict[str, Any], nonce: int, timestamp: int
) -> bytes:
    """The canonical body bytes a client signs."""
    return canonical_packb(
        {
            "args": args,
            "chain_id": chain_id,
            "contract": contract,
            "method": method,
            "nonce": nonce,
            "timestamp": timestamp,
        }
    )


def sign_transaction(
    key: SigningKey,
    chain_id: str,
    contract: str,
    method: str,
    args: dict[str, Any],
    nonce: int,
    timestamp: int,
) -> Transaction:
    """Build and sign a transaction (client side). `nonce` and `timestamp` come from the caller."""
    body_bytes = encode_body(chain_id, contract, method, args, nonce, timestamp)
    signature = key.sign(DOMAIN_TX, body_bytes)
    return build_transaction(body_bytes, key.public_key, signature)
