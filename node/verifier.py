"""The offline verifier of Chancery proof bundles, in one module an auditor can read.

It proves, with no node online and nothing but the genesis file, that a transaction was
committed and what its receipt says (PROTOCOL.md section 8), and for evidence bundles
(CONTRACTS.md "evidence") that a file's SHA-256 was anchored, by whom and when, and for
draw bundles (CONTRACTS.md "lottery") that the seed and winners follow from the sealed list
and the revealed secrets.

It depends only on the standard library, `cryptography` (Ed25519) and `msgpack`, and on
nothing else in this project: every rule it relies on is written out again here, from the
protocol, so that reading this file is enough to know what a passing report means.

* Encoding (section 1): canonical msgpack; maps with keys sorted by their UTF-8 bytes,
  `bin` for bytes, no floats, no ext types, no repeated keys. The envelope (as nodes store
  it), and the body and the receipt wherever they are decoded, must each be exactly the
  canonical encoding of what they decode to, so that no two byte strings mean one thing.
* Signatures (section 2): Ed25519 over `DOMAIN || payload`.
* Blocks (section 4): `block_hash = SHA-256(canonical header)`; `validators_hash` is
  SHA-256 of the canonical list of validator keys; the genesis block's state root commits
  to the membership records that genesis.json declares.
* Merkle trees (section 5): RFC 6962 with SHA-256, audit paths checked with the RFC 9162
  section 2.1.3.2 algorithm.
* Certificates (section 6): 2f+1 valid commit votes of distinct genesis validators over
  `[chain_id, height, block_hash]`.

Bundle JSON is read strictly: lowercase hex only, integers only, no repeated keys, no
unknown fields, so that changing any value of a bundle makes a named check fail.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "FILE_CHUNK_BYTES",
    "PROOF_FORMAT",
    "BundleFormatError",
    "CheckFailed",
    "GenesisFormatError",
    "TrustRoot",
    "VerificationReport",
    "hash_file",
    "read_genesis",
    "root_from_audit_path",
    "verify_bundle",
    "verify_bundle_bytes",
]

PROOF_FORMAT: Final = "chancery-proof/1"
DOMAIN_TX: Final = b"chancery/tx/v1\n"
DOMAIN_COMMIT: Final = b"chancery/commit/v1\n"
STATE_ROOT_DOMAIN: Final = b"chancery/state/v1\n"
BLOCK_VERSION: Final = 1
HASH_BYTES: Final = 32
PUBLIC_KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
ZERO_HASH: Final = bytes(HASH_BYTES)
EMPTY_TREE_HASH: Final = hashlib.sha256(b"").digest()
UINT64_LIMIT: Final = 2**64
STRUCTURE_DEPTH_MAX: Final = 32
# Files are hashed in chunks of this size, so a file of any size needs constant memory.
FILE_CHUNK_BYTES: Final = 1024 * 1024
# A bundle holds one envelope (at most 1 MiB, 2 MiB as hex) plus a few KiB; far above that
# is not a bundle, and the verifier refuses it before parsing.
BUNDLE_BYTES_MAX: Final = 64 * 1024 * 1024
GENESIS_BYTES_MAX: Final = 64 * 1024 * 1024

HEADER_HASH_FIELDS: Final = (
    "prev_hash",
    "receipts_root",
    "state_root",
    "tx_root",
    "validators_hash",
)
HEADER_INT_FIELDS: Final = ("height", "proposer", "timestamp", "version", "view")
HEADER_FIELDS: Final = tuple(sorted(("chain_id", *HEADER_HASH_FIELDS, *HEADER_INT_FIELDS)))
BUNDLE_FIELDS: Final = frozenset(
    {"format", "chain_id", "genesis_hash", "tx", "receipt", "block", "tx_proof"}
    | {"receipt_proof", "commit"}
)
BUNDLE_OPTIONAL_FIELDS: Final = frozenset({"evidence", "batch", "lottery"})
EVIDENCE_COMMON_FIELDS: Final = frozenset(
    {"contract", "method", "org", "signer", "height", "timestamp", "kind", "meta", "tx_id"}
)
EVIDENCE_METHOD_FIELDS: Final = {
    "anchor": frozenset({"hash", "subject"}),
    "anchor_batch": frozenset({"root", "count"}),
}
LOTTERY_FIELDS: Final = frozenset(
    {"contract", "project_id", "sponsor_org", "notary_org", "winners_count", "count"}
    | {"participants_root", "sealed_height", "sealed_block_hash", "sponsor_commit"}
    | {"notary_commit", "sponsor_secret", "notary_secret", "seed", "winners", "seal_proof"}
)
LOTTERY_HASH_FIELDS: Final = (
    "participants_root",
    "sealed_block_hash",
    "sponsor_commit",
    "notary_commit",
    "sponsor_secret",
    "notary_secret",
    "seed",
)
LOTTERY_SEED_DOMAIN: Final = b"chancery/lottery/v1\n"
LOTTERY_WINNERS_MAX: Final = 10_000
BODY_FIELDS: Final = frozenset({"args", "chain_id", "contract", "method", "nonce", "timestamp"})
RECEIPT_FIELDS: Final = frozenset({"error", "events", "ok", "result", "tx_id"})

_LOWER_HEX: Final = re.compile(r"(?:[0-9a-f]{2})*")


class BundleFormatError(ValueError):
    """A bundle that is not JSON of the shape section 8 (and CONTRACTS.md) define."""


class GenesisFormatError(ValueError):
    """A genesis file that is not JSON of the shape PROTOCOL.md section 7 defines."""


class CheckFailed(Exception):
    """A check that did not pass; the message says what did not match."""


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- the report --------------------------------------------------------------------------


@dataclass
class VerificationReport:
    """The outcome of every check, in order: `(name, passed, detail)`; `ok` if all passed."""

    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(passed for _, passed, _ in self.checks)

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        self.checks.append((name, passed, detail))
        return passed

    def failed(self) -> list[str]:
        return [name for name, passed, _ in self.checks if not passed]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [{"check": n, "ok": p, "detail": d} for n, p, d in self.checks],
        }


# --- canonical msgpack --------------------------------------------------------------------


def _canonical(value: Any, depth: int) -> Any:
    """`value` with every map's keys in UTF-8 byte order; refuses what the protocol forbids."""
    if depth > STRUCTURE_DEPTH_MAX:
        raise ValueError("nested too deeply")
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise ValueError("a map key is not a string")
        ordered = sorted(value, key=lambda key: key.encode("utf-8"))
        return {key: _canonical(value[key], depth + 1) for key in ordered}
    if isinstance(value, list):
        return [_canonical(item, depth + 1) for item in value]
    if value is None or isinstance(value, bool | int | str | bytes):
        return value
    raise ValueError(f"{type(value).__name__} is not allowed")


