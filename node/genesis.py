"""The genesis file (PROTOCOL.md section 7) and the genesis block it defines.

Parsed strictly: a typo in a genesis file would otherwise fork a consortium at height 0.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from contracts import membership
from contracts.membership import OrganizationSpec
from contracts.runtime import ROLES
from node.block import (
    BLOCK_VERSION,
    ZERO_HASH,
    BlockHeader,
    CommitCertificate,
    CommittedBlock,
    compute_validators_hash,
    next_state_root,
)
from node.encoding import canonical_packb
from node.merkle import EMPTY_TREE_HASH

CHAIN_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Not a contract's namespace: the genesis state's record of the file's `params` object.
GENESIS_PARAMS_KEY: Final = b"chain/params"
DEFAULT_PARAMS: Final[dict[str, int]] = {
    "tx_window_ms": 600_000,
    "max_block_txs": 10_000,
    "max_block_bytes": 8 * 1024 * 1024,
    "max_clock_drift_ms": 5_000,
}


class GenesisError(ValueError):
    """A genesis file that is not valid JSON of the protocol's shape."""

    code = "genesis.invalid"


@dataclass(frozen=True, slots=True)
class Validator:
    index: int
    org: str
    public_key: bytes


@dataclass(frozen=True, slots=True)
class ChainParams:
    tx_window_ms: int
    max_block_txs: int
    max_block_bytes: int
    max_clock_drift_ms: int


@dataclass(frozen=True)
class Genesis:
    """A parsed genesis file, with the exact bytes it was read from."""

    raw: bytes
    chain_id: str
    genesis_time: int
    orgs: tuple[OrganizationSpec, ...]
    validators: tuple[Validator, ...]
    params: ChainParams
    # The `params` object exactly as the file writes it (canonical msgpack): part of the
    # genesis state, so the genesis hash pins the chain's parameters too.
    params_record: bytes

    @property
    def validator_keys(self) -> tuple[bytes, ...]:
        return tuple(validator.public_key for validator in self.validators)

    @property
    def validators_hash(self) -> bytes:
        return compute_validators_hash(self.validator_keys)

    def genesis_writes(self) -> dict[bytes, bytes | None]:
        """The state at height 0: the membership records and the chain parameters."""
        writes = membership.genesis_writes(self.orgs)
        writes[GENESIS_PARAMS_KEY] = self.params_record
        return writes

    def genesis_block(self) -> CommittedBlock:
        """Height 0: no transactions, zero `prev_hash`, the genesis state's root.

        It carries an empty certificate: the genesis file itself is its authority.
        """
        header = BlockHeader(
            chain_id=self.chain_id,
            height=0,
            prev_hash=ZERO_HASH,
            proposer=0,
            receipts_root=EMPTY_TREE_HASH,
            state_root=next_state_root(ZERO_HASH, self.genesis_writes()),
            timestamp=self.genesis_time,
            tx_root=EMPTY_TREE_HASH,
            validators_hash=self.validators_hash,
            version=BLOCK_VERSION,
            view=0,
        )
        block_hash = header.block_hash()
        return CommittedBlock(
            header=header,
            header_bytes=header.encode(),
            block_hash=block_hash,
            tx_ids=(),
            envelopes=(),
            receipts=(),
            commit=CommitCertificate(block_hash=block_hash, height=0, signatures=()),
        )

    @property
    def genesis_hash(self) -> bytes:
        return self.genesis_block().block_hash


def _unique_keys_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise GenesisError("a JSON object has a repeated key")
    return result


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise GenesisError(message)


def _hex_key(value: Any, where: str) -> bytes:
    _require(isinstance(value, str) and len(value) == 64, f"{where}: a key is 64 hex characters")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise GenesisError(f"{where}: not hex") from None


def _int(value: Any, where: str, minimum: int = 0) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    _require(ok, f"{where} must be an integer >= {minimum}")
    return value


def _parse_org(raw: Any, position: int) -> OrganizationSpec:
    where = f"orgs[{position}]"
    _require(isinstance(raw, dict), f"{where} must be an object")
    expected = {"id", "name", "roles", "admins", "members"}
    _require(raw.keys() == expected, f"{where} must have exactly the fields {sorted(expected)}")
    _require(
        isinstance(raw["id"], str) and bool(CHAIN_ID_PATTERN.fullmatch(raw["id"])),
        f"{where}.id must be an identifier",
    )
    _require(isinstance(raw["name"], str) and raw["name"] != "", f"{where}.name must be text")
    roles = raw["roles"]
    _require(
        isinstance(roles, list) and all(isinstance(r, str) for r in roles) and set(roles) <= ROLES,
        f"{where}.roles must be among {sorted(ROLES)}",
    )
    for field_name in ("admins", "members"):
        _require(isinstance(raw[field_name], list), f"{where}.{field_name} must be a list")
    admins = tuple(_hex_key(k, f"{where}.admins") for k in raw["admins"])
    members = tuple(_hex_key(k, f"{where}.members") for k in raw["members"])
    return OrganizationSpec(raw["id"], raw["name"], tuple(roles), admins, members)


