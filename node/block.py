"""Blocks, receipts, state roots and commit certificates (PROTOCOL.md sections 4 and 6)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from consensus.quorum import commit_vote_payload, quorum_size
from contracts.runtime import encode_record
from node.crypto import DOMAIN_COMMIT, SIGNATURE_BYTES, SigningKey, verify
from node.encoding import EncodingError, canonical_packb, pack_trusted, unpackb_strict
from node.merkle import merkle_root

BLOCK_VERSION: Final = 1
HASH_BYTES: Final = 32
ZERO_HASH: Final = bytes(HASH_BYTES)
STATE_ROOT_DOMAIN: Final = b"chancery/state/v1\n"
ENVELOPES_DIGEST_DOMAIN: Final = b"chancery/envelopes/v1\n"

HEADER_FIELD_TYPES: Final[dict[str, type]] = {
    "chain_id": str,
    "height": int,
    "prev_hash": bytes,
    "proposer": int,
    "receipts_root": bytes,
    "state_root": bytes,
    "timestamp": int,
    "tx_root": bytes,
    "validators_hash": bytes,
    "version": int,
    "view": int,
}
HEADER_HASH_FIELDS: Final = (
    "prev_hash",
    "receipts_root",
    "state_root",
    "tx_root",
    "validators_hash",
)


class BlockFormatError(ValueError):
    """Bytes that are not a well-formed header, receipt or certificate."""


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """A block header; `encode()` is the canonical msgpack that `block_hash` hashes."""

    chain_id: str
    height: int
    prev_hash: bytes
    proposer: int
    receipts_root: bytes
    state_root: bytes
    timestamp: int
    tx_root: bytes
    validators_hash: bytes
    version: int
    view: int

    def encode(self) -> bytes:
        # Fields are declared in sorted key order, so the dict below is already canonical.
        return pack_trusted(
            {
                "chain_id": self.chain_id,
                "height": self.height,
                "prev_hash": self.prev_hash,
                "proposer": self.proposer,
                "receipts_root": self.receipts_root,
                "state_root": self.state_root,
                "timestamp": self.timestamp,
                "tx_root": self.tx_root,
                "validators_hash": self.validators_hash,
                "version": self.version,
                "view": self.view,
            }
        )

    def block_hash(self) -> bytes:
        return sha256(self.encode())

    def to_json(self) -> dict[str, Any]:
        return {
            name: (getattr(self, name).hex() if name in HEADER_HASH_FIELDS else getattr(self, name))
            for name in HEADER_FIELD_TYPES
        }

    @classmethod
    def decode(cls, data: bytes) -> BlockHeader:
        """Raises: BlockFormatError when the bytes are not a canonical header."""
        try:
            raw = unpackb_strict(data, require_canonical=True)
        except EncodingError as exc:
            raise BlockFormatError(f"header: {exc}") from None
        return cls.from_fields(raw)

    @classmethod
    def from_fields(cls, raw: Any) -> BlockHeader:
        """Raises: BlockFormatError on missing/extra fields or wrong types."""
        if not isinstance(raw, dict) or raw.keys() != HEADER_FIELD_TYPES.keys():
            raise BlockFormatError("header must have exactly the protocol's fields")
        for name, expected in HEADER_FIELD_TYPES.items():
            if not isinstance(raw[name], expected) or isinstance(raw[name], bool):
                raise BlockFormatError(f"header field {name!r} must be {expected.__name__}")
        for name in HEADER_HASH_FIELDS:
            if len(raw[name]) != HASH_BYTES:
                raise BlockFormatError(f"header field {name!r} must be 32 bytes")
        return cls(**raw)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> BlockHeader:
        """Raises: BlockFormatError when a field is missing, unknown or not of its JSON type."""
        if not isinstance(obj, dict) or obj.keys() != HEADER_FIELD_TYPES.keys():
            raise BlockFormatError("header JSON must have exactly the protocol's fields")
        try:
            fields = {
                name: (bytes.fromhex(obj[name]) if name in HEADER_HASH_FIELDS else obj[name])
                for name in HEADER_FIELD_TYPES
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise BlockFormatError(f"header JSON: {exc}") from None
        return cls.from_fields(fields)


@dataclass(frozen=True, slots=True)
class ContractEvent:
    """An event a contract emitted: `{"data": map, "name": str}` in a receipt."""

    name: str
    data: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {"data": self.data, "name": self.name}


@dataclass(frozen=True, slots=True)
class Receipt:
    """The outcome of one transaction; `encode()` is the leaf of `receipts_root`."""

    tx_id: bytes
    ok: bool
    error: str | None
    result: Any
    events: tuple[ContractEvent, ...]

    def encode(self) -> bytes:
        # The receipt is built by the node and the contracts, like a state record: the C
        # encoder with sorted keys writes its canonical bytes (contracts/runtime.py).
        return encode_record(
            {
                "error": self.error,
                "events": [event.to_wire() for event in self.events],
                "ok": self.ok,
                "result": self.result,
                "tx_id": self.tx_id,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Receipt:
        """Raises: BlockFormatError when the bytes are not a receipt."""
        try:
            raw = unpackb_strict(data)
            events = tuple(ContractEvent(name=e["name"], data=e["data"]) for e in raw["events"])
            return cls(raw["tx_id"], raw["ok"], raw["error"], raw["result"], events)
        except (EncodingError, KeyError, TypeError) as exc:
            raise BlockFormatError(f"receipt: {exc}") from None


def receipt_to_json(receipt: Receipt) -> dict[str, Any]:
    """The receipt as the HTTP API shows it (bytes as hex, recursively)."""
    return {
        "tx_id": receipt.tx_id.hex(),
        "ok": receipt.ok,
        "error": receipt.error,
        "result": to_json_value(receipt.result),
        "events": [{"name": e.name, "data": to_json_value(e.data)} for e in receipt.events],
    }


def to_json_value(value: Any) -> Any:
    """msgpack value -> JSON value: bytes become lowercase hex."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {key: to_json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(item) for item in value]
    return value


