"""Invoices on a real 4-node network (node processes, LevelDB, PBFT) with signed reads.

One network serves the module, run with `api.read_access = "members"`; every read is signed.

1. The same invoice reimbursed concurrently through all 4 nodes by two organisations: one
   success; every attempt ordered after it is committed with `invoice.already_reimbursed`
   naming it; identical state and blocks on every node; every attempt on the record.
2. Visibility: a competitor gets 404 (and cannot unseal the document it can see in the
   block), the tax office sees and unseals everything.
3. The CLI end to end, for the tax office, the issuer, the buyer and a later holder.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from node.bench_invoice import invoice_document
from node.cli import main as cli_main
from node.client import Client, ClientError
from node.crypto import SigningKey, load_key_file
from node.invoice_cli import (
    fetch_invoice,
    fetch_sealed,
    invoice_attempts,
    issue_args,
    open_invoice,
    recipients_for,
    seal_context,
)
from node.localnet import LocalNetwork
from node.sealing import (
    SealError,
    encryption_key_path,
    load_encryption_key_file,
    unseal,
)
from node.supervisor import wait_until_healthy
from node.transaction import decode_envelope, sign_transaction

MEMBERS_READS: Final = {"CHANCERY_API_READ_ACCESS": "members"}
VALIDATORS: Final = 4
ORGS: Final = ("notary", "taxoffice", "enterprise-a", "enterprise-b")
CONNECT_TIMEOUT_S: Final = 30.0
AGREE_TIMEOUT_S: Final = 30.0
COMMIT_TIMEOUT_MS: Final = 30_000


@dataclass
class InvoiceNet:
    """The module's network and what the tests ask of it."""

    net: LocalNetwork
    chain_id: str

    @property
    def genesis(self) -> Path:
        return self.net.testnet.genesis_path

    def key_path(self, org: str, role: str = "member") -> Path:
        found = self.net.testnet.org(org)
        return found.member_key if role == "member" else found.admin_key

    def key(self, org: str, role: str = "member") -> SigningKey:
        return load_key_file(self.key_path(org, role))

    def client(self, org: str, index: int = 0) -> Client:
        """A client whose reads are signed by `org`'s member key."""
        return Client(self.net.url(index), chain_id=self.chain_id, read_key=self.key(org))

    def cli(
        self, *argv: str, org: str, role: str = "member", index: int = 0
    ) -> tuple[int, str, str]:
        """`chancery invoice ...` in-process, as `org`; (exit code, stdout, stderr)."""
        common = [
            "--key",
            str(self.key_path(org, role)),
            "--url",
            self.net.url(index),
            "--genesis",
            str(self.genesis),
        ]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(["invoice", *argv, *common])
        return code, out.getvalue(), err.getvalue()

    def cli_ok(self, *argv: str, org: str, index: int = 0) -> str:
        code, out, err = self.cli(*argv, org=org, index=index)
        assert code == 0, (argv, org, out, err)
        return out

    def issue(self, invoice_no: str, buyer: str, issuer: str = "enterprise-a") -> dict[str, Any]:
        """Issue invoice `invoice_no` through the client library, sealed; the commit answer."""
        with self.client(issuer) as client:
            recipients = recipients_for(client, issuer, buyer)
            keys = sorted({key for found in recipients.values() for key in found})
            args = issue_args(invoice_document(len(invoice_no)), invoice_no, issuer, buyer, keys)
            answer = client.submit(
                "invoice", "issue", args, self.key(issuer), timeout_ms=COMMIT_TIMEOUT_MS
            )
        assert answer["receipt"]["ok"], answer
        return answer

    def wait_agreement(self) -> int:
        """Until every node has one tip; returns its height."""
        deadline = time.monotonic() + AGREE_TIMEOUT_S
        while True:
            tips = set()
            for index in range(VALIDATORS):
                with self.client("taxoffice", index) as client:
                    status = client.status()
                tips.add((status["height"], status["last_block_hash"]))
            if len(tips) == 1:
                return next(iter(tips))[0]
            assert time.monotonic() < deadline, f"nodes disagree: {tips}"
            time.sleep(0.2)


def _wait_connected(net: LocalNetwork, chain_id: str) -> None:
    key = load_key_file(net.testnet.org("notary").member_key)
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    for index in range(VALIDATORS):
        with Client(net.url(index), chain_id=chain_id, read_key=key) as client:
            while not all(v["connected"] for v in client.status()["validators"]):
                assert time.monotonic() < deadline, f"node {index} is not connected to all"
                time.sleep(0.2)