def _parse_params(raw: Any) -> ChainParams:
    _require(isinstance(raw, dict), "params must be an object")
    unknown = sorted(raw.keys() - DEFAULT_PARAMS.keys())
    _require(not unknown, f"params: unknown parameter(s) {unknown}")
    values = {
        name: _int(raw.get(name, default), f"params.{name}", 1)
        for name, default in DEFAULT_PARAMS.items()
    }
    return ChainParams(**values)


def parse_genesis(raw: bytes) -> Genesis:
    """Parse and validate genesis JSON bytes.

    Raises:
        GenesisError: naming the first field that is wrong.
    """
    try:
        doc = json.loads(raw, object_pairs_hook=_unique_keys_object)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GenesisError(f"not JSON: {exc}") from None
    _require(isinstance(doc, dict), "genesis must be a JSON object")
    expected = {"chain_id", "genesis_time", "orgs", "validators", "params"}
    _require(
        doc.keys() == expected,
        f"genesis must have exactly the fields {sorted(expected)}"
        f" (unknown: {sorted(doc.keys() - expected)}, missing: {sorted(expected - doc.keys())})",
    )
    _require(
        isinstance(doc["chain_id"], str) and bool(CHAIN_ID_PATTERN.fullmatch(doc["chain_id"])),
        "chain_id must be 1..64 characters of [A-Za-z0-9._:-]",
    )
    genesis_time = _int(doc["genesis_time"], "genesis_time")
    _require(
        isinstance(doc["orgs"], list) and len(doc["orgs"]) > 0, "orgs must be a non-empty list"
    )
    orgs = tuple(_parse_org(org, i) for i, org in enumerate(doc["orgs"]))
    org_ids = [org.id for org in orgs]
    _require(len(set(org_ids)) == len(org_ids), "organisation ids must be unique")
    all_keys = [key for org in orgs for key in (*org.admins, *org.members)]
    _require(len(set(all_keys)) == len(all_keys), "a key may belong to one organisation, once")
    validators = _parse_validators(doc["validators"], set(org_ids))
    params = _parse_params(doc["params"])
    return Genesis(
        raw, doc["chain_id"], genesis_time, orgs, validators, params, canonical_packb(doc["params"])
    )


def _parse_validators(raw: Any, org_ids: set[str]) -> tuple[Validator, ...]:
    _require(isinstance(raw, list) and len(raw) > 0, "validators must be a non-empty list")
    validators = []
    for position, entry in enumerate(raw):
        where = f"validators[{position}]"
        _require(
            isinstance(entry, dict) and entry.keys() == {"index", "org", "public_key"},
            f"{where} must have exactly the fields index, org, public_key",
        )
        _require(
            _int(entry["index"], f"{where}.index") == position, f"{where}.index must be {position}"
        )
        _require(
            isinstance(entry["org"], str) and entry["org"] in org_ids,
            f"{where}.org names no organisation",
        )
        validators.append(Validator(position, entry["org"], _hex_key(entry["public_key"], where)))
    keys = [validator.public_key for validator in validators]
    _require(len(set(keys)) == len(keys), "validator keys must be distinct")
    return tuple(validators)


def load_genesis(path: Path) -> Genesis:
    """Raises: GenesisError when the file is missing or invalid (naming the path)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GenesisError(f"{path}: cannot read genesis file ({exc.strerror})") from None
    try:
        return parse_genesis(raw)
    except GenesisError as exc:
        raise GenesisError(f"{path}: {exc}") from None


def genesis_document(
    chain_id: str,
    genesis_time: int,
    orgs: list[OrganizationSpec],
    validators: list[Validator],
    params: dict[str, int] | None = None,
) -> bytes:
    """Render a genesis file (used by `chancery testnet`)."""
    doc = {
        "chain_id": chain_id,
        "genesis_time": genesis_time,
        "orgs": [
            {
                "id": org.id,
                "name": org.name,
                "roles": list(org.roles),
                "admins": [key.hex() for key in org.admins],
                "members": [key.hex() for key in org.members],
            }
            for org in orgs
        ],
        "validators": [
            {"index": v.index, "org": v.org, "public_key": v.public_key.hex()} for v in validators
        ],
        "params": {**DEFAULT_PARAMS, **(params or {})},
    }
    return (json.dumps(doc, indent=2) + "\n").encode()
