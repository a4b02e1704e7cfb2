"""The `invoice` contract: electronic invoices from issuance to reimbursement (CONTRACTS.md).

A `tax_office` authorises an `enterprise` to issue (optionally up to `max_invoices` under
that authorisation, and until `valid_until_ms`, compared with the block timestamp). An
issued invoice, `id = issuer_org + "/" + invoice_no`, has one holder at a time (first the
buyer). Its holder may transfer it, lock it while a claim is approved, and reimburse it;
reimbursement is final. The issuer, or a tax office, may void it (red-letter) unless it is
reimbursed. Status moves only along

    issued --lock--> locked --unlock--> issued
    issued|locked(by the reimbursing org) --reimburse--> reimbursed   (final)
    issued --void--> void                                              (final)

Blocks execute one transaction after another on every replica, so of any number of
`reimburse` calls racing for one invoice, the first in chain order wins and every later one
(same block or later, any organisation) is a failed receipt `invoice.already_reimbursed`
naming the first. Refusals roll back, so refused attempts are not in state: they stay on
the chain as failed receipts (docs/invoices.md says how the tax office lists them).

Checks run in one order everywhere: the invoice exists, then its final state
(`already_reimbursed`, `void`), then its lock, then who is calling. So once an invoice is
final, every later attempt by anybody is refused with the code naming the final record.

The invoice's content never reaches a node: `sealed` is the document encrypted by the
client (node/sealing.py) for the issuer, the buyer and every tax office. The contract
checks its structure and that its recipients are exactly keys it should be sealed for:
every recipient is a registered X25519 key of an active member of the issuer, the buyer or
a tax office, and each of those organisations that registered any key has at least one.

State (scoped under `invoice/`; `<n>` is 8 bytes big-endian, `<id>` is `org/invoice_no`):
- `issuer/<org>` -> the organisation's authorisation and counts (`IssuerRecord`).
- `issued/<org>/<n>` -> the id of the org's n-th issued invoice (the tax office's listing).
- `invoice/<id>` -> the invoice (`InvoiceRecord`). The sealed document itself stays in the
  issuing transaction, which every node keeps in its block anyway; the record keeps its
  SHA-256 and size, so state does not hold every document a second time.
- `event/<id>/<n>` -> the n-th event of its history (`issue`, `transfer`, ...).
- `party/<id>/<org>` -> b"": `org` holds or held the invoice (the visibility rule).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from contracts.runtime import (
    IDENTIFIER_PATTERN,
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
    StateView,
    binary,
    encode_record,
    hash32,
    identifier,
    integer,
    text,
)

NAME: Final = "invoice"
MEMBERSHIP: Final = "membership"
ROLE_TAX_OFFICE: Final = "tax_office"
ROLE_ENTERPRISE: Final = "enterprise"
ROLE_AUDITOR: Final = "auditor"
# Organisations that read every invoice and every issuer's counts when reads are signed.
OVERSIGHT_ROLES: Final = frozenset({ROLE_TAX_OFFICE, ROLE_AUDITOR})

STATUS_ISSUED: Final = "issued"
STATUS_LOCKED: Final = "locked"
STATUS_REIMBURSED: Final = "reimbursed"
STATUS_VOID: Final = "void"

MAX_INVOICES_MAX: Final = 2**40  # the largest quota one authorisation may grant
TIME_MS_MAX: Final = 2**63 - 1
REASON_CHARS_MAX: Final = 256
# Sealed documents: node/sealing.py writes them; the contract checks their structure.
SEALED_BYTES_MAX: Final = 64 * 1024
SEALED_VERSION: Final = 1
SEALED_FIELDS: Final = frozenset({"ciphertext", "ephemeral_key", "nonce", "recipients", "version"})
SEALED_NONCE_BYTES: Final = 12
SEALED_KEY_BYTES: Final = 32
SEALED_WRAPPED_KEY_BYTES: Final = 48  # a 32-byte data key plus its 16-byte GCM tag
SEALED_TAG_BYTES: Final = 16
SEALED_RECIPIENTS_MAX: Final = 64
RECIPIENT_HEX_PATTERN: Final = re.compile(r"[0-9a-f]{64}")
# History: one record per event. Transfers and locks stop HISTORY_RESERVED events short of
# the cap, so an unlock and the final reimburse or void always fit.
EVENTS_PER_INVOICE_MAX: Final = 1000
HISTORY_RESERVED: Final = 2
ISSUER_PAGE_INVOICES_MAX: Final = 1000
POSITION_BYTES: Final = 8
DECIMAL_PATTERN: Final = re.compile(r"[0-9]{1,19}")
ID_SEPARATOR: Final = "/"


def _require(condition: bool, message: str) -> None:
    """A broken invariant is a bug: stays on under `python -O` (execution turns it into a
    `contract.internal_error` receipt on every replica alike)."""
    if not condition:
        raise AssertionError(message)


_require(HISTORY_RESERVED < EVENTS_PER_INVOICE_MAX, "the history reserve must leave room")
_require(
    SEALED_RECIPIENTS_MAX * (64 + SEALED_WRAPPED_KEY_BYTES + 4) < SEALED_BYTES_MAX,
    "a sealed document must have room for every recipient",
)


# --- records -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stamp:
    """Who did something to an invoice, in which transaction, at which block time."""

    org: str
    signer: bytes
    height: int
    tx_id: bytes
    timestamp_ms: int

    @classmethod
    def of(cls, context: CallContext) -> Stamp:
        signer = context.signer
        return cls(
            signer.org, signer.public_key, context.height, context.tx_id, context.block_timestamp_ms
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "org": self.org,
            "signer": self.signer,
            "timestamp": self.timestamp_ms,
            "tx_id": self.tx_id,
        }


def _position(n: int) -> bytes:
    return n.to_bytes(POSITION_BYTES, "big")


def _issuer_key(org: str) -> bytes:
    return b"issuer/" + org.encode()


def _issued_key(org: str, position: int) -> bytes:
    return b"issued/" + org.encode() + b"/" + _position(position)


def _invoice_key(invoice_id: str) -> bytes:
    return b"invoice/" + invoice_id.encode()


def _event_key(invoice_id: str, position: int) -> bytes:
    return b"event/" + invoice_id.encode() + b"/" + _position(position)


def _party_key(invoice_id: str, org: str) -> bytes:
    return b"party/" + invoice_id.encode() + b"/" + org.encode()


def invoice_id_of(issuer: str, invoice_no: str) -> str:
    return issuer + ID_SEPARATOR + invoice_no


def split_invoice_id(value: Any) -> tuple[str, str] | None:
    """(issuer, invoice_no) of a well-formed id, else None."""
    if not isinstance(value, str):
        return None
    issuer, separator, invoice_no = value.partition(ID_SEPARATOR)
    if not separator:
        return None
    if not IDENTIFIER_PATTERN.fullmatch(issuer) or not IDENTIFIER_PATTERN.fullmatch(invoice_no):
        return None
    return issuer, invoice_no


def invoice_id(name: str, value: Any) -> None:
    """Argument check: `<issuer_org>/<invoice_no>`, both identifiers."""
    if split_invoice_id(value) is None:
        raise ContractError(
            "tx.invalid_args",
            f"argument {name!r} must be <issuer org>/<invoice no>, both identifiers",
            {"argument": name},
        )


# --- membership reads --------------------------------------------------------------------


def _org_record(state: ReadView, org: str) -> dict[str, Any] | None:
    return state.for_contract(MEMBERSHIP).get_record(b"org/" + org.encode())


def _org_roles(state: ReadView, org: str) -> list[str] | None:
    record = _org_record(state, org)
    return None if record is None else record["roles"]


def _tax_offices(state: ReadView) -> list[str]:
    membership = state.for_contract(MEMBERSHIP)
    orgs = membership.get_record(b"orgs") or []
    return [org for org in orgs if ROLE_TAX_OFFICE in (_org_roles(state, org) or [])]


def _encryption_keys(state: ReadView, org: str) -> set[bytes]:
    """The X25519 keys registered by the org's active members (membership's key layout:
    `org_key/<org>/<n>` -> public key, `key/<public key>` -> its record)."""
    membership = state.for_contract(MEMBERSHIP)
    record = _org_record(state, org)
    if record is None:
        return set()
    keys: set[bytes] = set()
    prefix = b"org_key/" + org.encode() + b"/"
    for position in range(record["key_count"]):
        public_key = membership.get(prefix + _position(position))
        member = None if public_key is None else membership.get_record(b"key/" + public_key)
        if member is not None and member["active"] and member["encryption_key"] is not None:
            keys.add(member["encryption_key"])
    return keys


# --- sealed documents --------------------------------------------------------------------


def _sealed_invalid(reason: str, **details: Any) -> ContractError:
    return ContractError("invoice.sealed_invalid", reason, {"reason": reason, **details})


def sealed_recipients(sealed: bytes) -> set[bytes]:
    """The recipient keys of a sealed document in node/sealing.py's format, version 1:
    canonical msgpack `{"ciphertext": bin, "ephemeral_key": bin(32), "nonce": bin(12),
    "recipients": {hex key: bin(48)}, "version": 1}`.

    Raises:
        ContractError: `invoice.sealed_invalid` naming what is wrong.
    """
    try:
        sealed_map = msgpack.unpackb(sealed, raw=False, strict_map_key=True)
    except Exception:  # msgpack raises several types for malformed input
        raise _sealed_invalid("not msgpack") from None
    if not isinstance(sealed_map, dict) or sealed_map.keys() != SEALED_FIELDS:
        raise _sealed_invalid(f"must be a map with exactly {sorted(SEALED_FIELDS)}")
    if sealed_map["version"] != SEALED_VERSION or isinstance(sealed_map["version"], bool):
        raise _sealed_invalid(f"version must be {SEALED_VERSION}")
    if not _is_bytes(sealed_map["nonce"], SEALED_NONCE_BYTES):
        raise _sealed_invalid(f"nonce must be bin({SEALED_NONCE_BYTES})")
    if not _is_bytes(sealed_map["ephemeral_key"], SEALED_KEY_BYTES):
        raise _sealed_invalid(f"ephemeral_key must be bin({SEALED_KEY_BYTES})")
    ciphertext = sealed_map["ciphertext"]
    if not isinstance(ciphertext, bytes) or len(ciphertext) < SEALED_TAG_BYTES:
        raise _sealed_invalid("ciphertext must be bin with its GCM tag")
    recipients = sealed_map["recipients"]
    if not isinstance(recipients, dict) or not 1 <= len(recipients) <= SEALED_RECIPIENTS_MAX:
        raise _sealed_invalid(f"recipients must be a map of 1..{SEALED_RECIPIENTS_MAX} entries")
    for key, wrapped in recipients.items():
        if not RECIPIENT_HEX_PATTERN.fullmatch(key):
            raise _sealed_invalid("recipient keys are 64 lowercase hex characters")
        if not _is_bytes(wrapped, SEALED_WRAPPED_KEY_BYTES):
            raise _sealed_invalid(f"wrapped keys must be bin({SEALED_WRAPPED_KEY_BYTES})")
    if encode_record(sealed_map) != sealed:
        raise _sealed_invalid("not canonical msgpack")
    return {bytes.fromhex(key) for key in recipients}


def _is_bytes(value: Any, size: int) -> bool:
    return isinstance(value, bytes) and len(value) == size


def _check_recipients(state: ReadView, sealed: bytes, issuer: str, buyer: str) -> None:
    """Every recipient is a key of the issuer, the buyer or a tax office, and each of those
    organisations with a registered encryption key has at least one recipient.

    Raises:
        ContractError: `invoice.sealed_invalid` naming the stray recipient or the org left out.
    """
    recipients = sealed_recipients(sealed)
    orgs = dict.fromkeys([issuer, buyer, *_tax_offices(state)])
    allowed: set[bytes] = set()
    for org in orgs:
        keys = _encryption_keys(state, org)
        allowed |= keys
        if keys and not keys & recipients:
            raise _sealed_invalid("sealed for none of this organisation's keys", org=org)
    stray = sorted(recipients - allowed)
    if stray:
        raise _sealed_invalid(
            "recipient is not a registered key of the issuer, the buyer or a tax office",
            recipient=stray[0],
        )


# --- issuers -----------------------------------------------------------------------------


def _issuer(state: ReadView, org: str) -> dict[str, Any] | None:
    return state.get_record(_issuer_key(org))


def authorize_issuer(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """Authorise an enterprise to issue; replaces any earlier authorisation of the org and
    starts its quota count afresh.

    Raises:
        ContractError: `invoice.not_enterprise` (unknown org, or one without that role).
    """
    org = args["org"]
    roles = _org_roles(state, org)
    if roles is None or ROLE_ENTERPRISE not in roles:
        raise ContractError(
            "invoice.not_enterprise",
            "only an enterprise organisation can be authorised to issue",
            {"org": org, "roles": roles},
        )
    previous = _issuer(state, org)
    record = previous or {"issued_total": 0, "reimbursed": 0, "voided": 0, "authorization": 0}
    stamp = Stamp.of(context)
    record.update(
        {
            "org": org,
            "active": True,
            "authorization": record["authorization"] + 1,
            "authorized": stamp.to_record(),
            "revoked": None,
            "max_invoices": args.get("max_invoices"),
            "valid_until_ms": args.get("valid_until_ms"),
            "issued": 0,
        }
    )
    state.put_record(_issuer_key(org), record)
    summary = {
        "org": org,
        "authorization": record["authorization"],
        "max_invoices": record["max_invoices"],
        "valid_until_ms": record["valid_until_ms"],
    }
    return CallOutcome(result=summary, events=[Event("issuer_authorized", summary)])


def revoke_issuer(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """Stop the org issuing; invoices it issued are unaffected.

    Raises:
        ContractError: `invoice.not_authorized` (the org holds no active authorisation).
    """
    org = args["org"]
    record = _issuer(state, org)
    if record is None or not record["active"]:
        raise ContractError(
            "invoice.not_authorized", "the organisation holds no authorisation", {"org": org}
        )
    record["active"] = False
    record["revoked"] = Stamp.of(context).to_record()
    state.put_record(_issuer_key(org), record)
    summary = {"org": org, "authorization": record["authorization"]}
    return CallOutcome(result=summary, events=[Event("issuer_revoked", summary)])


def _check_may_issue(context: CallContext, record: dict[str, Any] | None) -> dict[str, Any]:
    """Raises: ContractError `invoice.not_authorized` (never, revoked, or expired) or
    `invoice.quota_exceeded`."""
    org = context.signer.org
    if record is None or not record["active"]:
        reason = "never authorised" if record is None else "authorisation revoked"
        raise ContractError(
            "invoice.not_authorized", f"{org} may not issue: {reason}", {"org": org}
        )
    valid_until_ms = record["valid_until_ms"]
    if valid_until_ms is not None and context.block_timestamp_ms > valid_until_ms:
        raise ContractError(
            "invoice.not_authorized",
            f"{org}'s authorisation expired",
            {"org": org, "valid_until_ms": valid_until_ms},
        )
    return record


def _check_quota(record: dict[str, Any]) -> None:
    """Raises: ContractError `invoice.quota_exceeded`."""
    max_invoices = record["max_invoices"]
    if max_invoices is not None and record["issued"] >= max_invoices:
        raise ContractError(
            "invoice.quota_exceeded",
            "the authorisation's quota of invoices is used up",
            {"org": record["org"], "max_invoices": max_invoices, "issued": record["issued"]},
        )


# --- invoices ----------------------------------------------------------------------------


def _load(state: ReadView, invoice_id_value: str) -> dict[str, Any]:
    """Raises: ContractError `invoice.not_found`."""
    record = state.get_record(_invoice_key(invoice_id_value))
    if record is None:
        raise ContractError("invoice.not_found", "no such invoice", {"id": invoice_id_value})
    return record


def _append_event(
    state: StateView, record: dict[str, Any], method: str, stamp: Stamp, **fields: Any
) -> None:
    position = record["event_count"]
    _require(position < EVENTS_PER_INVOICE_MAX, "the history reserve was not kept")
    state.put_record(
        _event_key(record["id"], position), {"method": method, **stamp.to_record(), **fields}
    )
    record["event_count"] = position + 1


def _save(state: StateView, record: dict[str, Any]) -> None:
    state.put_record(_invoice_key(record["id"]), record)


def _refuse_final(record: dict[str, Any]) -> None:
    """Raises: ContractError `invoice.already_reimbursed` (with the first reimbursement's
    org, height, tx_id, claim_ref and timestamp) or `invoice.void`."""
    if record["status"] == STATUS_REIMBURSED:
        first = record["reimbursement"]
        raise ContractError(
            "invoice.already_reimbursed",
            f"invoice was reimbursed by {first['org']} at height {first['height']}",
            {
                "id": record["id"],
                "org": first["org"],
                "height": first["height"],
                "tx_id": first["tx_id"],
                "claim_ref": first["claim_ref"],
                "timestamp": first["timestamp"],
            },
        )
    if record["status"] == STATUS_VOID:
        voided = record["void"]
        raise ContractError(
            "invoice.void",
            f"invoice was voided by {voided['org']} at height {voided['height']}",
            {
                "id": record["id"],
                "org": voided["org"],
                "height": voided["height"],
                "tx_id": voided["tx_id"],
                "reason": voided["reason"],
                "replacement_id": voided["replacement_id"],
            },
        )


def _locked_error(record: dict[str, Any]) -> ContractError:
    lock = record["lock"]
    return ContractError(
        "invoice.locked",
        f"invoice is locked by {lock['org']} for claim {lock['claim_ref']}",
        {
            "id": record["id"],
            "org": lock["org"],
            "claim_ref": lock["claim_ref"],
            "height": lock["height"],
            "tx_id": lock["tx_id"],
        },
    )


def _refuse_locked(record: dict[str, Any], unless_org: str | None = None) -> None:
    """Raises: ContractError `invoice.locked` naming the locking org (unless it is `unless_org`)."""
    if record["status"] == STATUS_LOCKED and record["lock"]["org"] != unless_org:
        raise _locked_error(record)


def _refuse_not_holder(record: dict[str, Any], org: str) -> None:
    """Raises: ContractError `invoice.not_holder`."""
    if record["holder"] != org:
        raise ContractError(
            "invoice.not_holder",
            "only a member of the holder organisation may do this",
            {"id": record["id"], "holder": record["holder"], "org": org},
        )


def _refuse_history_full(record: dict[str, Any]) -> None:
    """Raises: ContractError `invoice.history_full` when only the reserve is left."""
    if record["event_count"] >= EVENTS_PER_INVOICE_MAX - HISTORY_RESERVED:
        raise ContractError(
            "invoice.history_full",
            f"an invoice records at most {EVENTS_PER_INVOICE_MAX} events; only an unlock "
            "and a final reimburse or void remain possible",
            {"id": record["id"], "events": record["event_count"]},
        )


def _refuse_unknown_org(state: ReadView, org: str, argument: str) -> None:
    """Raises: ContractError `invoice.unknown_org`."""
    if _org_record(state, org) is None:
        raise ContractError(
            "invoice.unknown_org", f"no organisation {org!r}", {"org": org, "argument": argument}
        )


def _new_invoice(
    context: CallContext, args: dict[str, Any], invoice_id_value: str
) -> dict[str, Any]:
    stamp = Stamp.of(context)
    return {
        "id": invoice_id_value,
        "invoice_no": args["invoice_no"],
        "issuer": stamp.org,
        "buyer": args["buyer_org"],
        "holder": args["buyer_org"],
        "status": STATUS_ISSUED,
        "digest": args["digest"],
        "sealed": _sealed_summary(args.get("sealed")),
        "issued": stamp.to_record(),
        "lock": None,
        "reimbursement": None,
        "void": None,
        "event_count": 0,
    }


def _sealed_summary(sealed: bytes | None) -> dict[str, Any] | None:
    """What the record keeps of the sealed document: its SHA-256 and size."""
    if sealed is None:
        return None
    return {"bytes": len(sealed), "sha256": hashlib.sha256(sealed).digest()}


def issue(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """Issue an invoice held by `buyer_org`.

    Raises:
        ContractError: `invoice.not_authorized`, `invoice.exists`, `invoice.quota_exceeded`,
            `invoice.unknown_org` (buyer), `invoice.sealed_invalid`.
    """
    org = context.signer.org
    issuer_record = _check_may_issue(context, _issuer(state, org))
    invoice_id_value = invoice_id_of(org, args["invoice_no"])
    existing = state.get_record(_invoice_key(invoice_id_value))
    if existing is not None:
        issued = existing["issued"]
        raise ContractError(
            "invoice.exists",
            "this organisation issued this invoice number before",
            {"id": invoice_id_value, "height": issued["height"], "tx_id": issued["tx_id"]},
        )
    _check_quota(issuer_record)
    buyer = args["buyer_org"]
    _refuse_unknown_org(state, buyer, "buyer_org")
    if "sealed" in args:
        _check_recipients(state, args["sealed"], org, buyer)
    record = _new_invoice(context, args, invoice_id_value)
    _append_event(state, record, "issue", Stamp.of(context), holder=buyer)
    _save(state, record)
    state.put(_party_key(invoice_id_value, buyer), b"")
    state.put(_issued_key(org, issuer_record["issued_total"]), invoice_id_value.encode())
    issuer_record["issued"] += 1
    issuer_record["issued_total"] += 1
    state.put_record(_issuer_key(org), issuer_record)
    summary = {"id": invoice_id_value, "issuer": org, "holder": buyer}
    return CallOutcome(result=summary, events=[Event("invoice_issued", summary)])


def transfer(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """Make `to_org` the holder.

    Raises:
        ContractError: `invoice.not_found`, `invoice.not_transferable` (reimbursed, void, or
            already held by `to_org`), `invoice.locked`, `invoice.not_holder`,
            `invoice.history_full`, `invoice.unknown_org`.
    """
    record = _load(state, args["id"])
    org, to_org = context.signer.org, args["to_org"]
    if record["status"] in (STATUS_REIMBURSED, STATUS_VOID):
        raise ContractError(
            "invoice.not_transferable",
            f"a {record['status']} invoice cannot change hands",
            {"id": record["id"], "status": record["status"]},
        )
    _refuse_locked(record)
    _refuse_not_holder(record, org)
    _refuse_history_full(record)
    _refuse_unknown_org(state, to_org, "to_org")
    if to_org == org:
        raise ContractError(
            "invoice.not_transferable",
            "the organisation holds the invoice already",
            {"id": record["id"], "status": record["status"], "holder": org},
        )
    _append_event(state, record, "transfer", Stamp.of(context), from_org=org, to_org=to_org)
    record["holder"] = to_org
    _save(state, record)
    state.put(_party_key(record["id"], to_org), b"")
    summary = {"id": record["id"], "from_org": org, "to_org": to_org}
    return CallOutcome(result=summary, events=[Event("invoice_transferred", summary)])


def lock(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """Lock the invoice while the holder approves a reimbursement claim.

    Raises:
        ContractError: `invoice.not_found`, `invoice.already_reimbursed`, `invoice.void`,
            `invoice.locked`, `invoice.not_holder`, `invoice.history_full`.
    """
    record = _load(state, args["id"])
    org = context.signer.org
    _refuse_final(record)
    _refuse_locked(record)
    _refuse_not_holder(record, org)
    _refuse_history_full(record)
    stamp = Stamp.of(context)
    _append_event(state, record, "lock", stamp, claim_ref=args["claim_ref"])
    record["status"] = STATUS_LOCKED
    record["lock"] = {**stamp.to_record(), "claim_ref": args["claim_ref"]}
    _save(state, record)
    summary = {"id": record["id"], "org": org, "claim_ref": args["claim_ref"]}
    return CallOutcome(result=summary, events=[Event("invoice_locked", summary)])


def unlock(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """Release the lock (claim rejected): status `issued` again.

    Raises:
        ContractError: `invoice.not_found`, `invoice.not_locked`, `invoice.locked` (locked
            by another organisation).
    """
    record = _load(state, args["id"])
    org = context.signer.org
    if record["status"] != STATUS_LOCKED:
        raise ContractError(
            "invoice.not_locked",
            f"invoice is {record['status']}, not locked",
            {"id": record["id"], "status": record["status"]},
        )
    _refuse_locked(record, unless_org=org)
    claim_ref = record["lock"]["claim_ref"]
    _append_event(state, record, "unlock", Stamp.of(context), claim_ref=claim_ref)
    record["status"] = STATUS_ISSUED
    record["lock"] = None
    _save(state, record)
    summary = {"id": record["id"], "org": org, "claim_ref": claim_ref}
    return CallOutcome(result=summary, events=[Event("invoice_unlocked", summary)])


def reimburse(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """Stamp the invoice reimbursed, once and for all.

    Raises:
        ContractError: `invoice.not_found`, `invoice.already_reimbursed` (naming the first
            reimbursement), `invoice.void`, `invoice.locked` (by another org),
            `invoice.not_holder`.
    """
    record = _load(state, args["id"])
    org = context.signer.org
    _refuse_final(record)
    _refuse_locked(record, unless_org=org)
    _refuse_not_holder(record, org)
    stamp = Stamp.of(context)
    _append_event(state, record, "reimburse", stamp, claim_ref=args["claim_ref"])
    record["status"] = STATUS_REIMBURSED
    record["lock"] = None
    record["reimbursement"] = {**stamp.to_record(), "claim_ref": args["claim_ref"]}
    _save(state, record)
    _count_for_issuer(state, record["issuer"], "reimbursed")
    summary = {"id": record["id"], "org": org, "claim_ref": args["claim_ref"]}
    return CallOutcome(result=summary, events=[Event("invoice_reimbursed", summary)])


def _count_for_issuer(state: StateView, issuer: str, count: str) -> None:
    record = _issuer(state, issuer)
    _require(record is not None, "an invoice exists without its issuer record")
    record[count] += 1
    state.put_record(_issuer_key(issuer), record)


def void(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """Red-letter reversal by the issuer or a tax office, optionally naming the replacement.

    Raises:
        ContractError: `invoice.not_found`, `invoice.already_reimbursed`, `invoice.void`,
            `invoice.locked`, `invoice.not_issuer`; `tx.invalid_args` for a replacement id
            of another issuer or equal to the voided id.
    """
    record = _load(state, args["id"])
    org = context.signer.org
    replacement_id = args.get("replacement_id")
    _check_replacement(record["id"], replacement_id)
    _refuse_final(record)
    _refuse_locked(record)
    if org != record["issuer"] and ROLE_TAX_OFFICE not in context.signer.roles:
        raise ContractError(
            "invoice.not_issuer",
            "only the issuer or a tax office may void an invoice",
            {"id": record["id"], "issuer": record["issuer"], "org": org},
        )
    stamp = Stamp.of(context)
    fields = {"reason": args["reason"], "replacement_id": replacement_id}
    _append_event(state, record, "void", stamp, **fields)
    record["status"] = STATUS_VOID
    record["void"] = {**stamp.to_record(), **fields}
    _save(state, record)
    _count_for_issuer(state, record["issuer"], "voided")
    summary = {"id": record["id"], "org": org, **fields}
    return CallOutcome(result=summary, events=[Event("invoice_voided", summary)])


def _check_replacement(voided_id: str, replacement_id: str | None) -> None:
    """Raises: ContractError `tx.invalid_args` unless the replacement is another invoice of
    the same issuer."""
    if replacement_id is None:
        return
    same_issuer = replacement_id.partition(ID_SEPARATOR)[0] == voided_id.partition(ID_SEPARATOR)[0]
    if replacement_id == voided_id or not same_issuer:
        raise ContractError(
            "tx.invalid_args",
            "argument 'replacement_id' must be another invoice of the same issuer",
            {"argument": "replacement_id"},
        )


# --- queries -----------------------------------------------------------------------------


def _stamp_json(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    answer = {
        "org": record["org"],
        "signer": record["signer"].hex(),
        "height": record["height"],
        "tx_id": record["tx_id"].hex(),
        "timestamp": record["timestamp"],
    }
    for name in ("claim_ref", "reason", "replacement_id"):
        if name in record:
            answer[name] = record[name]
    return answer


def _event_json(event: dict[str, Any]) -> dict[str, Any]:
    answer = {"method": event["method"], **(_stamp_json(event) or {})}
    for name in ("holder", "from_org", "to_org"):
        if name in event:
            answer[name] = event[name]
    return answer


def may_read_invoice(view: ReadView, record: dict[str, Any], reader: Reader) -> bool:
    """CONTRACTS.md: the issuer, its holders past and present, tax offices and auditors;
    everyone when reads are open (`reader.org` None)."""
    if reader.org is None or reader.org == record["issuer"] or reader.roles & OVERSIGHT_ROLES:
        return True
    return view.get(_party_key(record["id"], reader.org)) is not None


def invoice_answer(view: ReadView, record: dict[str, Any]) -> dict[str, Any]:
    history = [
        _event_json(view.get_record(_event_key(record["id"], n)))
        for n in range(record["event_count"])
    ]
    holders = [record["buyer"], *(e["to_org"] for e in history if e["method"] == "transfer")]
    sealed = record["sealed"]
    return {
        "id": record["id"],
        "invoice_no": record["invoice_no"],
        "issuer": record["issuer"],
        "buyer": record["buyer"],
        "holder": record["holder"],
        "holders": list(dict.fromkeys(holders)),
        "status": record["status"],
        "digest": record["digest"].hex(),
        # The document itself is `args.sealed` of the transaction `issued.tx_id`.
        "sealed": None
        if sealed is None
        else {"sha256": sealed["sha256"].hex(), "bytes": sealed["bytes"]},
        "issued": _stamp_json(record["issued"]),
        "lock": _stamp_json(record["lock"]),
        "reimbursement": _stamp_json(record["reimbursement"]),
        "void": _stamp_json(record["void"]),
        "history": history,
    }


def _invoice_query(view: ReadView, issuer: str, invoice_no: str, reader: Reader) -> Any:
    invoice_id_value = invoice_id_of(issuer, invoice_no)
    if split_invoice_id(invoice_id_value) is None:
        raise _malformed("id", "an invoice id is <issuer org>/<invoice no>, both identifiers")
    record = view.get_record(_invoice_key(invoice_id_value))
    # The same answer for "absent" and "not yours": existence is not disclosed either.
    if record is None or not may_read_invoice(view, record, reader):
        raise QueryNotFound(f"no invoice {invoice_id_value!r}")
    return invoice_answer(view, record)


def _sees_issuer_counts(org: str, reader: Reader) -> bool:
    return reader.org is None or reader.org == org or bool(reader.roles & OVERSIGHT_ROLES)


def _issuer_query(view: ReadView, org: str, reader: Reader) -> dict[str, Any]:
    _parse_identifier(org, "org")
    record = _issuer(view, org)
    if record is None:
        raise QueryNotFound(f"{org!r} was never authorised to issue")
    answer: dict[str, Any] = {
        "org": org,
        "active": record["active"],
        "authorization": record["authorization"],
        "authorized": _stamp_json(record["authorized"]),
        "revoked": _stamp_json(record["revoked"]),
        "max_invoices": record["max_invoices"],
        "valid_until_ms": record["valid_until_ms"],
    }
    if _sees_issuer_counts(org, reader):
        for count in ("issued", "issued_total", "reimbursed", "voided"):
            answer[count] = record[count]
    return answer


def _issued_page(view: ReadView, org: str, start_text: str, reader: Reader) -> dict[str, Any]:
    _parse_identifier(org, "org")
    if not DECIMAL_PATTERN.fullmatch(start_text):
        raise _malformed("from", "from is a non-negative decimal integer")
    record = _issuer(view, org)
    if record is None or not _sees_issuer_counts(org, reader):
        raise QueryNotFound(f"no invoices issued by {org!r}")
    start, total = int(start_text), record["issued_total"]
    end = min(total, start + ISSUER_PAGE_INVOICES_MAX)
    ids = [view.get(_issued_key(org, n)).decode() for n in range(start, end)]
    return {"org": org, "total": total, "invoices": ids, "next": end if end < total else None}


def _malformed(argument: str, message: str) -> ContractError:
    return ContractError("query.invalid_args", message, {"argument": argument})


def _parse_identifier(value: str, argument: str) -> None:
    """Raises: ContractError `query.invalid_args` unless `value` is an identifier."""
    if not IDENTIFIER_PATTERN.fullmatch(value):
        raise _malformed(argument, f"{argument} is 1..64 characters of [A-Za-z0-9._:-]")


def query(view: ReadView, path: list[str], reader: Reader) -> Any:
    """`invoices/{issuer}/{invoice_no}` (the id's `/` may arrive as `%2F`),
    `issuers/{org}`, `issuers/{org}/invoices`, `issuers/{org}/invoices/from/{n}`.

    With signed reads an invoice is visible to its issuer, its holders past and present,
    tax offices and auditors; anyone else gets 404, as for an invoice that does not exist.
    Issuer counts and listings are visible to the org itself, tax offices and auditors.

    Raises:
        QueryNotFound: unknown path or record, or one the reader may not see.
        ContractError: `query.invalid_args` for a malformed id, org or index.
    """
    if len(path) == 3 and path[0] == "invoices":
        return _invoice_query(view, path[1], path[2], reader)
    if len(path) == 2 and path[0] == "issuers":
        return _issuer_query(view, path[1], reader)
    if len(path) == 3 and path[0] == "issuers" and path[2] == "invoices":
        return _issued_page(view, path[1], "0", reader)
    if len(path) == 5 and path[0] == "issuers" and path[2:4] == ["invoices", "from"]:
        return _issued_page(view, path[1], path[4], reader)
    raise QueryNotFound(f"no invoice query {'/'.join(path)!r}")


CLAIM_REF: Final = Arg(identifier)
ID: Final = Arg(invoice_id)

CONTRACT: Final = Contract(
    name=NAME,
    methods={
        "authorize_issuer": Method(
            "authorize_issuer",
            authorize_issuer,
            {
                "org": Arg(identifier),
                "max_invoices": Arg(integer(1, MAX_INVOICES_MAX), optional=True),
                "valid_until_ms": Arg(integer(0, TIME_MS_MAX), optional=True),
            },
            roles=frozenset({ROLE_TAX_OFFICE}),
        ),
        "revoke_issuer": Method(
            "revoke_issuer",
            revoke_issuer,
            {"org": Arg(identifier)},
            roles=frozenset({ROLE_TAX_OFFICE}),
        ),
        "issue": Method(
            "issue",
            issue,
            {
                "invoice_no": Arg(identifier),
                "buyer_org": Arg(identifier),
                "digest": Arg(hash32, binary=True),
                "sealed": Arg(binary(SEALED_BYTES_MAX), optional=True, binary=True),
            },
            roles=frozenset({ROLE_ENTERPRISE}),
        ),
        "transfer": Method("transfer", transfer, {"id": ID, "to_org": Arg(identifier)}),
        "lock": Method("lock", lock, {"id": ID, "claim_ref": CLAIM_REF}),
        "unlock": Method("unlock", unlock, {"id": ID}),
        "reimburse": Method("reimburse", reimburse, {"id": ID, "claim_ref": CLAIM_REF}),
        "void": Method(
            "void",
            void,
            {
                "id": ID,
                "reason": Arg(text(REASON_CHARS_MAX)),
                "replacement_id": Arg(invoice_id, optional=True),
            },
        ),
    },
    query=query,
)