@pytest.fixture(scope="module")
def invoices(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InvoiceNet]:
    """4 validators with signed reads; every org's member registered an encryption key (with
    the CLI) and the tax office authorised enterprise-a."""
    net = LocalNetwork.generate(tmp_path_factory.mktemp("invoice") / "net", validators=VALIDATORS)
    try:
        for index in range(VALIDATORS):
            net.start(index, wait=False, env=MEMBERS_READS)
        wait_until_healthy(list(net.processes.values()))
        chain_id = json.loads(net.testnet.genesis_path.read_bytes())["chain_id"]
        _wait_connected(net, chain_id)
        network = InvoiceNet(net, chain_id)
        for index, org in enumerate(ORGS):
            network.cli_ok("register-encryption-key", org=org, index=index)
        network.cli_ok("authorize", "enterprise-a", org="taxoffice")
        yield network
    finally:
        net.stop_all()


# --- 1. the reimbursement race -----------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    org: str
    node: int
    claim_ref: str
    tx_id: str
    envelope: bytes


def _attempts(network: InvoiceNet, invoice_id: str) -> list[Attempt]:
    """Every (organisation, key, node) combination: the holder enterprise-b and enterprise-a,
    each with its admin and member key, through each of the 4 nodes."""
    attempts = []
    now_ms = time.time_ns() // 1_000_000
    for org in ("enterprise-b", "enterprise-a"):
        for role in ("member", "admin"):
            key = network.key(org, role)
            for node in range(VALIDATORS):
                claim_ref = f"{org}-{role}-via-{node}"
                tx = sign_transaction(
                    key,
                    network.chain_id,
                    "invoice",
                    "reimburse",
                    {"id": invoice_id, "claim_ref": claim_ref},
                    len(attempts) + 1,
                    now_ms,
                )
                attempts.append(Attempt(org, node, claim_ref, tx.tx_id.hex(), tx.envelope))
    return attempts


def _race(network: InvoiceNet, attempts: list[Attempt]) -> dict[str, dict[str, Any]]:
    """Submit every attempt at once, each from its own thread to its node, waiting for the
    commit; tx_id -> the committed answer."""
    start = threading.Barrier(len(attempts))
    answers: dict[str, dict[str, Any]] = {}
    failures: list[BaseException] = []

    def submit(attempt: Attempt) -> None:
        try:
            with Client(network.net.url(attempt.node), chain_id=network.chain_id) as client:
                start.wait()
                answers[attempt.tx_id] = client.submit_envelope(
                    attempt.envelope, timeout_ms=COMMIT_TIMEOUT_MS
                )
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=submit, args=(attempt,)) for attempt in attempts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    return answers


def test_concurrent_reimbursement_through_every_node_by_two_organisations(
    invoices: InvoiceNet,
) -> None:
    issued = invoices.issue("RACE-1", buyer="enterprise-b")
    invoice_id = issued["receipt"]["result"]["id"]
    attempts = _attempts(invoices, invoice_id)
    answers = _race(invoices, attempts)
    assert {answer["status"] for answer in answers.values()} == {"committed"}
    winners = [a for a in attempts if answers[a.tx_id]["receipt"]["ok"]]
    assert len(winners) == 1, [answers[a.tx_id]["receipt"] for a in attempts]
    (winner,) = winners
    assert winner.org == "enterprise-b"
    won = answers[winner.tx_id]
    position = (won["height"], won["index"])
    with invoices.client("taxoffice", 3) as client:
        block = client.block(won["height"])
    first = {
        "id": invoice_id,
        "org": "enterprise-b",
        "height": won["height"],
        "tx_id": winner.tx_id,
        "claim_ref": winner.claim_ref,
        "timestamp": block["header"]["timestamp"],
    }
    refusals: dict[str, int] = {}
    for attempt in attempts:
        if attempt is winner:
            continue
        answer = answers[attempt.tx_id]
        receipt = answer["receipt"]
        refusals[receipt["error"]] = refusals.get(receipt["error"], 0) + 1
        if (answer["height"], answer["index"]) > position:
            assert receipt["error"] == "invoice.already_reimbursed", receipt
            assert receipt["result"] == first
        else:  # ordered before the winner: only a non-holder can have been refused there
            assert (attempt.org, receipt["error"]) == ("enterprise-a", "invoice.not_holder")
    blocks = len({answer["height"] for answer in answers.values()})
    print(f"[invoice] race: 1 success, refusals {refusals}, over {blocks} block(s)")

    invoices.wait_agreement()
    records = []
    for index in range(VALIDATORS):
        with invoices.client("taxoffice", index) as client:
            records.append(fetch_invoice(client, invoice_id))
    assert all(record == records[0] for record in records)
    assert records[0]["status"] == "reimbursed"
    assert records[0]["reimbursement"]["tx_id"] == winner.tx_id
    assert [e["method"] for e in records[0]["history"]] == ["issue", "reimburse"]
    with invoices.client("taxoffice", 2) as client:
        on_record = list(invoice_attempts(client, invoice_id, issued["height"]))
    assert {a["tx_id"] for a in on_record} == {a.tx_id for a in attempts}
    assert sum(a["ok"] for a in on_record) == 1


