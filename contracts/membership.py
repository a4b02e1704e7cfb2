"""The `membership` contract: organisations, their admin and member keys (CONTRACTS.md).

State (scoped under `membership/`):
- `orgs` -> list of organisation ids, in genesis order.
- `org/<id>` -> `{"id", "key_count", "name", "roles"}`.
- `org_key/<id>/<n>` (n as 8 bytes big-endian) -> the n-th public key the organisation
  ever had, so adding a key writes one small record instead of rewriting a growing list.
- `key/<public_key>` -> `{"active", "added_height", "admin", "encryption_key", "name", "org",
  "revoked_height"}`.
Organisations and their first keys come from genesis; admins add and revoke member keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from contracts.runtime import (
    Arg,
    CallContext,
    CallOutcome,
    Contract,
    ContractError,
    Event,
    Method,
    QueryNotFound,
    Reader,
    ReadView,
    Signer,
    StateReader,
    StateView,
    encode_record,
    hash32,
    scoped_key,
    text,
)

NAME: Final = "membership"
KEYS_PER_ORG_MAX: Final = 10_000
MEMBER_NAME_CHARS_MAX: Final = 128


@dataclass(frozen=True, slots=True)
class OrganizationSpec:
    """An organisation as genesis declares it."""

    id: str
    name: str
    roles: tuple[str, ...]
    admins: tuple[bytes, ...]
    members: tuple[bytes, ...]


def _key_record(org: str, name: str, admin: bool, height: int) -> dict[str, Any]:
    return {
        "active": True,
        "added_height": height,
        "admin": admin,
        "encryption_key": None,
        "name": name,
        "org": org,
        "revoked_height": None,
    }


def genesis_writes(orgs: Sequence[OrganizationSpec]) -> dict[bytes, bytes | None]:
    """The membership part of the genesis state (full keys)."""
    writes: dict[bytes, bytes | None] = {}
    writes[scoped_key(NAME, b"orgs")] = encode_record([org.id for org in orgs])
    for org in orgs:
        keys = list(org.admins) + list(org.members)
        record = {"id": org.id, "key_count": len(keys), "name": org.name, "roles": list(org.roles)}
        writes[scoped_key(NAME, b"org/" + org.id.encode())] = encode_record(record)
        for position, key in enumerate(keys):
            writes[scoped_key(NAME, _org_key_slot(org.id, position))] = key
        for index, key in enumerate(org.admins):
            key_record = _key_record(org.id, f"{org.id} admin {index}", True, 0)
            writes[scoped_key(NAME, b"key/" + key)] = encode_record(key_record)
        for index, key in enumerate(org.members):
            key_record = _key_record(org.id, f"{org.id} member {index}", False, 0)
            writes[scoped_key(NAME, b"key/" + key)] = encode_record(key_record)
    return writes


def _org_key_slot(org_id: str, position: int) -> bytes:
    return b"org_key/" + org_id.encode() + b"/" + position.to_bytes(8, "big")


def lookup_signer(state: StateReader, public_key: bytes) -> Signer | None:
    """The active signer behind `public_key`, or None if unknown or revoked."""
    view = ReadView(NAME, state)
    record = view.get_record(b"key/" + public_key)
    if record is None or not record["active"]:
        return None
    org = view.get_record(b"org/" + record["org"].encode())
    return Signer(public_key, record["org"], frozenset(org["roles"]), record["admin"])


def is_known_key(state: StateReader, public_key: bytes) -> bool:
    """True if the key was ever registered (active or revoked)."""
    return ReadView(NAME, state).get(b"key/" + public_key) is not None


def add_member(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """Add a member key to the signer's organisation.

    Raises:
        ContractError: `membership.exists` if the key is registered already (in any org),
            `membership.org_full` past KEYS_PER_ORG_MAX keys.
    """
    public_key = args["public_key"]
    if state.get(b"key/" + public_key) is not None:
        raise ContractError("membership.exists", "this key is registered already")
    org_key = b"org/" + context.signer.org.encode()
    org = state.get_record(org_key)
    if org["key_count"] >= KEYS_PER_ORG_MAX:
        raise ContractError(
            "membership.org_full", f"an organisation has at most {KEYS_PER_ORG_MAX} keys"
        )
    state.put(_org_key_slot(org["id"], org["key_count"]), public_key)
    org["key_count"] += 1
    state.put_record(org_key, org)
    record = _key_record(context.signer.org, args["name"], False, context.height)
    record["encryption_key"] = args.get("encryption_key")
    state.put_record(b"key/" + public_key, record)
    event = Event("member_added", {"org": context.signer.org, "public_key": public_key})
    return CallOutcome(result={"org": context.signer.org}, events=[event])


def revoke_member(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """Revoke a key of the signer's organisation; its past transactions stay valid.

    Raises:
        ContractError: `membership.not_found` (unknown or already revoked key),
            `membership.forbidden` (key of another organisation), `membership.self_revoke`.
    """
    public_key = args["public_key"]
    record = state.get_record(b"key/" + public_key)
    if record is None or not record["active"]:
        raise ContractError("membership.not_found", "no active key with this public key")
    if record["org"] != context.signer.org:
        raise ContractError("membership.forbidden", "the key belongs to another organisation")
    if public_key == context.signer.public_key:
        raise ContractError("membership.self_revoke", "an admin cannot revoke its own key")
    record["active"] = False
    record["revoked_height"] = context.height
    state.put_record(b"key/" + public_key, record)
    event = Event("member_revoked", {"org": record["org"], "public_key": public_key})
    return CallOutcome(result=None, events=[event])


def set_encryption_key(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """Set the X25519 key others use to seal data for the signer."""
    key = b"key/" + context.signer.public_key
    record = state.get_record(key)
    record["encryption_key"] = args["encryption_key"]
    state.put_record(key, record)
    return CallOutcome()


def _key_json(public_key: bytes, record: dict[str, Any]) -> dict[str, Any]:
    encryption_key = record["encryption_key"]
    return {
        "public_key": public_key.hex(),
        "org": record["org"],
        "name": record["name"],
        "admin": record["admin"],
        "active": record["active"],
        "added_height": record["added_height"],
        "revoked_height": record["revoked_height"],
        "encryption_key": None if encryption_key is None else encryption_key.hex(),
    }


def query(view: ReadView, path: list[str], reader: Reader) -> Any:
    """`orgs`, `orgs/{org_id}`, `members/{public_key_hex}`.

    Raises:
        QueryNotFound: unknown path, organisation or key.
    """
    if path == ["orgs"]:
        orgs = [view.get_record(b"org/" + org_id.encode()) for org_id in view.get_record(b"orgs")]
        return {"orgs": [{"id": o["id"], "name": o["name"], "roles": o["roles"]} for o in orgs]}
    if len(path) == 2 and path[0] == "orgs":
        org = view.get_record(b"org/" + path[1].encode())
        if org is None:
            raise QueryNotFound(f"no organisation {path[1]!r}")
        slots = (view.get(_org_key_slot(org["id"], n)) for n in range(org["key_count"]))
        keys = [_key_json(key, view.get_record(b"key/" + key)) for key in slots if key is not None]
        return {"id": org["id"], "name": org["name"], "roles": org["roles"], "keys": keys}
    if len(path) == 2 and path[0] == "members":
        try:
            public_key = bytes.fromhex(path[1])
        except ValueError:
            raise QueryNotFound("a public key is 64 hex characters") from None
        record = view.get_record(b"key/" + public_key)
        if record is None:
            raise QueryNotFound("no member with this public key")
        return _key_json(public_key, record)
    raise QueryNotFound(f"no membership query {'/'.join(path)!r}")


CONTRACT: Final = Contract(
    name=NAME,
    methods={
        "add_member": Method(
            "add_member",
            add_member,
            {
                "public_key": Arg(hash32, binary=True),
                "name": Arg(text(MEMBER_NAME_CHARS_MAX)),
                "encryption_key": Arg(hash32, optional=True, binary=True),
            },
            admin_only=True,
        ),
        "revoke_member": Method(
            "revoke_member",
            revoke_member,
            {"public_key": Arg(hash32, binary=True)},
            admin_only=True,
        ),
        "set_encryption_key": Method(
            "set_encryption_key", set_encryption_key, {"encryption_key": Arg(hash32, binary=True)}
        ),
    },
    query=query,
)