def compute_tx_root(tx_ids: Sequence[bytes]) -> bytes:
    return merkle_root(tx_ids)


def compute_receipts_root(receipt_bytes: Sequence[bytes]) -> bytes:
    return merkle_root(receipt_bytes)


def encode_write_set(writes: Mapping[bytes, bytes | None]) -> bytes:
    """`W_h`: canonical msgpack of `[key, value|nil]` pairs sorted by key."""
    return pack_trusted([[key, writes[key]] for key in sorted(writes)])


def next_state_root(previous_state_root: bytes, writes: Mapping[bytes, bytes | None]) -> bytes:
    """`state_root_h = SHA-256(domain || state_root_{h-1} || SHA-256(W_h))`."""
    return state_root_after(previous_state_root, encode_write_set(writes))


def state_root_after(previous_state_root: bytes, write_set: bytes) -> bytes:
    """The state root after a block whose encoded write set `W_h` is `write_set`."""
    return sha256(STATE_ROOT_DOMAIN + previous_state_root + sha256(write_set))


def decode_write_set(data: bytes) -> dict[bytes, bytes | None]:
    """The writes of an encoded `W_h`, refusing anything `encode_write_set` would not produce.

    Raises:
        BlockFormatError: not a list of `[bin, bin|nil]` pairs strictly sorted by key.
    """
    try:
        pairs = unpackb_strict(data)
    except EncodingError as exc:
        raise BlockFormatError(f"write set: {exc}") from None
    if not isinstance(pairs, list):
        raise BlockFormatError("write set must be a list")
    writes: dict[bytes, bytes | None] = {}
    previous_key: bytes | None = None
    for pair in pairs:
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and isinstance(pair[0], bytes)
            and (pair[1] is None or isinstance(pair[1], bytes))
        ):
            raise BlockFormatError("write set entries are [bin, bin|nil]")
        key, value = pair
        if previous_key is not None and key <= previous_key:
            raise BlockFormatError("write set keys must be strictly increasing")
        writes[key] = value
        previous_key = key
    return writes


def envelopes_digest(envelopes: Iterable[bytes]) -> bytes:
    """A node-local digest of a block's envelopes, signatures included.

    No header field covers the signatures (`tx_root` is over body hashes), so peers compare
    this digest to agree on them during state transfer; it is not part of PROTOCOL.md.
    """
    return sha256(ENVELOPES_DIGEST_DOMAIN + b"".join(sha256(e) for e in envelopes))


def compute_validators_hash(public_keys: Iterable[bytes]) -> bytes:
    return sha256(canonical_packb(list(public_keys)))


def sign_commit_vote(key: SigningKey, chain_id: str, height: int, block_hash: bytes) -> bytes:
    return key.sign(DOMAIN_COMMIT, commit_vote_payload(chain_id, height, block_hash))