def test_identical_blocks_on_every_node(invoices: InvoiceNet) -> None:
    height = invoices.wait_agreement()
    hashes = []
    for index in range(VALIDATORS):
        with invoices.client("notary", index) as client:
            hashes.append([client.block(h)["hash"] for h in range(1, height + 1)])
    assert all(chain == hashes[0] for chain in hashes)


# --- 2. visibility -------------------------------------------------------------------------


def test_a_competitor_gets_404_and_the_tax_office_sees_everything(invoices: InvoiceNet) -> None:
    issued = invoices.issue("VIS-1", buyer="notary")
    invoice_id = issued["receipt"]["result"]["id"]
    for index in range(VALIDATORS):
        with invoices.client("enterprise-b", index) as competitor:
            with pytest.raises(ClientError) as hidden:
                fetch_invoice(competitor, invoice_id)
            with pytest.raises(ClientError) as absent:
                fetch_invoice(competitor, "enterprise-a/NO-SUCH-INVOICE")
            assert (hidden.value.status, hidden.value.code) == (404, "not_found")
            assert (absent.value.status, absent.value.code) == (404, "not_found")
            public = competitor.query("invoice", "issuers", "enterprise-a")
            assert public["active"] is True and "issued_total" not in public
            with pytest.raises(ClientError) as listing:
                competitor.query("invoice", "issuers", "enterprise-a", "invoices")
            assert listing.value.status == 404
    # The competitor sees the transaction in the block, but cannot open the document.
    with invoices.client("enterprise-b") as competitor:
        envelope = bytes.fromhex(competitor.transaction(issued["tx_id"])["envelope"])
    sealed = decode_envelope(envelope).body.args["sealed"]
    own_key = load_encryption_key_file(encryption_key_path(invoices.key_path("enterprise-b")))
    with pytest.raises(SealError) as refused:
        unseal(sealed, own_key, context=seal_context(invoice_id))
    assert refused.value.code == "seal.not_recipient"

    for org in ("taxoffice", "enterprise-a", "notary"):
        with invoices.client(org, 1) as client:
            record = fetch_invoice(client, invoice_id)
            sealed_document = fetch_sealed(client, record)
        private = load_encryption_key_file(encryption_key_path(invoices.key_path(org)))
        document, verification = open_invoice(record, sealed_document, private)
        assert verification["digest_matches"] is True, (org, verification)
        assert document == invoice_document(len("VIS-1")).to_json()
    with invoices.client("taxoffice", 2) as client:
        counts = client.query("invoice", "issuers", "enterprise-a")
        listing = client.query("invoice", "issuers", "enterprise-a", "invoices")
    assert counts["issued_total"] >= 2
    assert invoice_id in listing["invoices"]


def test_unsigned_reads_are_refused(invoices: InvoiceNet) -> None:
    status, answer = invoices.net.get_json("/v1/contracts/invoice/issuers/enterprise-a", 0)
    assert (status, answer["error"]["code"]) == (401, "request.unauthenticated")


# --- 3. the CLI, party by party ------------------------------------------------------------