def _repeated_key_refused(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("a map has a repeated key")
    return result


def _ext_refused(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack ext type {code} is not allowed")


def _unpack_canonical(data: bytes, what: str) -> Any:
    """Decode msgpack that must be exactly the canonical encoding of its value.

    Raises:
        CheckFailed: naming `what`, when it does not decode or is not canonical.
    """
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            object_pairs_hook=_repeated_key_refused,
            ext_hook=_ext_refused,
            timestamp=0,
        )
        canonical = msgpack.packb(_canonical(value, 0), use_bin_type=True)
    except (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException) as exc:
        raise CheckFailed(f"{what} is not valid msgpack: {exc}") from None
    if canonical != data:
        raise CheckFailed(f"{what} is not in canonical form")
    return value


def _json_value(value: Any) -> Any:
    """A msgpack value as JSON shows it: bytes as lowercase hex, recursively."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_value(item) for item in value]
    return value


# --- signatures, Merkle paths, quorums ------------------------------------------------------


def _signature_valid(public_key: bytes, domain: bytes, payload: bytes, signature: bytes) -> bool:
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, domain + payload)
    except (InvalidSignature, ValueError):
        return False
    return True


def root_from_audit_path(leaf: bytes, index: int, size: int, path: tuple[bytes, ...]) -> bytes:
    """The RFC 6962 root implied by raw `leaf` data at `index` of `size` and its audit path.

    RFC 9162 section 2.1.3.2: leaf hash `SHA-256(0x00 || leaf)`, node `SHA-256(0x01 || l || r)`.

    Raises:
        CheckFailed: when the index is not below the size, or the path is too long or short.
    """
    if not 0 <= index < size:
        raise CheckFailed(f"leaf index {index} is not below tree size {size}")
    fn, sn = index, size - 1
    r = _sha256(b"\x00" + leaf)
    for p in path:
        if sn == 0:
            raise CheckFailed(f"audit path too long for leaf {index} of {size}")
        if fn & 1 or fn == sn:
            r = _sha256(b"\x01" + p + r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = _sha256(b"\x01" + r + p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise CheckFailed(f"audit path too short for leaf {index} of {size}")
    return r


def quorum_size(validator_count: int) -> int:
    """2f+1, where f = floor((n-1)/3)."""
    return 2 * ((validator_count - 1) // 3) + 1


def commit_vote_payload(chain_id: str, height: int, block_hash: bytes) -> bytes:
    """What a commit vote signs after `chancery/commit/v1\\n`: msgpack `[chain_id, height,
    block_hash]` (a list has no keys to order, so this is already canonical)."""
    return msgpack.packb([chain_id, height, block_hash], use_bin_type=True)


def encode_header(header: dict[str, Any]) -> bytes:
    """The canonical header bytes that `block_hash` hashes (fields in sorted key order)."""
    return msgpack.packb({name: header[name] for name in HEADER_FIELDS}, use_bin_type=True)


# --- the genesis file ---------------------------------------------------------------------


@dataclass(frozen=True)
class TrustRoot:
    """What the auditor trusts, all taken from genesis.json: the chain and its validators."""

    chain_id: str
    genesis_hash: bytes
    validator_keys: tuple[bytes, ...]

    @property
    def validators_hash(self) -> bytes:
        return validators_hash(self.validator_keys)


def validators_hash(validator_keys: tuple[bytes, ...]) -> bytes:
    """SHA-256 of the canonical msgpack list of the validators' 32-byte public keys."""
    return _sha256(msgpack.packb(list(validator_keys), use_bin_type=True))


def _genesis_require(condition: bool, message: str) -> None:
    if not condition:
        raise GenesisFormatError(message)


def _genesis_key(value: Any, where: str) -> bytes:
    _genesis_require(isinstance(value, str) and len(value) == 64, f"{where}: not a 64-hex key")
    try:
        key = bytes.fromhex(value)
    except ValueError:
        raise GenesisFormatError(f"{where}: not hex") from None
    _genesis_require(len(key) == PUBLIC_KEY_BYTES, f"{where}: not a 32-byte key")
    return key


def _membership_record(value: Any) -> bytes:
    return msgpack.packb(_canonical(value, 0), use_bin_type=True)


def _genesis_writes(orgs: list[dict[str, Any]], params: Any) -> dict[bytes, bytes]:
    """The genesis state: the `membership` contract's records for the declared orgs, and
    the file's `params` object under `chain/params`.

    Keys are `membership/` + `orgs`, `org/<id>`, `org_key/<id>/<n as 8 bytes>` and
    `key/<public key>`; values are canonical msgpack records (a raw key for `org_key`).
    """
    prefix = b"membership/"
    writes = {prefix + b"orgs": _membership_record([org["id"] for org in orgs])}
    writes[b"chain/params"] = _membership_record(params)
    for org in orgs:
        org_id = org["id"]
        keys = [*org["admins"], *org["members"]]
        record = {"id": org_id, "key_count": len(keys), "name": org["name"], "roles": org["roles"]}
        writes[prefix + b"org/" + org_id.encode()] = _membership_record(record)
        for position, key in enumerate(keys):
            slot = b"org_key/" + org_id.encode() + b"/" + position.to_bytes(8, "big")
            writes[prefix + slot] = key
        for admin, kind in ((True, "admins"), (False, "members")):
            for index, key in enumerate(org[kind]):
                name = f"{org_id} {'admin' if admin else 'member'} {index}"
                key_record = {
                    "active": True,
                    "added_height": 0,
                    "admin": admin,
                    "encryption_key": None,
                    "name": name,
                    "org": org_id,
                    "revoked_height": None,
                }
                writes[prefix + b"key/" + key] = _membership_record(key_record)
    return writes


def _genesis_org(raw: Any, position: int) -> dict[str, Any]:
    where = f"orgs[{position}]"
    _genesis_require(isinstance(raw, dict), f"{where} must be an object")
    fields = {"id", "name", "roles", "admins", "members"}
    _genesis_require(raw.keys() == fields, f"{where} must have exactly {sorted(fields)}")
    _genesis_require(isinstance(raw["id"], str), f"{where}.id must be a string")
    _genesis_require(isinstance(raw["name"], str), f"{where}.name must be a string")
    roles = raw["roles"]
    _genesis_require(
        isinstance(roles, list) and all(isinstance(r, str) for r in roles),
        f"{where}.roles must be a list of strings",
    )
    for kind in ("admins", "members"):
        _genesis_require(isinstance(raw[kind], list), f"{where}.{kind} must be a list")
    admins = [_genesis_key(key, f"{where}.admins") for key in raw["admins"]]
    members = [_genesis_key(key, f"{where}.members") for key in raw["members"]]
    return {
        "id": raw["id"],
        "name": raw["name"],
        "roles": roles,
        "admins": admins,
        "members": members,
    }


def _genesis_validator_key(raw: Any, position: int) -> bytes:
    where = f"validators[{position}]"
    fields = {"index", "org", "public_key"}
    _genesis_require(isinstance(raw, dict) and raw.keys() == fields, f"{where}: {sorted(fields)}")
    index = raw["index"]
    _genesis_require(_is_uint64(index) and index == position, f"{where}.index must be {position}")
    return _genesis_key(raw["public_key"], f"{where}.public_key")


def read_genesis(raw: bytes) -> TrustRoot:
    """The chain id, genesis hash and validator keys that genesis.json bytes define.

    The genesis hash is the hash of the height-0 header: no transactions (both roots are
    the empty tree's), `prev_hash` zero, proposer and view 0, `timestamp = genesis_time`,
    and `state_root = SHA-256("chancery/state/v1\\n" || zero || SHA-256(W))` where `W` is
    the canonical list of `[key, value]` genesis writes sorted by key.

    Raises:
        GenesisFormatError: naming the first field that is missing or of the wrong type.
    """
    try:
        doc = _load_json(raw, GENESIS_BYTES_MAX)
    except (ValueError, RecursionError) as exc:
        raise GenesisFormatError(f"genesis is not strict JSON: {exc}") from None
    fields = {"chain_id", "genesis_time", "orgs", "validators", "params"}
    _genesis_require(
        isinstance(doc, dict) and doc.keys() == fields,
        f"genesis must have exactly {sorted(fields)}",
    )
    _genesis_require(isinstance(doc["chain_id"], str), "chain_id must be a string")
    genesis_time = doc["genesis_time"]
    _genesis_require(_is_uint64(genesis_time), "genesis_time must be a non-negative integer (ms)")
    _genesis_require(isinstance(doc["orgs"], list), "orgs must be a list")
    _genesis_require(
        isinstance(doc["validators"], list) and len(doc["validators"]) > 0,
        "validators must be a non-empty list",
    )
    orgs = [_genesis_org(org, position) for position, org in enumerate(doc["orgs"])]
    keys = tuple(_genesis_validator_key(v, i) for i, v in enumerate(doc["validators"]))
    params = doc["params"]
    _genesis_require(
        isinstance(params, dict) and all(_is_uint64(v) for v in params.values()),
        "params must be an object of non-negative integers",
    )
    writes = _genesis_writes(orgs, params)
    write_set = msgpack.packb([[key, writes[key]] for key in sorted(writes)], use_bin_type=True)
    header = {
        "chain_id": doc["chain_id"],
        "height": 0,
        "prev_hash": ZERO_HASH,
        "proposer": 0,
        "receipts_root": EMPTY_TREE_HASH,
        "state_root": _sha256(STATE_ROOT_DOMAIN + ZERO_HASH + _sha256(write_set)),
        "timestamp": genesis_time,
        "tx_root": EMPTY_TREE_HASH,
        "validators_hash": validators_hash(keys),
        "version": BLOCK_VERSION,
        "view": 0,
    }
    return TrustRoot(doc["chain_id"], _sha256(encode_header(header)), keys)


# --- reading a bundle ---------------------------------------------------------------------


def _load_json(raw: bytes, size_max: int) -> Any:
    """Strict JSON: UTF-8 (no lone surrogates, even escaped), no repeated keys, no NaN or
    Infinity.

    Raises:
        ValueError: anything else (RecursionError for absurd nesting).
    """
    if len(raw) > size_max:
        raise ValueError(f"larger than {size_max} bytes")

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not allowed")

    value = json.loads(
        raw.decode("utf-8"),
        object_pairs_hook=_repeated_key_refused,
        parse_constant=refuse_constant,
    )
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError: a surrogate
    return value


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise BundleFormatError(message)


def _is_uint64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < UINT64_LIMIT


def _object(value: Any, where: str, fields: frozenset[str] | set[str]) -> dict[str, Any]:
    _require(isinstance(value, dict), f"{where} must be a JSON object")
    _require(
        value.keys() == fields,
        f"{where} must have exactly the fields {sorted(fields)}, has {sorted(map(str, value))}",
    )
    return value


def _hex(value: Any, where: str, length: int | None = None) -> bytes:
    _require(
        isinstance(value, str) and _LOWER_HEX.fullmatch(value) is not None,
        f"{where} must be lowercase hex",
    )
    data = bytes.fromhex(value)
    if length is not None:
        _require(len(data) == length, f"{where} must be {length} bytes")
    return data


def _uint(value: Any, where: str) -> int:
    _require(_is_uint64(value), f"{where} must be an integer in 0 .. 2**64-1")
    return value


def _text(value: Any, where: str, optional: bool = False) -> str | None:
    if optional and value is None:
        return None
    _require(isinstance(value, str), f"{where} must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BundleFormatError(f"{where} is not UTF-8 text") from None
    return value


@dataclass(frozen=True)
class AuditPath:
    """An RFC 6962 audit path: leaf `index` of a tree of `size`, siblings from the leaf up."""

    index: int
    size: int
    path: tuple[bytes, ...]

    @classmethod
    def from_json(cls, value: Any, where: str, extra: frozenset[str] = frozenset()) -> AuditPath:
        fields = frozenset({"index", "size", "path"}) | extra
        value = _object(value, where, fields)
        _require(isinstance(value["path"], list), f"{where}.path must be a list")
        path = tuple(
            _hex(item, f"{where}.path[{i}]", HASH_BYTES) for i, item in enumerate(value["path"])
        )
        return cls(
            _uint(value["index"], f"{where}.index"), _uint(value["size"], f"{where}.size"), path
        )

    def root(self, leaf: bytes) -> bytes:
        return root_from_audit_path(leaf, self.index, self.size, self.path)


@dataclass(frozen=True)
class Bundle:
    """A bundle's content, typed; nothing in it is trusted until a check says so."""

    chain_id: str
    genesis_hash: bytes
    envelope: dict[str, bytes]
    tx_id: bytes
    receipt: bytes
    header: dict[str, Any]
    block_hash: bytes
    tx_proof: AuditPath
    receipt_proof: AuditPath
    commit_height: int
    commit_block_hash: bytes
    signatures: tuple[tuple[int, bytes], ...]
    evidence: dict[str, Any] | None
    batch: BatchSection | None
    lottery: dict[str, Any] | None = None


@dataclass(frozen=True)
class BatchSection:
    """A file's place in a batch anchor: its SHA-256 (`leaf`) and audit path to the root."""

    leaf: bytes
    path: AuditPath


def _envelope(value: Any) -> dict[str, bytes]:
    data = _hex(value, "tx.envelope")
    try:
        envelope = _unpack_canonical(data, "tx.envelope")
    except CheckFailed as exc:
        raise BundleFormatError(str(exc)) from None
    _require(isinstance(envelope, dict), "tx.envelope must be a msgpack map")
    _require(
        envelope.keys() == {"body", "signature", "signer"},
        "tx.envelope must have exactly body, signature, signer",
    )
    _require(isinstance(envelope["body"], bytes), "tx.envelope body must be bin")
    signer, signature = envelope["signer"], envelope["signature"]
    _require(
        isinstance(signer, bytes) and len(signer) == PUBLIC_KEY_BYTES,
        "tx.envelope signer must be bin(32)",
    )
    _require(
        isinstance(signature, bytes) and len(signature) == SIGNATURE_BYTES,
        "tx.envelope signature must be bin(64)",
    )
    return envelope


def _header(value: Any) -> dict[str, Any]:
    value = _object(value, "block.header", frozenset(HEADER_FIELDS))
    header: dict[str, Any] = {"chain_id": _text(value["chain_id"], "block.header.chain_id")}
    for name in HEADER_HASH_FIELDS:
        header[name] = _hex(value[name], f"block.header.{name}", HASH_BYTES)
    for name in HEADER_INT_FIELDS:
        header[name] = _uint(value[name], f"block.header.{name}")
    return header


def _signatures(value: Any) -> tuple[tuple[int, bytes], ...]:
    _require(isinstance(value, list), "commit.signatures must be a list")
    pairs = []
    for position, entry in enumerate(value):
        where = f"commit.signatures[{position}]"
        _require(isinstance(entry, list) and len(entry) == 2, f"{where} must be [index, hex]")
        pairs.append((_uint(entry[0], f"{where}[0]"), _hex(entry[1], f"{where}[1]")))
    return tuple(pairs)


def _parse_evidence(value: Any) -> dict[str, Any]:
    _require(isinstance(value, dict), "evidence must be a JSON object")
    method = value.get("method")
    _require(
        isinstance(method, str) and method in EVIDENCE_METHOD_FIELDS,
        "evidence.method must be anchor or anchor_batch",
    )
    value = _object(value, "evidence", EVIDENCE_COMMON_FIELDS | EVIDENCE_METHOD_FIELDS[method])
    evidence = {
        "contract": _text(value["contract"], "evidence.contract"),
        "method": method,
        "org": _text(value["org"], "evidence.org"),
        "signer": _hex(value["signer"], "evidence.signer", PUBLIC_KEY_BYTES),
        "height": _uint(value["height"], "evidence.height"),
        "timestamp": _uint(value["timestamp"], "evidence.timestamp"),
        "kind": _text(value["kind"], "evidence.kind"),
        "meta": value["meta"],
        "tx_id": _hex(value["tx_id"], "evidence.tx_id", HASH_BYTES),
    }
    _require(value["meta"] is None or isinstance(value["meta"], dict), "evidence.meta: a map")
    if method == "anchor":
        evidence["hash"] = _hex(value["hash"], "evidence.hash", HASH_BYTES)
        evidence["subject"] = _text(value["subject"], "evidence.subject", optional=True)
    else:
        evidence["root"] = _hex(value["root"], "evidence.root", HASH_BYTES)
        evidence["count"] = _uint(value["count"], "evidence.count")
    return evidence


def _parse_lottery(value: Any) -> dict[str, Any]:
    value = _object(value, "lottery", LOTTERY_FIELDS)
    section: dict[str, Any] = {
        name: _hex(value[name], f"lottery.{name}", HASH_BYTES) for name in LOTTERY_HASH_FIELDS
    }
    for name in ("contract", "project_id", "sponsor_org", "notary_org"):
        section[name] = _text(value[name], f"lottery.{name}")
    for name in ("winners_count", "count", "sealed_height"):
        section[name] = _uint(value[name], f"lottery.{name}")
    winners = value["winners"]
    _require(isinstance(winners, list), "lottery.winners must be a list")
    _require(len(winners) <= LOTTERY_WINNERS_MAX, "lottery.winners is too long")
    section["winners"] = []
    for i, winner in enumerate(winners):
        winner = _object(winner, f"lottery.winners[{i}]", frozenset({"index", "entry"}))
        index = _uint(winner["index"], f"lottery.winners[{i}].index")
        entry = _hex(winner["entry"], f"lottery.winners[{i}].entry", HASH_BYTES)
        section["winners"].append((index, entry))
    _require(isinstance(value["seal_proof"], dict), "lottery.seal_proof must be a bundle")
    section["seal_proof"] = value["seal_proof"]
    return section


def parse_bundle(value: Any) -> Bundle:
    """Type-check a bundle's JSON value completely.

    Raises:
        BundleFormatError: naming the first field that is missing, unknown or mistyped.
    """
    _require(isinstance(value, dict), "a bundle is a JSON object")
    unknown = value.keys() - BUNDLE_FIELDS - BUNDLE_OPTIONAL_FIELDS
    _require(not unknown, f"unknown field(s) {sorted(unknown)}")
    missing = BUNDLE_FIELDS - value.keys()
    _require(not missing, f"missing field(s) {sorted(missing)}")
    tx = _object(value["tx"], "tx", frozenset({"envelope", "tx_id"}))
    block = _object(value["block"], "block", frozenset({"header", "hash"}))
    commit = _object(value["commit"], "commit", frozenset({"height", "block_hash", "signatures"}))
    evidence = _parse_evidence(value["evidence"]) if "evidence" in value else None
    batch = None
    if "batch" in value:
        _require(evidence is not None, "a batch section needs an evidence section")
        path = AuditPath.from_json(value["batch"], "batch", frozenset({"leaf"}))
        batch = BatchSection(_hex(value["batch"]["leaf"], "batch.leaf", HASH_BYTES), path)
    return Bundle(
        chain_id=_text(value["chain_id"], "chain_id"),
        genesis_hash=_hex(value["genesis_hash"], "genesis_hash", HASH_BYTES),
        envelope=_envelope(tx["envelope"]),
        tx_id=_hex(tx["tx_id"], "tx.tx_id", HASH_BYTES),
        receipt=_hex(value["receipt"], "receipt"),
        header=_header(block["header"]),
        block_hash=_hex(block["hash"], "block.hash", HASH_BYTES),
        tx_proof=AuditPath.from_json(value["tx_proof"], "tx_proof"),
        receipt_proof=AuditPath.from_json(value["receipt_proof"], "receipt_proof"),
        commit_height=_uint(commit["height"], "commit.height"),
        commit_block_hash=_hex(commit["block_hash"], "commit.block_hash", HASH_BYTES),
        signatures=_signatures(commit["signatures"]),
        evidence=evidence,
        batch=batch,
        lottery=_parse_lottery(value["lottery"]) if "lottery" in value else None,
    )


# --- the checks ---------------------------------------------------------------------------
# Each check takes the parsed bundle and the trust root and returns a detail for the report,
# or raises CheckFailed saying what does not match. One condition per line.


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def _check_chain_id(bundle: Bundle, trust: TrustRoot) -> str:
    _expect(bundle.chain_id == trust.chain_id, f"the bundle names chain {bundle.chain_id!r}")
    return trust.chain_id


def _check_genesis_hash(bundle: Bundle, trust: TrustRoot) -> str:
    _expect(
        bundle.genesis_hash == trust.genesis_hash,
        f"the genesis file gives {trust.genesis_hash.hex()}",
    )
    # Block 1 is the one block whose header names the genesis block itself.
    linked = bundle.header["height"] != 1 or bundle.header["prev_hash"] == trust.genesis_hash
    _expect(linked, "block 1's prev_hash is not this genesis block's hash")
    return trust.genesis_hash.hex()


def _check_tx_id(bundle: Bundle, trust: TrustRoot) -> str:
    _expect(_sha256(bundle.envelope["body"]) == bundle.tx_id, "SHA-256(body) is another tx_id")
    return bundle.tx_id.hex()


def _check_signature(bundle: Bundle, trust: TrustRoot) -> str:
    signer, body, signature = (bundle.envelope[k] for k in ("signer", "body", "signature"))
    _expect(_signature_valid(signer, DOMAIN_TX, body, signature), "not the signer's signature")
    return f"signer {signer.hex()}"


def _check_header_hash(bundle: Bundle, trust: TrustRoot) -> str:
    _expect(
        _sha256(encode_header(bundle.header)) == bundle.block_hash, "the header hashes otherwise"
    )
    return f"block {bundle.header['height']} {bundle.block_hash.hex()}"


def _check_header_chain_id(bundle: Bundle, trust: TrustRoot) -> str:
    _expect(bundle.header["chain_id"] == trust.chain_id, "the header names another chain")
    return trust.chain_id


def _check_tx_included(bundle: Bundle, trust: TrustRoot) -> str:
    proof = bundle.tx_proof
    _expect(proof.root(bundle.tx_id) == bundle.header["tx_root"], "the path leads elsewhere")
    return f"leaf {proof.index} of {proof.size}"


def _check_receipt_included(bundle: Bundle, trust: TrustRoot) -> str:
    proof = bundle.receipt_proof
    _expect(
        proof.root(bundle.receipt) == bundle.header["receipts_root"], "the path leads elsewhere"
    )
    return f"leaf {proof.index} of {proof.size}"


def _check_same_position(bundle: Bundle, trust: TrustRoot) -> str:
    # An audit path does not pin the tree size by itself (a path can verify for several
    # sizes), so the receipt is bound to the tx by its own tx_id and by equal (index, size)
    # in both trees, which fixes the same leaf position.
    tx_position = (bundle.tx_proof.index, bundle.tx_proof.size)
    receipt_position = (bundle.receipt_proof.index, bundle.receipt_proof.size)
    _expect(tx_position == receipt_position, f"tx at {tx_position}, receipt at {receipt_position}")
    return f"leaf {tx_position[0]} of {tx_position[1]}"


def _decode_receipt(bundle: Bundle) -> dict[str, Any]:
    receipt = _unpack_canonical(bundle.receipt, "the receipt")
    _expect(isinstance(receipt, dict) and receipt.keys() == RECEIPT_FIELDS, "not a receipt")
    return receipt


def _check_receipt_tx_id(bundle: Bundle, trust: TrustRoot) -> str:
    receipt = _decode_receipt(bundle)
    _expect(receipt["tx_id"] == bundle.tx_id, "the receipt is another transaction's")
    return "ok" if receipt["ok"] is True else f"failed: {receipt['error']}"


def _check_certificate(bundle: Bundle, trust: TrustRoot) -> str:
    """2f+1 valid commit votes of distinct genesis validators; one bad signature spoils it
    (honest nodes never assemble a certificate with one)."""
    height, keys = bundle.header["height"], trust.validator_keys
    _expect(
        bundle.commit_block_hash == bundle.block_hash, "certificate names a different block hash"
    )
    _expect(bundle.commit_height == height, "certificate names a different height")
    payload = commit_vote_payload(trust.chain_id, height, bundle.block_hash)
    signers: set[int] = set()
    for index, signature in bundle.signatures:
        _expect(index not in signers, f"validator {index} signed more than once")
        _expect(index < len(keys), f"index {index} is not a validator")
        valid = _signature_valid(keys[index], DOMAIN_COMMIT, payload, signature)
        _expect(valid, f"signature of validator {index} does not verify")
        signers.add(index)
    needed = quorum_size(len(keys))
    _expect(len(signers) >= needed, f"certificate has {len(signers)} signatures, needs {needed}")
    return f"{len(signers)} of {len(keys)} validators signed (need {needed})"


def _check_validators_hash(bundle: Bundle, trust: TrustRoot) -> str:
    _expect(bundle.header["validators_hash"] == trust.validators_hash, "other validators")
    return f"{len(trust.validator_keys)} validators"


def _evidence_of(bundle: Bundle) -> dict[str, Any]:
    if bundle.evidence is None:
        raise CheckFailed("the bundle has no evidence section")
    return bundle.evidence


def _check_receipt_ok(bundle: Bundle, trust: TrustRoot) -> str:
    receipt = _decode_receipt(bundle)
    _expect(receipt["ok"] is True, f"the receipt failed: {receipt['error']}")
    _expect(receipt["error"] is None, "an ok receipt carries an error")
    return "the contract recorded the anchor"


def _check_anchor_fields(bundle: Bundle, trust: TrustRoot) -> str:
    """The evidence section says what the signed body, the receipt and the header say."""
    evidence = _evidence_of(bundle)
    method, header = evidence["method"], bundle.header
    body = _unpack_canonical(bundle.envelope["body"], "the transaction body")
    _expect(isinstance(body, dict) and body.keys() == BODY_FIELDS, "not a transaction body")
    args, result = body["args"], _decode_receipt(bundle)["result"]
    _expect(isinstance(args, dict), "the body's args are not a map")
    _expect(isinstance(result, dict), "the receipt's result is not a map")
    _expect(evidence["contract"] == "evidence", "evidence.contract is not 'evidence'")
    _expect(body["contract"] == "evidence", "the transaction is not an evidence call")
    _expect(body["method"] == method, f"the transaction calls {body['method']!r}")
    _expect(body["chain_id"] == trust.chain_id, "the body names another chain")
    _expect(evidence["tx_id"] == bundle.tx_id, "evidence.tx_id is not the bundle's tx_id")
    _expect(evidence["signer"] == bundle.envelope["signer"], "evidence.signer did not sign")
    _expect(evidence["height"] == header["height"], "evidence.height is not the block's")
    _expect(evidence["timestamp"] == header["timestamp"], "evidence.timestamp is not the block's")
    _expect(args.get("kind") == evidence["kind"], "evidence.kind is not the signed kind")
    _expect(result.get("kind") == evidence["kind"], "evidence.kind is not the receipt's")
    _expect(result.get("org") == evidence["org"], "evidence.org is not the receipt's")
    meta = _json_value(args.get("meta")) or None
    _expect(meta == (evidence["meta"] or None), "evidence.meta is not the signed meta")
    names = ("hash", "subject") if method == "anchor" else ("root", "count")
    for name in names:
        _expect(args.get(name) == evidence[name], f"evidence.{name} is not the signed {name}")
        _expect(result.get(name) == evidence[name], f"evidence.{name} is not the receipt's")
    return f"{method} by {evidence['org']} at height {evidence['height']}"


def _check_batch_path(bundle: Bundle, trust: TrustRoot) -> str:
    evidence, batch = _evidence_of(bundle), bundle.batch
    if batch is None:
        raise CheckFailed("the bundle has no batch section")
    _expect(evidence["method"] == "anchor_batch", "the anchor is not a batch anchor")
    _expect(batch.path.size == evidence["count"], "batch.size is not evidence.count")
    _expect(batch.path.root(batch.leaf) == evidence["root"], "the path leads elsewhere")
    return f"leaf {batch.path.index} of {batch.path.size}"


def _check_file_hash(bundle: Bundle, file_hash: bytes) -> str:
    evidence = _evidence_of(bundle)
    if bundle.batch is not None:
        anchored, where = bundle.batch.leaf, "batch.leaf"
    else:
        _expect(evidence["method"] == "anchor", "a batch anchor's bundle needs a batch section")
        anchored, where = evidence["hash"], "evidence.hash"
    _expect(file_hash == anchored, f"the file's SHA-256 is {file_hash.hex()}, not {where}")
    return f"SHA-256 {file_hash.hex()}"


def _lottery_of(bundle: Bundle) -> dict[str, Any]:
    if bundle.lottery is None:
        raise CheckFailed("the bundle has no lottery section")
    return bundle.lottery


def _lottery_call(bundle: Bundle, trust: TrustRoot, method: str, project_id: str) -> Any:
    """The receipt's result of `bundle`'s transaction, a successful `lottery.<method>` of
    the project on this chain."""
    body = _unpack_canonical(bundle.envelope["body"], "the transaction body")
    _expect(isinstance(body, dict) and body.keys() == BODY_FIELDS, "not a transaction body")
    _expect(body["chain_id"] == trust.chain_id, "the body names another chain")
    _expect((body["contract"], body["method"]) == ("lottery", method), f"not lottery.{method}")
    _expect(isinstance(body["args"], dict), "the body's args are not a map")
    _expect(body["args"].get("project_id") == project_id, "the call names another project")
    receipt = _decode_receipt(bundle)
    _expect(receipt["ok"] is True and receipt["error"] is None, "the receipt failed")
    return receipt["result"]


def _check_draw_receipt(bundle: Bundle, trust: TrustRoot) -> str:
    section = _lottery_of(bundle)
    _expect(section["contract"] == "lottery", "lottery.contract is not 'lottery'")
    result = _lottery_call(bundle, trust, "draw", section["project_id"])
    _expect(isinstance(result, dict), "the receipt's result is not a map")
    _expect(result.get("seed") == section["seed"], "lottery.seed is not the receipt's")
    indices = [index for index, _ in section["winners"]]
    _expect(result.get("winners") == indices, "lottery.winners are not the receipt's")
    _expect(len(indices) == section["winners_count"], "lottery.winners_count is not met")
    return f"draw of {section['project_id']!r} at height {bundle.header['height']}"


def _check_seal_bundle(bundle: Bundle, trust: TrustRoot) -> str:
    """The sealing transaction's own bundle verifies, and fixes count, root and block."""
    section = _lottery_of(bundle)
    report = verify_bundle(section["seal_proof"], trust)
    failed = [name for name, passed, _ in report.checks if not passed]
    _expect(not failed, f"the seal bundle fails: {failed}")
    seal = parse_bundle(section["seal_proof"])
    result = _lottery_call(seal, trust, "seal", section["project_id"])
    _expect(isinstance(result, dict), "the seal receipt's result is not a map")
    _expect(result.get("count") == section["count"], "lottery.count is not the sealed count")
    root = result.get("participants_root")
    _expect(root == section["participants_root"], "lottery.participants_root is not sealed")
    _expect(seal.header["height"] == section["sealed_height"], "lottery.sealed_height differs")
    _expect(
        seal.block_hash == section["sealed_block_hash"],
        "lottery.sealed_block_hash is not the sealing block's hash",
    )
    _expect(seal.header["height"] < bundle.header["height"], "the seal is not before the draw")
    return f"{section['count']} entries sealed at height {section['sealed_height']}"


def lottery_seed(section: dict[str, Any]) -> bytes:
    """CONTRACTS.md: the draw's seed from its inputs."""
    return _sha256(
        LOTTERY_SEED_DOMAIN
        + section["project_id"].encode()
        + section["participants_root"]
        + section["count"].to_bytes(8, "big")
        + section["sponsor_secret"]
        + section["notary_secret"]
        + section["sealed_block_hash"]
    )


def lottery_winners(seed: bytes, count: int, winners: int) -> list[int]:
    """CONTRACTS.md: rejection sampling (no modulo bias), repeats skipped."""
    limit = (2**256 // count) * count
    chosen: list[int] = []
    seen: set[int] = set()
    counter = 0
    while len(chosen) < winners:  # the caller ensures winners <= count
        x = int.from_bytes(_sha256(seed + counter.to_bytes(8, "big")), "big")
        counter += 1
        if x < limit and x % count not in seen:
            seen.add(x % count)
            chosen.append(x % count)
    return chosen


def _check_draw_recomputes(bundle: Bundle, trust: TrustRoot) -> str:
    section = _lottery_of(bundle)
    count, winners_count = section["count"], section["winners_count"]
    _expect(_sha256(section["sponsor_secret"]) == section["sponsor_commit"], "sponsor secret")
    _expect(_sha256(section["notary_secret"]) == section["notary_commit"], "notary secret")
    _expect(1 <= winners_count <= min(count, LOTTERY_WINNERS_MAX), "impossible winners count")
    seed = lottery_seed(section)
    _expect(seed == section["seed"], "the seed does not follow from the inputs")
    indices = lottery_winners(seed, count, winners_count)
    _expect(indices == [index for index, _ in section["winners"]], "other winners follow")
    return f"{winners_count} winners of {count} recomputed"


Check = Callable[[Bundle, TrustRoot], str]

TRANSACTION_CHECKS: Final[tuple[tuple[str, Check], ...]] = (
    ("chain_id matches genesis", _check_chain_id),
    ("genesis_hash matches genesis", _check_genesis_hash),
    ("tx_id = SHA-256(body)", _check_tx_id),
    ("envelope signature verifies", _check_signature),
    ("header hashes to block.hash", _check_header_hash),
    ("header chain_id matches", _check_header_chain_id),
    ("tx_id included in tx_root", _check_tx_included),
    ("receipt included in receipts_root", _check_receipt_included),
    ("receipt and tx at the same position", _check_same_position),
    ("receipt names this tx_id", _check_receipt_tx_id),
    ("commit certificate: 2f+1 genesis validators signed", _check_certificate),
    ("header validators_hash matches genesis", _check_validators_hash),
)
EVIDENCE_CHECKS: Final[tuple[tuple[str, Check], ...]] = (
    ("receipt ok", _check_receipt_ok),
    ("anchor fields match tx, receipt and header", _check_anchor_fields),
)
LOTTERY_CHECKS: Final[tuple[tuple[str, Check], ...]] = (
    ("lottery: the draw receipt records this seed and these winners", _check_draw_receipt),
    ("lottery: the seal bundle verifies and fixes count, root and block", _check_seal_bundle),
    ("lottery: secrets match commitments; seed and winners recompute", _check_draw_recomputes),
)
BATCH_CHECK: Final[tuple[str, Check]] = ("batch path leads to the anchored root", _check_batch_path)


def _run(report: VerificationReport, name: str, check: Callable[[], str]) -> None:
    try:
        detail = check()
    except CheckFailed as exc:
        report.check(name, False, str(exc))
    else:
        report.check(name, True, detail)


def _run_checks(
    report: VerificationReport, bundle: Bundle, trust: TrustRoot, file_hash: bytes | None
) -> None:
    checks = list(TRANSACTION_CHECKS)
    if bundle.evidence is not None:
        checks.extend(EVIDENCE_CHECKS)
    if bundle.batch is not None:
        checks.append(BATCH_CHECK)
    if bundle.lottery is not None:
        checks.extend(LOTTERY_CHECKS)
    if file_hash is not None:
        _run(report, "file hash", lambda: _check_file_hash(bundle, file_hash))
    for name, check in checks:
        _run(report, name, lambda check=check: check(bundle, trust))  # type: ignore[misc]


def verify_bundle(
    value: Any, trust: TrustRoot, *, file_hash: bytes | None = None
) -> VerificationReport:
    """Check a bundle (its JSON value) against the genesis, and a file's hash if given.

    Never raises on any JSON value: a malformed bundle is the failed check
    "bundle is well-formed", which ends the report.
    """
    report = VerificationReport()
    if not isinstance(value, dict):
        report.check("bundle is well-formed", False, "a bundle is a JSON object")
        return report
    fmt = value.get("format")
    detail = PROOF_FORMAT if fmt == PROOF_FORMAT else f"{fmt!r}, expected {PROOF_FORMAT!r}"
    if not report.check("format", fmt == PROOF_FORMAT, detail):
        return report
    try:
        bundle = parse_bundle(value)
    except BundleFormatError as exc:
        report.check("bundle is well-formed", False, str(exc))
        return report
    _run_checks(report, bundle, trust, file_hash)
    return report


def verify_bundle_bytes(
    raw: bytes, trust: TrustRoot, *, file_hash: bytes | None = None
) -> VerificationReport:
    """`verify_bundle` on a bundle file's bytes (strict JSON)."""
    try:
        value = _load_json(raw, BUNDLE_BYTES_MAX)
    except (ValueError, RecursionError) as exc:  # also UnicodeDecodeError, JSONDecodeError
        report = VerificationReport()
        report.check("bundle is well-formed", False, f"not strict JSON: {exc}")
        return report
    return verify_bundle(value, trust, file_hash=file_hash)


def hash_file(path: Path | str) -> bytes:
    """SHA-256 of a file, read in `FILE_CHUNK_BYTES` chunks (constant memory).

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    buffer = bytearray(FILE_CHUNK_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])
    return digest.digest()