@dataclass(frozen=True, slots=True)
class CommitCertificate:
    """2f+1 validators' commit votes on one block; `signatures` sorted by validator index."""

    block_hash: bytes
    height: int
    signatures: tuple[tuple[int, bytes], ...]

    def to_wire(self) -> dict[str, Any]:
        return {
            "block_hash": self.block_hash,
            "height": self.height,
            "signatures": [[index, sig] for index, sig in self.signatures],
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "block_hash": self.block_hash.hex(),
            "signatures": [[index, sig.hex()] for index, sig in self.signatures],
        }

    @classmethod
    def from_wire(cls, raw: Any) -> CommitCertificate:
        """Raises: BlockFormatError when the structure is not a certificate."""
        if not isinstance(raw, dict) or raw.keys() != {"block_hash", "height", "signatures"}:
            raise BlockFormatError("certificate must have block_hash, height, signatures")
        block_hash, height, signatures = raw["block_hash"], raw["height"], raw["signatures"]
        if not isinstance(block_hash, bytes) or len(block_hash) != HASH_BYTES:
            raise BlockFormatError("certificate block_hash must be bin(32)")
        if not isinstance(height, int) or isinstance(height, bool) or height < 0:
            raise BlockFormatError("certificate height must be a non-negative integer")
        if not isinstance(signatures, list):
            raise BlockFormatError("certificate signatures must be a list")
        pairs = []
        for entry in signatures:
            ok = (
                isinstance(entry, list)
                and len(entry) == 2
                and isinstance(entry[0], int)
                and not isinstance(entry[0], bool)
                and isinstance(entry[1], bytes)
            )
            if not ok:
                raise BlockFormatError("certificate signature entries are [int, bin]")
            pairs.append((entry[0], entry[1]))
        return cls(block_hash, height, tuple(pairs))

    @classmethod
    def from_json(cls, obj: Any) -> CommitCertificate:
        """Raises: BlockFormatError when the JSON is not a certificate."""
        try:
            signatures = [[i, bytes.fromhex(s)] for i, s in obj["signatures"]]
            raw = {
                "block_hash": bytes.fromhex(obj["block_hash"]),
                "height": obj["height"],
                "signatures": signatures,
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BlockFormatError(f"certificate JSON: {exc}") from None
        if not isinstance(obj, dict) or len(obj) != 3:
            raise BlockFormatError("certificate JSON must have block_hash, height, signatures")
        return cls.from_wire(raw)


def certificate_problem(
    certificate: CommitCertificate,
    chain_id: str,
    block_hash: bytes,
    height: int,
    validator_keys: Sequence[bytes],
) -> str | None:
    """Why `certificate` does not prove `block_hash` at `height`, or None when it does.

    Every signature must be a valid vote of a distinct validator (a certificate carrying a
    bad signature is refused whole: honest nodes never build one), and there must be 2f+1.
    """
    if certificate.block_hash != block_hash:
        return "certificate names a different block hash"
    if certificate.height != height:
        return "certificate names a different height"
    payload = commit_vote_payload(chain_id, height, block_hash)
    signers: set[int] = set()
    for index, signature in certificate.signatures:
        if index in signers or not 0 <= index < len(validator_keys):
            return f"signature index {index} is repeated or not a validator"
        if len(signature) != SIGNATURE_BYTES:
            return f"signature of validator {index} has the wrong length"
        if not verify(validator_keys[index], DOMAIN_COMMIT, payload, signature):
            return f"signature of validator {index} does not verify"
        signers.add(index)
    needed = quorum_size(len(validator_keys))
    if len(signers) < needed:
        return f"certificate has {len(signers)} signatures, needs {needed}"
    return None


@dataclass(frozen=True, slots=True)
class CommittedBlock:
    """A final block as stored and exported: header, envelopes, receipts and certificate."""

    header: BlockHeader
    header_bytes: bytes
    block_hash: bytes
    tx_ids: tuple[bytes, ...]
    envelopes: tuple[bytes, ...]
    receipts: tuple[bytes, ...]
    commit: CommitCertificate

    @property
    def height(self) -> int:
        return self.header.height

    def to_export(self) -> dict[str, Any]:
        """The msgpack map of the block export stream (API.md `GET /v1/blocks`)."""
        return {
            "commit": self.commit.to_wire(),
            "header": self.header_bytes,
            "receipts": list(self.receipts),
            "txs": list(self.envelopes),
        }