def test_cli_end_to_end_for_each_party(invoices: InvoiceNet, tmp_path: Path) -> None:
    document_path = tmp_path / "invoice.json"
    document_path.write_text(
        json.dumps(invoice_document(7).to_json(), ensure_ascii=False, indent=2)
    )
    second_path = tmp_path / "second.json"
    second_path.write_text(json.dumps(invoice_document(8).to_json()))

    # Tax office: enterprise-b may issue two invoices.
    invoices.cli_ok("authorize", "enterprise-b", "--max-invoices", "2", org="taxoffice", index=1)
    # Issuer: seal and issue; the id is printed.
    out = invoices.cli_ok(
        "issue", str(document_path), "--buyer", "enterprise-a", org="enterprise-b", index=2
    )
    invoice_id = out.strip()
    assert invoice_id == "enterprise-b/044031900111-00000007"

    # Buyer: unseal, check the digest, write the document out.
    out_path = tmp_path / "unsealed.json"
    shown = json.loads(
        invoices.cli_ok(
            "show", invoice_id, "--document-out", str(out_path), org="enterprise-a", index=3
        )
    )
    assert shown["verification"]["digest_matches"] is True
    assert shown["document"] == invoice_document(7).to_json()
    assert out_path.read_bytes() == invoice_document(7).canonical_bytes()

    # Buyer locks for a claim; the issuer cannot void it meanwhile.
    invoices.cli_ok("lock", invoice_id, "CLAIM-1", org="enterprise-a")
    code, _, err = invoices.cli("void", invoice_id, "--reason", "wrong", org="enterprise-b")
    assert code == 1 and "invoice.locked" in err and '"org": "enterprise-a"' in err
    invoices.cli_ok("unlock", invoice_id, org="enterprise-a")
    # Buyer passes it on; the new holder reimburses, once.
    invoices.cli_ok("transfer", invoice_id, "notary", org="enterprise-a", index=1)
    invoices.cli_ok("reimburse", invoice_id, "EXP-42", org="notary", index=2)
    code, _, err = invoices.cli("reimburse", invoice_id, "EXP-43", org="enterprise-a", index=3)
    assert code == 1 and "invoice.already_reimbursed" in err and "EXP-42" in err
    code, _, err = invoices.cli("void", invoice_id, "--reason", "late", org="enterprise-b")
    assert code == 1 and "invoice.already_reimbursed" in err

    # A later holder reads the record but was not a recipient when it was sealed.
    held = json.loads(invoices.cli_ok("show", invoice_id, org="notary"))
    assert held["invoice"]["holders"] == ["enterprise-a", "notary"]
    assert held["verification"]["unsealed"] is False
    assert "seal.not_recipient" in held["verification"]["note"]
    # The tax office sees the document and every attempt, refused ones included.
    audit = json.loads(invoices.cli_ok("show", invoice_id, "--attempts", org="taxoffice", index=3))
    assert audit["verification"]["digest_matches"] is True
    assert [(a["method"], a["ok"], a["error"]) for a in audit["attempts"]] == [
        ("lock", True, None),
        ("void", False, "invoice.locked"),
        ("unlock", True, None),
        ("transfer", True, None),
        ("reimburse", True, None),
        ("reimburse", False, "invoice.already_reimbursed"),
        ("void", False, "invoice.already_reimbursed"),
    ]
    assert audit["attempts"][5]["details"]["claim_ref"] == "EXP-42"
    # An organisation that is no party of an invoice: not found.
    code, _, err = invoices.cli("show", "enterprise-a/RACE-1", org="notary")
    assert code == 1 and "not_found" in err

    # Quota, red letter with a replacement, revocation.
    second = invoices.cli_ok(
        "issue", str(second_path), "--buyer", "enterprise-a", org="enterprise-b"
    ).strip()
    code, _, err = invoices.cli(
        "issue",
        str(second_path),
        "--buyer",
        "enterprise-a",
        "--invoice-no",
        "X-3",
        org="enterprise-b",
    )
    assert code == 1 and "invoice.quota_exceeded" in err
    invoices.cli_ok(
        "void",
        second,
        "--reason",
        "红字冲销",
        "--replacement-id",
        "enterprise-b/X-4",
        org="taxoffice",
    )
    voided = json.loads(invoices.cli_ok("show", second, org="enterprise-a"))["invoice"]
    assert (voided["status"], voided["void"]["replacement_id"]) == ("void", "enterprise-b/X-4")
    invoices.cli_ok("revoke", "enterprise-b", org="taxoffice")
    code, _, err = invoices.cli(
        "issue",
        str(second_path),
        "--buyer",
        "enterprise-a",
        "--invoice-no",
        "X-5",
        org="enterprise-b",
    )
    assert code == 1 and "invoice.not_authorized" in err

    # Usage errors exit 2 before anything is sent.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**invoice_document(9).to_json(), "total_tax_cents": 1}))
    code, _, err = invoices.cli("issue", str(bad), "--buyer", "enterprise-a", org="enterprise-b")
    assert code == 2 and "total_tax_cents" in err
    code, _, err = invoices.cli("show", "no-slash", org="taxoffice")
    assert code == 2
