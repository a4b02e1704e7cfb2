"""The `invoice` contract (CONTRACTS.md, invoice) through the real execution path.

The consortium here has what invoices need beyond the four demo organisations: a second
tax office (sealing covers every one), a third enterprise (the competitor) and an auditor.
Every method and every error code is exercised, the visibility rule of signed reads is
checked on the query function, and a hypothesis state machine drives random call sequences
by every role against a small model: no sequence reaches a second reimbursement, a
reimbursed invoice voided, or a voided one reimbursed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from contracts import invoice
from contracts.membership import OrganizationSpec
from contracts.runtime import ContractError, QueryNotFound, Reader, ReadView
from node.api.openapi import build_openapi
from node.bench_invoice import SigningJob, invoice_document, sign_chunk
from node.bench_invoice import invoice_no as bench_invoice_no
from node.block import ContractEvent, Receipt
from node.config import ApiSection
from node.genesis import Validator, genesis_document, parse_genesis
from node.invoice_document import (
    InvoiceDocumentError,
    document_from_bytes,
    load_document,
    parse_document,
    round_half_up,
)
from node.sealing import public_key_bytes, seal, unseal
from node.transaction import Transaction, decode_envelope
from tests.contract_harness import BLOCK_INTERVAL_MS, ContractHarness
from tests.unit.conftest import GENESIS_TIME_MS, Chain, Consortium, key_from_label

GENESIS_TIME = GENESIS_TIME_MS
BLOCK_INTERVAL = BLOCK_INTERVAL_MS
DIGEST = hashlib.sha256(b"invoice document").digest()
ORG_ROLES: dict[str, tuple[str, ...]] = {
    "notary": ("notary",),
    "taxoffice": ("tax_office",),
    "taxoffice-2": ("tax_office",),
    "enterprise-a": ("enterprise",),
    "enterprise-b": ("enterprise",),
    "enterprise-c": ("enterprise",),
    "auditor": ("auditor",),
}
ENTERPRISES = ("enterprise-a", "enterprise-b", "enterprise-c")


def build_invoice_consortium() -> Consortium:
    admins = {org: key_from_label(f"invoice/{org}/admin") for org in ORG_ROLES}
    members = {org: key_from_label(f"invoice/{org}/member") for org in ORG_ROLES}
    orgs = [
        OrganizationSpec(
            org, org.title(), roles, (admins[org].public_key,), (members[org].public_key,)
        )
        for org, roles in ORG_ROLES.items()
    ]
    validator = key_from_label("invoice/validator")
    raw = genesis_document(
        "chancery-invoice-test",
        GENESIS_TIME,
        orgs,
        [Validator(0, "notary", validator.public_key)],
    )
    return Consortium(parse_genesis(raw), raw, admins, members, (validator,))


CONSORTIUM = build_invoice_consortium()


def encryption_key(org: str, role: str = "member") -> X25519PrivateKey:
    seed = hashlib.sha256(f"invoice/{org}/{role}/x25519".encode()).digest()
    return X25519PrivateKey.from_private_bytes(seed)


class Harness(ContractHarness):
    """Invoice calls in blocks on the genesis state (tests/contract_harness.py)."""

    def __init__(self) -> None:
        super().__init__(CONSORTIUM, invoice)

    def record(self, invoice_id: str) -> dict[str, Any]:
        return self.query(f"invoices/{invoice_id}")

    # -- common setups --------------------------------------------------------------------

    def authorize(self, org: str = "enterprise-a", **extra: Any) -> Receipt:
        return self.ok("authorize_issuer", {"org": org, **extra}, "taxoffice")

    def issue(
        self, invoice_no: str = "INV-1", buyer: str = "enterprise-b", issuer: str = "enterprise-a"
    ) -> str:
        self.ok("issue", issue_args(invoice_no, buyer), issuer)
        return f"{issuer}/{invoice_no}"

    def register_encryption_keys(self, orgs: tuple[str, ...] = tuple(ORG_ROLES)) -> None:
        txs = [
            self.tx(
                "set_encryption_key",
                {"encryption_key": public_key_bytes(encryption_key(org))},
                org,
                contract="membership",
            )
            for org in orgs
        ]
        assert all(r.ok for r in self.commit(txs).receipts)


def issue_args(invoice_no: str = "INV-1", buyer: str = "enterprise-b", **extra: Any) -> dict:
    return {"invoice_no": invoice_no, "buyer_org": buyer, "digest": DIGEST, **extra}


@pytest.fixture
def harness() -> Harness:
    return Harness()


@pytest.fixture
def issued(harness: Harness) -> tuple[Harness, str]:
    """enterprise-a authorised; INV-1 issued to enterprise-b."""
    harness.authorize()
    return harness, harness.issue()


def assert_failed(receipt: Receipt, code: str) -> dict[str, Any]:
    assert receipt.ok is False, receipt
    assert receipt.error == code, receipt
    assert receipt.events == ()
    return receipt.result


# --- authorize_issuer / revoke_issuer -------------------------------------------------------


def test_authorize_issuer_records_the_authorisation(harness: Harness) -> None:
    receipt = harness.authorize(max_invoices=5, valid_until_ms=GENESIS_TIME + 10**6)
    summary = {
        "org": "enterprise-a",
        "authorization": 1,
        "max_invoices": 5,
        "valid_until_ms": GENESIS_TIME + 10**6,
    }
    assert receipt.result == summary
    assert receipt.events == (ContractEvent("issuer_authorized", summary),)
    answer = harness.query("issuers/enterprise-a")
    assert answer["active"] is True
    assert answer["authorized"]["org"] == "taxoffice"
    assert answer["authorized"]["height"] == 1
    assert (answer["issued"], answer["issued_total"], answer["revoked"]) == (0, 0, None)


@pytest.mark.parametrize("org", ["notary", "auditor", "enterprise-a"])
def test_only_tax_offices_authorize(harness: Harness, org: str) -> None:
    receipt = harness.call("authorize_issuer", {"org": "enterprise-b"}, org)
    assert_failed(receipt, "tx.forbidden")
    assert harness.call("authorize_issuer", {"org": "enterprise-b"}, "taxoffice-2").ok


@pytest.mark.parametrize(("org", "roles"), [("notary", ["notary"]), ("nobody", None)])
def test_authorize_refuses_what_is_not_an_enterprise(
    harness: Harness, org: str, roles: list[str] | None
) -> None:
    receipt = harness.call("authorize_issuer", {"org": org}, "taxoffice")
    assert assert_failed(receipt, "invoice.not_enterprise") == {"org": org, "roles": roles}


@pytest.mark.parametrize(
    ("args", "argument"),
    [
        ({"org": "enterprise-a", "max_invoices": 0}, "max_invoices"),
        ({"org": "enterprise-a", "max_invoices": 2**40 + 1}, "max_invoices"),
        ({"org": "enterprise-a", "max_invoices": True}, "max_invoices"),
        ({"org": "enterprise-a", "valid_until_ms": -1}, "valid_until_ms"),
        ({"org": "enterprise-a", "valid_until_ms": "soon"}, "valid_until_ms"),
        ({"org": "a/b"}, "org"),
        ({}, "org"),
    ],
)
def test_authorize_argument_checks(harness: Harness, args: dict, argument: str) -> None:
    receipt = harness.call("authorize_issuer", args, "taxoffice")
    assert assert_failed(receipt, "tx.invalid_args") == {"argument": argument}


def test_revoke_stops_issuing_but_not_issued_invoices(issued: tuple[Harness, str]) -> None:
    harness, invoice_id = issued
    receipt = harness.ok("revoke_issuer", {"org": "enterprise-a"}, "taxoffice-2")
    assert receipt.result == {"org": "enterprise-a", "authorization": 1}
    refused = harness.call("issue", issue_args("INV-2"))
    assert assert_failed(refused, "invoice.not_authorized") == {"org": "enterprise-a"}
    harness.ok("reimburse", {"id": invoice_id, "claim_ref": "C-1"}, "enterprise-b")
    answer = harness.query("issuers/enterprise-a")
    assert answer["active"] is False
    assert answer["revoked"]["org"] == "taxoffice-2"
    assert (answer["issued_total"], answer["reimbursed"]) == (1, 1)


def test_revoke_of_an_org_without_authorisation_is_refused(harness: Harness) -> None:
    receipt = harness.call("revoke_issuer", {"org": "enterprise-b"}, "taxoffice")
    assert assert_failed(receipt, "invoice.not_authorized") == {"org": "enterprise-b"}
    harness.authorize("enterprise-b")
    harness.ok("revoke_issuer", {"org": "enterprise-b"}, "taxoffice")
    again = harness.call("revoke_issuer", {"org": "enterprise-b"}, "taxoffice")
    assert_failed(again, "invoice.not_authorized")
    forbidden = harness.call("revoke_issuer", {"org": "enterprise-b"}, "enterprise-a")
    assert_failed(forbidden, "tx.forbidden")


# --- issue ----------------------------------------------------------------------------------


def test_issue_creates_the_invoice(harness: Harness) -> None:
    harness.authorize()
    tx = harness.tx("issue", issue_args())
    output = harness.commit([tx])
    (receipt,) = output.receipts
    summary = {"id": "enterprise-a/INV-1", "issuer": "enterprise-a", "holder": "enterprise-b"}
    assert receipt.ok and receipt.result == summary
    assert receipt.events == (ContractEvent("invoice_issued", summary),)
    assert sorted(output.writes) == sorted(
        [
            b"invoice/issuer/enterprise-a",
            b"invoice/issued/enterprise-a/" + bytes(8),
            b"invoice/invoice/enterprise-a/INV-1",
            b"invoice/event/enterprise-a/INV-1/" + bytes(8),
            b"invoice/party/enterprise-a/INV-1/enterprise-b",
        ]
    )
    record = harness.record("enterprise-a/INV-1")
    signer = CONSORTIUM.members["enterprise-a"].public_key.hex()
    issued = {
        "org": "enterprise-a",
        "signer": signer,
        "height": 2,
        "tx_id": tx.tx_id.hex(),
        "timestamp": GENESIS_TIME + 2 * BLOCK_INTERVAL,
    }
    assert record == {
        "id": "enterprise-a/INV-1",
        "invoice_no": "INV-1",
        "issuer": "enterprise-a",
        "buyer": "enterprise-b",
        "holder": "enterprise-b",
        "holders": ["enterprise-b"],
        "status": "issued",
        "digest": DIGEST.hex(),
        "sealed": None,
        "issued": issued,
        "lock": None,
        "reimbursement": None,
        "void": None,
        "history": [{"method": "issue", **issued, "holder": "enterprise-b"}],
    }


def test_issue_needs_the_enterprise_role(harness: Harness) -> None:
    for org in ("taxoffice", "notary", "auditor"):
        assert_failed(harness.call("issue", issue_args(), org), "tx.forbidden")


def test_issue_needs_an_authorisation(harness: Harness) -> None:
    receipt = harness.call("issue", issue_args())
    assert assert_failed(receipt, "invoice.not_authorized") == {"org": "enterprise-a"}
    harness.authorize("enterprise-b")
    assert_failed(harness.call("issue", issue_args()), "invoice.not_authorized")


def test_authorisation_expires_by_block_time(harness: Harness) -> None:
    # Block 2 is at GENESIS_TIME + 2000: valid through it, refused from block 3 on.
    harness.authorize(valid_until_ms=GENESIS_TIME + 2 * BLOCK_INTERVAL)
    harness.ok("issue", issue_args("INV-1"))
    receipt = harness.call("issue", issue_args("INV-2"))
    details = assert_failed(receipt, "invoice.not_authorized")
    assert details == {"org": "enterprise-a", "valid_until_ms": GENESIS_TIME + 2 * BLOCK_INTERVAL}


def test_quota_counts_invoices_under_the_current_authorisation(harness: Harness) -> None:
    harness.authorize(max_invoices=2)
    harness.issue("INV-1")
    harness.issue("INV-2")
    receipt = harness.call("issue", issue_args("INV-3"))
    details = assert_failed(receipt, "invoice.quota_exceeded")
    assert details == {"org": "enterprise-a", "max_invoices": 2, "issued": 2}
    harness.authorize(max_invoices=1)  # a new authorisation starts a new count
    harness.issue("INV-3")
    assert_failed(harness.call("issue", issue_args("INV-4")), "invoice.quota_exceeded")
    answer = harness.query("issuers/enterprise-a")
    assert (answer["authorization"], answer["issued"], answer["issued_total"]) == (2, 1, 3)


def test_issue_refuses_an_existing_number_naming_the_first(issued: tuple[Harness, str]) -> None:
    harness, invoice_id = issued
    first = harness.record(invoice_id)["issued"]
    receipt = harness.call("issue", issue_args("INV-1", buyer="enterprise-c"))
    details = assert_failed(receipt, "invoice.exists")
    assert details == {
        "id": invoice_id,
        "height": first["height"],
        "tx_id": bytes.fromhex(first["tx_id"]),
    }
    # The same number from another issuer is another invoice.
    harness.authorize("enterprise-b")
    assert harness.issue("INV-1", buyer="enterprise-a", issuer="enterprise-b")


def test_issue_within_one_block_second_is_exists(harness: Harness) -> None:
    harness.authorize(max_invoices=10)
    output = harness.commit([harness.tx("issue", issue_args()), harness.tx("issue", issue_args())])
    assert output.receipts[0].ok
    assert_failed(output.receipts[1], "invoice.exists")
    assert harness.query("issuers/enterprise-a")["issued"] == 1


def test_issue_to_an_unknown_buyer_is_refused(harness: Harness) -> None:
    harness.authorize()
    receipt = harness.call("issue", issue_args(buyer="nobody"))
    details = assert_failed(receipt, "invoice.unknown_org")
    assert details == {"org": "nobody", "argument": "buyer_org"}


@pytest.mark.parametrize(
    ("args", "argument"),
    [
        (issue_args("no spaces"), "invoice_no"),
        (issue_args("x" * 65), "invoice_no"),
        (issue_args("a/b"), "invoice_no"),
        (issue_args(digest=DIGEST[:31]), "digest"),
        (issue_args(sealed=b"x" * (invoice.SEALED_BYTES_MAX + 1)), "sealed"),
        (issue_args(sealed="text"), "sealed"),
        ({"invoice_no": "INV-1", "digest": DIGEST}, "buyer_org"),
    ],
)
def test_issue_argument_checks(harness: Harness, args: dict, argument: str) -> None:
    harness.authorize()
    assert assert_failed(harness.call("issue", args), "tx.invalid_args") == {"argument": argument}


# --- sealed documents -----------------------------------------------------------------------

RECIPIENT_ORGS = ("enterprise-a", "enterprise-b", "taxoffice", "taxoffice-2")


def sealed_for(*orgs: str, document: bytes = b"{}", context: bytes = b"") -> bytes:
    keys = [public_key_bytes(encryption_key(org)) for org in orgs]
    return seal(document, keys, context=context)


def test_issue_with_a_sealed_document_for_every_party(harness: Harness) -> None:
    harness.register_encryption_keys()
    harness.authorize()
    sealed = sealed_for(*RECIPIENT_ORGS, document=b'{"total":1}', context=b"ctx")
    harness.ok("issue", issue_args(sealed=sealed))
    record = harness.record("enterprise-a/INV-1")
    # State keeps the document's SHA-256 and size; the bytes stay in the transaction.
    assert record["sealed"] == {"sha256": hashlib.sha256(sealed).hexdigest(), "bytes": len(sealed)}
    assert not any(sealed in value for value in harness.state.values() if value)
    for org in RECIPIENT_ORGS:
        opened = unseal(sealed, encryption_key(org), context=b"ctx")
        assert opened == b'{"total":1}'


def test_orgs_without_an_encryption_key_need_no_recipient(harness: Harness) -> None:
    harness.register_encryption_keys(("enterprise-a", "taxoffice"))
    harness.authorize()
    harness.ok("issue", issue_args(sealed=sealed_for("enterprise-a", "taxoffice")))


def test_sealed_must_cover_every_tax_office(harness: Harness) -> None:
    harness.register_encryption_keys()
    harness.authorize()
    sealed = sealed_for("enterprise-a", "enterprise-b", "taxoffice")
    details = assert_failed(
        harness.call("issue", issue_args(sealed=sealed)), "invoice.sealed_invalid"
    )
    assert details == {
        "reason": "sealed for none of this organisation's keys",
        "org": "taxoffice-2",
    }


def test_sealed_for_an_outsider_is_refused(harness: Harness) -> None:
    harness.register_encryption_keys()
    harness.authorize()
    sealed = sealed_for(*RECIPIENT_ORGS, "enterprise-c")
    details = assert_failed(
        harness.call("issue", issue_args(sealed=sealed)), "invoice.sealed_invalid"
    )
    assert details["recipient"] == public_key_bytes(encryption_key("enterprise-c"))
    unregistered = public_key_bytes(X25519PrivateKey.generate())
    sealed = seal(
        b"{}", [public_key_bytes(encryption_key(o)) for o in RECIPIENT_ORGS] + [unregistered]
    )
    assert_failed(harness.call("issue", issue_args(sealed=sealed)), "invoice.sealed_invalid")


def test_revoked_members_keys_no_longer_count(harness: Harness) -> None:
    harness.register_encryption_keys()
    harness.authorize()
    member = CONSORTIUM.members["taxoffice-2"].public_key
    tx = harness.tx(
        "revoke_member", {"public_key": member}, "taxoffice-2", admin=True, contract="membership"
    )
    assert harness.commit([tx]).receipts[0].ok
    # taxoffice-2 has no active key with an encryption key left: not required, not allowed.
    harness.ok("issue", issue_args("INV-1", sealed=sealed_for(*RECIPIENT_ORGS[:3])))
    receipt = harness.call("issue", issue_args("INV-2", sealed=sealed_for(*RECIPIENT_ORGS)))
    assert_failed(receipt, "invoice.sealed_invalid")


def valid_sealed_map() -> dict[str, Any]:
    return msgpack.unpackb(sealed_for(*RECIPIENT_ORGS), raw=False)


def repacked(**changes: Any) -> bytes:
    sealed_map = {**valid_sealed_map(), **changes}
    return msgpack.packb({k: sealed_map[k] for k in sorted(sealed_map)}, use_bin_type=True)


@pytest.mark.parametrize(
    "sealed",
    [
        b"\xc1",
        b"not msgpack at all",
        msgpack.packb([1, 2, 3]),
        repacked(version=2),
        repacked(nonce=b"short"),
        repacked(ephemeral_key=b"x" * 31),
        repacked(ciphertext=b"x" * 15),
        repacked(recipients={}),
        repacked(recipients={"AB" * 32: b"x" * 48}),
        repacked(recipients={"ab" * 32: b"x" * 47}),
        repacked(extra=1),
        # Not canonical: the map's keys out of order.
        msgpack.packb(dict(reversed(list(valid_sealed_map().items()))), use_bin_type=True),
    ],
)
def test_malformed_sealed_documents_are_refused(harness: Harness, sealed: bytes) -> None:
    harness.register_encryption_keys()
    harness.authorize()
    receipt = harness.call("issue", issue_args(sealed=sealed))
    assert "reason" in assert_failed(receipt, "invoice.sealed_invalid")


# --- transfer -------------------------------------------------------------------------------


def test_transfer_moves_the_invoice_and_records_it(issued: tuple[Harness, str]) -> None:
    harness, invoice_id = issued
    receipt = harness.ok("transfer", {"id": invoice_id, "to_org": "enterprise-c"}, "enterprise-b")
    summary = {"id": invoice_id, "from_org": "enterprise-b", "to_org": "enterprise-c"}
    assert receipt.result == summary
    assert receipt.events == (ContractEvent("invoice_transferred", summary),)
    record = harness.record(invoice_id)
    assert record["holder"] == "enterprise-c"
    assert record["holders"] == ["enterprise-b", "enterprise-c"]
    event = record["history"][1]
    assert (event["method"], event["org"], event["from_org"], event["to_org"]) == (
        "transfer",
        "enterprise-b",
        "enterprise-b",
        "enterprise-c",
    )


def test_transfer_refusals(issued: tuple[Harness, str]) -> None:
    harness, invoice_id = issued
    not_holder = harness.call("transfer", {"id": invoice_id, "to_org": "enterprise-c"})
    assert assert_failed(not_holder, "invoice.not_holder") == {
        "id": invoice_id,
        "holder": "enterprise-b",
        "org": "enterprise-a",
    }
    unknown = harness.call("transfer", {"id": invoice_id, "to_org": "nobody"}, "enterprise-b")
    assert assert_failed(unknown, "invoice.unknown_org") == {"org": "nobody", "argument": "to_org"}
    same = harness.call("transfer", {"id": invoice_id, "to_org": "enterprise-b"}, "enterprise-b")
    assert_failed(same, "invoice.not_transferable")
    missing = harness.call("transfer", {"id": "enterprise-a/NONE", "to_org": "x"}, "enterprise-b")
    assert assert_failed(missing, "invoice.not_found") == {"id": "enterprise-a/NONE"}


@pytest.mark.parametrize("final", ["reimburse", "void"])
def test_final_invoices_are_not_transferable(issued: tuple[Harness, str], final: str) -> None:
    harness, invoice_id = issued
    if final == "reimburse":
        harness.ok("reimburse", {"id": invoice_id, "claim_ref": "C-1"}, "enterprise-b")
    else:
        harness.ok("void", {"id": invoice_id, "reason": "wrong amount"}, "enterprise-a")
    receipt = harness.call("transfer", {"id": invoice_id, "to_org": "enterprise-c"}, "enterprise-b")
    status = "reimbursed" if final == "reimburse" else "void"
    assert assert_failed(receipt, "invoice.not_transferable") == {
        "id": invoice_id,
        "status": status,
    }


# --- lock / unlock --------------------------------------------------------------------------


def test_lock_blocks_transfer_void_and_other_locks(issued: tuple[Harness, str]) -> None:
    harness, invoice_id = issued
    lock_tx = harness.tx("lock", {"id": invoice_id, "claim_ref": "CLAIM-7"}, "enterprise-b")
    receipt = harness.commit([lock_tx]).receipts[0]
    summary = {"id": invoice_id, "org": "enterprise-b", "claim_ref": "CLAIM-7"}
    assert receipt.result == summary
    assert receipt.events == (ContractEvent("invoice_locked", summary),)
    locked = {
        "id": invoice_id,
        "org": "enterprise-b",
        "claim_ref": "CLAIM-7",
        "height": 3,
        "tx_id": lock_tx.tx_id,
    }
    attempts = [
        ("transfer", {"id": invoice_id, "to_org": "enterprise-c"}, "enterprise-b"),
        ("lock", {"id": invoice_id, "claim_ref": "C-2"}, "enterprise-b"),
        ("lock", {"id": invoice_id, "claim_ref": "C-2"}, "enterprise-c"),
        ("void", {"id": invoice_id, "reason": "r"}, "enterprise-a"),
        ("void", {"id": invoice_id, "reason": "r"}, "taxoffice"),
        ("void", {"id": invoice_id, "reason": "r"}, "enterprise-c"),
        ("unlock", {"id": invoice_id}, "enterprise-c"),
        ("reimburse", {"id": invoice_id, "claim_ref": "C-3"}, "enterprise-c"),
    ]
    for method, args, org in attempts:
        assert assert_failed(harness.call(method, args, org), "invoice.locked") == locked, method
    assert harness.record(invoice_id)["status"] == "locked"
    assert harness.record(invoice_id)["lock"]["claim_ref"] == "CLAIM-7"


def test_unlock_returns_to_issued(issued: tuple[Harness, str]) -> None:
    harness, invoice_id = issued
    harness.ok("lock", {"id": invoice_id, "claim_ref": "CLAIM-7"}, "enterprise-b")
    receipt = harness.ok("unlock", {"id": invoice_id}, "enterprise-b")
    assert receipt.result == {"id": invoice_id, "org": "enterprise-b", "claim_ref": "CLAIM-7"}
    record = harness.record(invoice_id)
    assert (record["status"], record["lock"]) == ("issued", None)
    assert [e["method"] for e in record["history"]] == ["issue", "lock", "unlock"]
    again = harness.call("unlock", {"id": invoice_id}, "enterprise-b")
    assert assert_failed(again, "invoice.not_locked") == {"id": invoice_id, "status": "issued"}
    harness.ok("transfer", {"id": invoice_id, "to_org": "enterprise-c"}, "enterprise-b")


def test_lock_refusals(issued: tuple[Harness, str]) -> None:
    harness, invoice_id = issued
    not_holder = harness.call("lock", {"id": invoice_id, "claim_ref": "C"}, "enterprise-a")
    assert_failed(not_holder, "invoice.not_holder")
    harness.ok("reimburse", {"id": invoice_id, "claim_ref": "C-1"}, "enterprise-b")
    after = harness.call("lock", {"id": invoice_id, "claim_ref": "C"}, "enterprise-b")
    assert_failed(after, "invoice.already_reimbursed")
    assert_failed(harness.call("unlock", {"id": invoice_id}, "enterprise-b"), "invoice.not_locked")
    harness.issue("INV-2")
    harness.ok("void", {"id": "enterprise-a/INV-2", "reason": "r"}, "enterprise-a")
    voided = harness.call("lock", {"id": "enterprise-a/INV-2", "claim_ref": "C"}, "enterprise-b")
    assert_failed(voided, "invoice.void")


# --- reimburse ------------------------------------------------------------------------------


def test_reimburse_is_final_and_names_the_first(issued: tuple[Harness, str]) -> None:
    harness, invoice_id = issued
    first_tx = harness.tx("reimburse", {"id": invoice_id, "claim_ref": "EXP-1"}, "enterprise-b")
    same_block = [
        harness.tx("reimburse", {"id": invoice_id, "claim_ref": "EXP-2"}, "enterprise-b"),
        harness.tx("reimburse", {"id": invoice_id, "claim_ref": "EXP-3"}, "enterprise-c"),
    ]
    output = harness.commit([first_tx, *same_block])
    summary = {"id": invoice_id, "org": "enterprise-b", "claim_ref": "EXP-1"}
    assert output.receipts[0].result == summary
    assert output.receipts[0].events == (ContractEvent("invoice_reimbursed", summary),)
    first = {
        "id": invoice_id,
        "org": "enterprise-b",
        "height": 3,
        "tx_id": first_tx.tx_id,
        "claim_ref": "EXP-1",
        "timestamp": GENESIS_TIME + 3 * BLOCK_INTERVAL,
    }
    for receipt in output.receipts[1:]:
        assert assert_failed(receipt, "invoice.already_reimbursed") == first
    for org in ("enterprise-b", "enterprise-a", "taxoffice"):
        later = harness.call("reimburse", {"id": invoice_id, "claim_ref": "EXP-9"}, org)
        assert assert_failed(later, "invoice.already_reimbursed") == first
    void = harness.call("void", {"id": invoice_id, "reason": "r"}, "enterprise-a")
    assert assert_failed(void, "invoice.already_reimbursed") == first
    record = harness.record(invoice_id)
    assert record["status"] == "reimbursed"
    assert record["reimbursement"]["claim_ref"] == "EXP-1"
    assert [e["method"] for e in record["history"]] == ["issue", "reimburse"]


def test_the_locking_org_reimburses(issued: tuple[Harness, str]) -> None:
    harness, invoice_id = issued
    harness.ok("lock", {"id": invoice_id, "claim_ref": "CLAIM-7"}, "enterprise-b")
    harness.ok("reimburse", {"id": invoice_id, "claim_ref": "CLAIM-7"}, "enterprise-b")
    record = harness.record(invoice_id)
    assert (record["status"], record["lock"]) == ("reimbursed", None)
    assert [e["method"] for e in record["history"]] == ["issue", "lock", "reimburse"]


def test_reimburse_refusals(issued: tuple[Harness, str]) -> None:
    harness, invoice_id = issued
    not_holder = harness.call("reimburse", {"id": invoice_id, "claim_ref": "C"}, "enterprise-c")
    assert_failed(not_holder, "invoice.not_holder")
    missing = harness.call("reimburse", {"id": "enterprise-a/NONE", "claim_ref": "C"})
    assert_failed(missing, "invoice.not_found")
    harness.ok("void", {"id": invoice_id, "reason": "duplicate"}, "taxoffice")
    voided = harness.call("reimburse", {"id": invoice_id, "claim_ref": "C"}, "enterprise-b")
    details = assert_failed(voided, "invoice.void")
    assert (details["org"], details["reason"]) == ("taxoffice", "duplicate")


# --- void -----------------------------------------------------------------------------------


def test_void_by_the_issuer_with_a_replacement(issued: tuple[Harness, str]) -> None:
    harness, invoice_id = issued
    args = {"id": invoice_id, "reason": "wrong tax rate", "replacement_id": "enterprise-a/INV-2"}
    receipt = harness.ok("void", args, "enterprise-a")
    summary = {
        "id": invoice_id,
        "org": "enterprise-a",
        "reason": "wrong tax rate",
        "replacement_id": "enterprise-a/INV-2",
    }
    assert receipt.result == summary
    assert receipt.events == (ContractEvent("invoice_voided", summary),)
    record = harness.record(invoice_id)
    assert record["status"] == "void"
    assert record["void"]["replacement_id"] == "enterprise-a/INV-2"
    assert record["history"][-1]["reason"] == "wrong tax rate"
    again = harness.call("void", {"id": invoice_id, "reason": "again"}, "taxoffice")
    assert assert_failed(again, "invoice.void")["org"] == "enterprise-a"
    assert harness.query("issuers/enterprise-a")["voided"] == 1


@pytest.mark.parametrize("org", ["enterprise-b", "enterprise-c", "notary", "auditor"])
def test_only_the_issuer_or_a_tax_office_voids(issued: tuple[Harness, str], org: str) -> None:
    harness, invoice_id = issued
    receipt = harness.call("void", {"id": invoice_id, "reason": "r"}, org)
    details = assert_failed(receipt, "invoice.not_issuer")
    assert details == {"id": invoice_id, "issuer": "enterprise-a", "org": org}
    harness.ok("void", {"id": invoice_id, "reason": "r"}, "taxoffice-2")


@pytest.mark.parametrize(
    ("args", "argument"),
    [
        (
            {"id": "enterprise-a/INV-1", "reason": "r", "replacement_id": "enterprise-b/X"},
            "replacement_id",
        ),
        (
            {"id": "enterprise-a/INV-1", "reason": "r", "replacement_id": "enterprise-a/INV-1"},
            "replacement_id",
        ),
        ({"id": "enterprise-a/INV-1", "reason": "r", "replacement_id": "INV-2"}, "replacement_id"),
        ({"id": "enterprise-a/INV-1", "reason": ""}, "reason"),
        ({"id": "enterprise-a/INV-1", "reason": "r" * 257}, "reason"),
        ({"id": "enterprise-a", "reason": "r"}, "id"),
        ({"id": "enterprise-a/INV/1", "reason": "r"}, "id"),
        ({"id": "/INV-1", "reason": "r"}, "id"),
    ],
)
def test_void_argument_checks(issued: tuple[Harness, str], args: dict, argument: str) -> None:
    harness, _ = issued
    receipt = harness.call("void", args, "enterprise-a")
    assert assert_failed(receipt, "tx.invalid_args") == {"argument": argument}


# --- history --------------------------------------------------------------------------------


def test_history_records_every_event_in_order(issued: tuple[Harness, str]) -> None:
    harness, invoice_id = issued
    steps = [
        ("transfer", {"id": invoice_id, "to_org": "enterprise-c"}, "enterprise-b"),
        ("lock", {"id": invoice_id, "claim_ref": "C-1"}, "enterprise-c"),
        ("unlock", {"id": invoice_id}, "enterprise-c"),
        ("transfer", {"id": invoice_id, "to_org": "enterprise-b"}, "enterprise-c"),
        ("reimburse", {"id": invoice_id, "claim_ref": "C-2"}, "enterprise-b"),
    ]
    tx_ids = [bytes.fromhex(harness.record(invoice_id)["issued"]["tx_id"])]
    for method, args, org in steps:
        tx = harness.tx(method, args, org)
        assert harness.commit([tx]).receipts[0].ok
        tx_ids.append(tx.tx_id)
    history = harness.record(invoice_id)["history"]
    assert [(e["method"], e["org"], e["height"]) for e in history] == [
        ("issue", "enterprise-a", 2),
        ("transfer", "enterprise-b", 3),
        ("lock", "enterprise-c", 4),
        ("unlock", "enterprise-c", 5),
        ("transfer", "enterprise-c", 6),
        ("reimburse", "enterprise-b", 7),
    ]
    assert [e["tx_id"] for e in history] == [tx_id.hex() for tx_id in tx_ids]
    assert harness.record(invoice_id)["holders"] == ["enterprise-b", "enterprise-c"]


def test_history_cap_keeps_room_for_unlock_and_the_final_step(
    issued: tuple[Harness, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    harness, invoice_id = issued
    monkeypatch.setattr(invoice, "EVENTS_PER_INVOICE_MAX", 4)  # issue, lock + reserve of 2
    harness.ok("lock", {"id": invoice_id, "claim_ref": "C-1"}, "enterprise-b")
    harness.ok("unlock", {"id": invoice_id}, "enterprise-b")
    full = harness.call("lock", {"id": invoice_id, "claim_ref": "C-2"}, "enterprise-b")
    assert assert_failed(full, "invoice.history_full") == {"id": invoice_id, "events": 3}
    transfer = harness.call(
        "transfer", {"id": invoice_id, "to_org": "enterprise-c"}, "enterprise-b"
    )
    assert_failed(transfer, "invoice.history_full")
    harness.ok("reimburse", {"id": invoice_id, "claim_ref": "C-3"}, "enterprise-b")
    assert len(harness.record(invoice_id)["history"]) == 4


# --- queries and visibility -----------------------------------------------------------------


def reader(org: str) -> Reader:
    return Reader(org, frozenset(ORG_ROLES[org]))


def test_visibility_of_an_invoice_under_signed_reads(issued: tuple[Harness, str]) -> None:
    harness, invoice_id = issued
    harness.ok("transfer", {"id": invoice_id, "to_org": "enterprise-c"}, "enterprise-b")
    path = f"invoices/{invoice_id}"
    for org in (
        "enterprise-a",
        "enterprise-b",
        "enterprise-c",
        "taxoffice",
        "taxoffice-2",
        "auditor",
    ):
        assert harness.query(path, reader(org))["id"] == invoice_id, org
    assert harness.query(path)["id"] == invoice_id  # open reads
    with pytest.raises(QueryNotFound) as not_visible:
        harness.query(path, reader("notary"))
    with pytest.raises(QueryNotFound) as absent:
        harness.query("invoices/enterprise-a/NONE", reader("notary"))
    assert not_visible.value.message.replace("INV-1", "NONE") == absent.value.message


def test_a_competitor_sees_no_counts_and_no_listing(issued: tuple[Harness, str]) -> None:
    harness, _ = issued
    counts = {"issued", "issued_total", "reimbursed", "voided"}
    for org in ("enterprise-a", "taxoffice", "auditor"):
        assert counts <= harness.query("issuers/enterprise-a", reader(org)).keys()
        assert harness.query("issuers/enterprise-a/invoices", reader(org))["total"] == 1
    public = harness.query("issuers/enterprise-a", reader("enterprise-c"))
    assert not counts & public.keys()
    assert public["active"] is True
    with pytest.raises(QueryNotFound):
        harness.query("issuers/enterprise-a/invoices", reader("enterprise-b"))


def test_issued_invoices_page(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(invoice, "ISSUER_PAGE_INVOICES_MAX", 2)
    harness.authorize()
    txs = [harness.tx("issue", issue_args(f"INV-{n}")) for n in range(5)]
    assert all(r.ok for r in harness.commit(txs).receipts)
    first = harness.query("issuers/enterprise-a/invoices")
    assert first == {
        "org": "enterprise-a",
        "total": 5,
        "invoices": ["enterprise-a/INV-0", "enterprise-a/INV-1"],
        "next": 2,
    }
    last = harness.query("issuers/enterprise-a/invoices/from/4")
    assert (last["invoices"], last["next"]) == (["enterprise-a/INV-4"], None)
    assert harness.query("issuers/enterprise-a/invoices/from/9")["invoices"] == []


@pytest.mark.parametrize(
    "path",
    [
        "invoices/enterprise-a/NONE",
        "invoices/enterprise-a",
        "invoices",
        "issuers/enterprise-b",
        "issuers/enterprise-b/invoices",
        "issuers/enterprise-a/other",
        "nothing",
        "",
    ],
)
def test_queries_for_nothing_are_not_found(issued: tuple[Harness, str], path: str) -> None:
    harness, _ = issued
    with pytest.raises(QueryNotFound):
        harness.query(path)


@pytest.mark.parametrize(
    ("path", "argument"),
    [
        ("invoices/a b/INV-1", "id"),
        ("invoices/enterprise-a/" + "x" * 65, "id"),
        ("issuers/a b", "org"),
        ("issuers/enterprise-a/invoices/from/-1", "from"),
        ("issuers/enterprise-a/invoices/from/x", "from"),
    ],
)
def test_malformed_queries_are_refused(
    issued: tuple[Harness, str], path: str, argument: str
) -> None:
    harness, _ = issued
    with pytest.raises(ContractError) as raised:
        harness.query(path)
    assert not isinstance(raised.value, QueryNotFound)
    assert (raised.value.code, raised.value.details) == (
        "query.invalid_args",
        {"argument": argument},
    )


# --- determinism and the ledger -------------------------------------------------------------


def test_execution_is_deterministic(issued: tuple[Harness, str]) -> None:
    harness, invoice_id = issued
    txs = [
        harness.tx("lock", {"id": invoice_id, "claim_ref": "C"}, "enterprise-b"),
        harness.tx("reimburse", {"id": invoice_id, "claim_ref": "C"}, "enterprise-c"),
        harness.tx("reimburse", {"id": invoice_id, "claim_ref": "C"}, "enterprise-b"),
        harness.tx("issue", issue_args("INV-2")),
        harness.tx("void", {"id": "enterprise-a/INV-2", "reason": "r"}, "taxoffice"),
    ]
    first, second = harness.run(txs), harness.run(txs)
    assert [r.error for r in first.receipts] == [None, "invoice.locked", None, None, None]
    assert first.writes == second.writes
    assert first.receipt_bytes == second.receipt_bytes
    assert first.state_root == second.state_root
    assert all(key.startswith(b"invoice/") for key in first.writes)


def test_invoice_through_the_ledger_and_leveldb(
    make_chain: Callable[[Consortium], Chain], tmp_path: Path
) -> None:
    chain = make_chain(CONSORTIUM)

    def signed(method: str, args: dict, org: str, nonce: int) -> Transaction:
        return CONSORTIUM.sign(
            CONSORTIUM.members[org],
            "invoice",
            method,
            args,
            nonce=nonce,
            timestamp=chain.next_timestamp(),
        )

    chain.commit([signed("authorize_issuer", {"org": "enterprise-a"}, "taxoffice", 1)])
    chain.commit([signed("issue", issue_args(), "enterprise-a", 2)])
    first = signed("reimburse", {"id": "enterprise-a/INV-1", "claim_ref": "C-1"}, "enterprise-b", 3)
    second = signed(
        "reimburse", {"id": "enterprise-a/INV-1", "claim_ref": "C-2"}, "enterprise-b", 4
    )
    block = chain.commit([first, second])
    chain.reopen()
    refused = chain.store.get_tx(second.tx_id)
    assert refused is not None
    receipt = Receipt.decode(refused.receipt)
    assert receipt.error == "invoice.already_reimbursed"
    assert receipt.result["tx_id"] == first.tx_id
    record = invoice.query(
        ReadView(invoice.NAME, chain.store), ["invoices", "enterprise-a", "INV-1"], Reader()
    )
    assert record["reimbursement"]["height"] == block.height
    assert record["reimbursement"]["timestamp"] == block.header.timestamp


# --- the lifecycle against a model ----------------------------------------------------------

ORGS = tuple(ORG_ROLES)
INVOICE_NUMBERS = ("N1", "N2", "N3")
# Who calls a method on an invoice: a party of the invoice (resolved against the model at
# the time of the call) or any organisation at all.
ACTORS = st.sampled_from(("holder", "holder", "issuer", "locker")) | st.sampled_from(ORGS)


class InvoiceModel:
    """What the contract should answer, from the rules of CONTRACTS.md alone."""

    def __init__(self) -> None:
        self.authorized: dict[str, int | None] = {}  # org -> remaining quota (None: unlimited)
        self.invoices: dict[str, dict[str, Any]] = {}

    def authorize(self, signer: str, org: str, quota: int | None) -> str | None:
        if "tax_office" not in ORG_ROLES[signer]:
            return "tx.forbidden"
        if "enterprise" not in ORG_ROLES[org]:
            return "invoice.not_enterprise"
        self.authorized[org] = quota
        return None

    def revoke(self, signer: str, org: str) -> str | None:
        if "tax_office" not in ORG_ROLES[signer]:
            return "tx.forbidden"
        if org not in self.authorized:
            return "invoice.not_authorized"
        del self.authorized[org]
        return None

    def issue(self, signer: str, number: str, buyer: str) -> str | None:
        if "enterprise" not in ORG_ROLES[signer]:
            return "tx.forbidden"
        if signer not in self.authorized:
            return "invoice.not_authorized"
        invoice_id = f"{signer}/{number}"
        if invoice_id in self.invoices:
            return "invoice.exists"
        if self.authorized[signer] == 0:
            return "invoice.quota_exceeded"
        if self.authorized[signer] is not None:
            self.authorized[signer] -= 1
        self.invoices[invoice_id] = {
            "issuer": signer,
            "holder": buyer,
            "status": "issued",
            "locker": None,
            "reimbursements": 0,
            "voids": 0,
        }
        return None

    def actor(self, invoice_id: str, choice: str) -> str:
        """The organisation behind `choice` for this invoice (any org for an unknown one)."""
        state = self.invoices.get(invoice_id)
        if choice in ORG_ROLES:
            return choice
        if state is None:
            return "enterprise-b"
        if choice == "issuer":
            return state["issuer"]
        if choice == "locker" and state["locker"] is not None:
            return state["locker"]
        return state["holder"]

    def _final(self, state: dict[str, Any]) -> str | None:
        if state["status"] == "reimbursed":
            return "invoice.already_reimbursed"
        if state["status"] == "void":
            return "invoice.void"
        return None

    def transfer(self, signer: str, invoice_id: str, to_org: str) -> str | None:
        state = self.invoices.get(invoice_id)
        if state is None:
            return "invoice.not_found"
        if state["status"] in ("reimbursed", "void"):
            return "invoice.not_transferable"
        if state["status"] == "locked":
            return "invoice.locked"
        if state["holder"] != signer:
            return "invoice.not_holder"
        if to_org == signer:
            return "invoice.not_transferable"
        state["holder"] = to_org
        return None

    def lock(self, signer: str, invoice_id: str) -> str | None:
        state = self.invoices.get(invoice_id)
        if state is None:
            return "invoice.not_found"
        error = self._final(state) or ("invoice.locked" if state["status"] == "locked" else None)
        if error is None and state["holder"] != signer:
            error = "invoice.not_holder"
        if error is None:
            state["status"], state["locker"] = "locked", signer
        return error

    def unlock(self, signer: str, invoice_id: str) -> str | None:
        state = self.invoices.get(invoice_id)
        if state is None:
            return "invoice.not_found"
        if state["status"] != "locked":
            return "invoice.not_locked"
        if state["locker"] != signer:
            return "invoice.locked"
        state["status"], state["locker"] = "issued", None
        return None

    def reimburse(self, signer: str, invoice_id: str) -> str | None:
        state = self.invoices.get(invoice_id)
        if state is None:
            return "invoice.not_found"
        error = self._final(state)
        if error is None and state["status"] == "locked" and state["locker"] != signer:
            error = "invoice.locked"
        if error is None and state["holder"] != signer:
            error = "invoice.not_holder"
        if error is None:
            state["status"], state["locker"] = "reimbursed", None
            state["reimbursements"] += 1
        return error

    def void(self, signer: str, invoice_id: str) -> str | None:
        state = self.invoices.get(invoice_id)
        if state is None:
            return "invoice.not_found"
        error = self._final(state)
        if error is None and state["status"] == "locked":
            error = "invoice.locked"
        if error is None and signer != state["issuer"] and "tax_office" not in ORG_ROLES[signer]:
            error = "invoice.not_issuer"
        if error is None:
            state["status"] = "void"
            state["voids"] += 1
        return error


class InvoiceLifecycle(RuleBasedStateMachine):
    """Random calls by any organisation, each one block through `execute_block`; every
    receipt must be what the model predicts, and the safety properties hold throughout."""

    invoices = Bundle("invoices")

    def __init__(self) -> None:
        super().__init__()
        self.harness = Harness()
        self.model = InvoiceModel()
        self.reimbursed_at: dict[str, int] = {}
        self.voided: set[str] = set()

    def check(self, method: str, args: dict[str, Any], org: str, expected: str | None) -> Receipt:
        receipt = self.harness.call(method, args, org)
        event(f"{method}: {receipt.error or 'ok'}")
        assert receipt.error == expected, (method, args, org, receipt)
        assert receipt.ok is (expected is None)
        if receipt.ok and method == "reimburse":
            assert args["id"] not in self.reimbursed_at, "a second reimbursement"
            assert args["id"] not in self.voided, "a void invoice reimbursed"
            self.reimbursed_at[args["id"]] = self.harness.height - 1
        if receipt.ok and method == "void":
            assert args["id"] not in self.reimbursed_at, "a reimbursed invoice voided"
            self.voided.add(args["id"])
        return receipt

    @initialize()
    def authorize_two(self) -> None:
        for org in ("enterprise-a", "enterprise-b"):
            expected = self.model.authorize("taxoffice", org, None)
            self.check("authorize_issuer", {"org": org}, "taxoffice", expected)

    @rule(
        signer=st.sampled_from(ORGS),
        org=st.sampled_from(ORGS),
        quota=st.none() | st.integers(1, 3),
    )
    def authorize(self, signer: str, org: str, quota: int | None) -> None:
        args: dict[str, Any] = {"org": org}
        if quota is not None:
            args["max_invoices"] = quota
        self.check("authorize_issuer", args, signer, self.model.authorize(signer, org, quota))

    @rule(signer=st.sampled_from(ORGS), org=st.sampled_from(ENTERPRISES))
    def revoke(self, signer: str, org: str) -> None:
        self.check("revoke_issuer", {"org": org}, signer, self.model.revoke(signer, org))

    @rule(
        target=invoices,
        signer=st.sampled_from(ENTERPRISES) | st.sampled_from(ORGS),
        number=st.sampled_from(INVOICE_NUMBERS),
        buyer=st.sampled_from(ORGS),
    )
    def issue(self, signer: str, number: str, buyer: str) -> str:
        expected = self.model.issue(signer, number, buyer)
        self.check("issue", issue_args(number, buyer), signer, expected)
        return f"{signer}/{number}"

    @rule(invoice_id=invoices, actor=ACTORS, to_org=st.sampled_from(ORGS))
    def transfer(self, invoice_id: str, actor: str, to_org: str) -> None:
        signer = self.model.actor(invoice_id, actor)
        expected = self.model.transfer(signer, invoice_id, to_org)
        self.check("transfer", {"id": invoice_id, "to_org": to_org}, signer, expected)

    @rule(invoice_id=invoices, actor=ACTORS)
    def lock(self, invoice_id: str, actor: str) -> None:
        signer = self.model.actor(invoice_id, actor)
        expected = self.model.lock(signer, invoice_id)
        self.check("lock", {"id": invoice_id, "claim_ref": "CLAIM"}, signer, expected)

    @rule(invoice_id=invoices, actor=ACTORS)
    def unlock(self, invoice_id: str, actor: str) -> None:
        signer = self.model.actor(invoice_id, actor)
        self.check("unlock", {"id": invoice_id}, signer, self.model.unlock(signer, invoice_id))

    @rule(invoice_id=invoices, actor=ACTORS)
    def reimburse(self, invoice_id: str, actor: str) -> None:
        signer = self.model.actor(invoice_id, actor)
        expected = self.model.reimburse(signer, invoice_id)
        receipt = self.check("reimburse", {"id": invoice_id, "claim_ref": "EXP"}, signer, expected)
        if receipt.error == "invoice.already_reimbursed":
            assert receipt.result["height"] == self.reimbursed_at[invoice_id]

    @rule(invoice_id=invoices, actor=ACTORS)
    def void(self, invoice_id: str, actor: str) -> None:
        signer = self.model.actor(invoice_id, actor)
        expected = self.model.void(signer, invoice_id)
        self.check("void", {"id": invoice_id, "reason": "red letter"}, signer, expected)

    @rule(invoice_id=invoices, actors=st.lists(ACTORS, min_size=2, max_size=5))
    def race_to_reimburse(self, invoice_id: str, actors: list[str]) -> None:
        """Several reimbursements in one block: at most one succeeds."""
        signers = [self.model.actor(invoice_id, actor) for actor in actors]
        txs = [
            self.harness.tx("reimburse", {"id": invoice_id, "claim_ref": f"R{n}"}, signer)
            for n, signer in enumerate(signers)
        ]
        output = self.harness.commit(txs)
        for signer, receipt in zip(signers, output.receipts, strict=True):
            event(f"race: {receipt.error or 'ok'}")
            assert receipt.error == self.model.reimburse(signer, invoice_id), receipt
            if receipt.ok:
                assert invoice_id not in self.reimbursed_at
                self.reimbursed_at[invoice_id] = self.harness.height - 1

    @invariant()
    def contract_agrees_with_the_model(self) -> None:
        for invoice_id, expected in self.model.invoices.items():
            record = self.harness.record(invoice_id)
            assert (record["status"], record["holder"]) == (expected["status"], expected["holder"])
            methods = [event["method"] for event in record["history"]]
            assert methods.count("reimburse") == expected["reimbursements"] <= 1
            assert methods.count("void") == expected["voids"] <= 1
            assert expected["reimbursements"] + expected["voids"] <= 1
            if record["status"] in ("reimbursed", "void"):
                assert methods[-1] in ("reimburse", "void")


TestInvoiceLifecycle = InvoiceLifecycle.TestCase
TestInvoiceLifecycle.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# --- the invoice document -------------------------------------------------------------------


def example_document(**changes: Any) -> dict[str, Any]:
    document = {
        "invoice_code": "044031900111",
        "invoice_number": "12345678",
        "issue_date": "2026-03-14",
        "seller": {"name": "深圳甲科技有限公司", "tax_id": "91440300MA5FXXXX1A"},
        "buyer": {"name": "上海乙贸易有限公司", "tax_id": "91310000MA1KYYYY2B"},
        "items": [
            {
                "name": "*信息技术服务*软件维护",
                "unit": "次",
                "quantity_milli": 2000,
                "unit_price_cents": 10000,
                "amount_cents": 20000,
                "tax_rate_bp": 600,
                "tax_cents": 1200,
            },
            {
                "name": "*电子计算机*服务器",
                "specification": "R750",
                "quantity_milli": 1500,
                "unit_price_cents": 3333,
                "amount_cents": 5000,  # 1.5 x 33.33 = 49.995 -> 50.00
                "tax_rate_bp": 1300,
                "tax_cents": 650,
            },
        ],
        "total_amount_cents": 25000,
        "total_tax_cents": 1850,
        "total_with_tax_cents": 26850,
        "check_code": "12345678901234567890",
    }
    document.update(changes)
    return document


def test_a_valid_document_has_a_canonical_digest() -> None:
    document = parse_document(example_document())
    assert document.invoice_no == "044031900111-12345678"
    canonical = document.canonical_bytes()
    assert (
        canonical
        == json.dumps(
            example_document(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    )
    assert document.digest() == hashlib.sha256(canonical).digest()
    pretty = json.dumps(dict(reversed(example_document().items())), indent=4, ensure_ascii=True)
    assert load_document(pretty).digest() == document.digest()
    assert document_from_bytes(canonical) == document
    with pytest.raises(InvoiceDocumentError, match="canonical"):
        document_from_bytes(pretty.encode())


def test_rounding_is_half_up_on_integers() -> None:
    assert [round_half_up(n, 1000) for n in (499, 500, 1499, 1500, 2500)] == [0, 1, 1, 2, 3]


def with_item(**changes: Any) -> dict[str, Any]:
    document = example_document()
    document["items"] = [{**document["items"][0], **changes}, document["items"][1]]
    return document


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (with_item(amount_cents=20001), "items[0].amount_cents"),
        (with_item(tax_cents=1201), "items[0].tax_cents"),
        (with_item(quantity_milli=-1), "items[0].quantity_milli"),
        (with_item(quantity_milli=True), "items[0].quantity_milli"),
        (with_item(name=" "), "items[0].name"),
        (with_item(colour="red"), "items[0].colour"),
        (example_document(total_amount_cents=25001), "total_amount_cents"),
        (example_document(total_tax_cents=1849), "total_tax_cents"),
        (example_document(total_with_tax_cents=26849), "total_with_tax_cents"),
        (example_document(invoice_code="04403190011"), "invoice_code"),
        (example_document(invoice_number="1234567"), "invoice_number"),
        (example_document(issue_date="2026-02-30"), "issue_date"),
        (example_document(issue_date="14/03/2026"), "issue_date"),
        (example_document(check_code="1234"), "check_code"),
        (example_document(seller={"name": "x", "tax_id": "lowercase-id-000"}), "seller.tax_id"),
        (example_document(buyer={"name": "x"}), "buyer.tax_id"),
        (example_document(items=[]), "items"),
        (example_document(discount=5), "discount"),
    ],
)
def test_invalid_documents_name_the_field(document: dict[str, Any], field: str) -> None:
    with pytest.raises(InvoiceDocumentError) as raised:
        parse_document(document)
    assert raised.value.field == field


def test_floats_and_repeated_keys_are_refused() -> None:
    text = json.dumps(example_document()).replace(
        '"total_tax_cents": 1850', '"total_tax_cents": 18.5'
    )
    with pytest.raises(InvoiceDocumentError, match="not an integer"):
        load_document(text)
    with pytest.raises(InvoiceDocumentError, match="repeats a key"):
        load_document('{"invoice_code": "1", "invoice_code": "2"}')
    with pytest.raises(InvoiceDocumentError, match="not JSON"):
        load_document(b"{")


def test_query_answers_have_the_openapi_fields(issued: tuple[Harness, str]) -> None:
    harness, invoice_id = issued
    harness.ok("lock", {"id": invoice_id, "claim_ref": "C-1"}, "enterprise-b")
    schemas = build_openapi(ApiSection())["components"]["schemas"]
    answers = {
        "InvoiceRecord": [harness.record(invoice_id)],
        "InvoiceIssuer": [
            harness.query("issuers/enterprise-a"),
            harness.query("issuers/enterprise-a", reader("enterprise-c")),
        ],
        "InvoiceIssuedPage": [harness.query("issuers/enterprise-a/invoices")],
    }
    for name, found in answers.items():
        schema = schemas[name]
        for answer in found:
            assert set(schema["required"]) <= answer.keys() <= schema["properties"].keys(), name
    lock = harness.record(invoice_id)["lock"]
    assert (
        lock.keys()
        == schemas["InvoiceRecord"]["properties"]["lock"]["anyOf"][0]["properties"].keys()
    )


def test_the_bulk_run_builds_valid_invoices_and_transactions() -> None:
    """node/bench_invoice.py's transactions, signed as its workers sign them, all succeed."""
    harness = Harness()
    harness.register_encryption_keys(("taxoffice", "taxoffice-2", "enterprise-a", "enterprise-b"))
    harness.authorize()
    recipients = tuple(
        sorted(
            public_key_bytes(encryption_key(org))
            for org in ("taxoffice", "taxoffice-2", "enterprise-a", "enterprise-b")
        )
    )
    issuers = {"issue": "enterprise-a", "reimburse": "enterprise-b"}
    for phase, org in issuers.items():
        seed = hashlib.sha256(f"invoice/{org}/member".encode()).digest()
        job = SigningJob(phase, seed, CONSORTIUM.chain_id, 5, 20, harness.block_time, recipients)
        envelopes = [envelope for _, envelope in sign_chunk(job)]
        txs = [decode_envelope(envelope) for envelope in envelopes]
        output = harness.commit(txs)
        assert [r.error for r in output.receipts] == [None] * 20, phase
    record = harness.record(f"enterprise-a/{bench_invoice_no(24)}")
    assert record["status"] == "reimbursed"
    assert record["digest"] == invoice_document(24).digest().hex()
