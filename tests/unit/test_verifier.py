"""Tests for node.verifier, the standalone offline verifier, and `chancery evidence verify`.

Bundles come from a real LevelDB chain of four validators whose block 1 holds a membership
transaction, a single evidence anchor and a batch anchor; they are checked against
node/genesis.py, node/merkle.py and an independent RFC 6962 implementation (pymerkle), and
every kind of tampering must fail a check that names what is wrong.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pymerkle
import pytest

from contracts import evidence as evidence_contract
from contracts.membership import OrganizationSpec
from contracts.runtime import ReadView
from node import verifier
from node.api.evidence import evidence_section as route_evidence_section
from node.block import to_json_value
from node.cli import main
from node.crypto import SigningKey
from node.evidence_cli import BatchTree, batch_section, evidence_section, write_bundle
from node.genesis import Validator, genesis_document, parse_genesis
from node.merkle import audit_path, merkle_root
from node.proof import build_tx_proof
from node.testnet import generate_testnet
from node.transaction import Transaction
from node.verifier import (
    TrustRoot,
    VerificationReport,
    hash_file,
    read_genesis,
    root_from_audit_path,
    verify_bundle,
    verify_bundle_bytes,
)

if TYPE_CHECKING:
    from tests.unit.conftest import Chain, Consortium

FILES = [f"file number {n}\n".encode() * (n + 1) for n in range(5)]
FILE_HASHES = [hashlib.sha256(content).digest() for content in FILES]
DOCUMENT = b"%PDF-1.7 a contract, signed on paper\n"
DOCUMENT_HASH = hashlib.sha256(DOCUMENT).digest()
META = {"title": "Lease", "pages": 3, "scan": b"\x01\x02\xff"}

TRANSACTION_CHECKS = [name for name, _ in verifier.TRANSACTION_CHECKS]
EVIDENCE_CHECKS = [name for name, _ in verifier.EVIDENCE_CHECKS]
BATCH_CHECK = verifier.BATCH_CHECK[0]
ANCHOR_FIELDS = EVIDENCE_CHECKS[1]
EVERY_CHECK_NAME = {
    "format",
    "bundle is well-formed",
    "file hash",
    *TRANSACTION_CHECKS,
    *EVIDENCE_CHECKS,
    BATCH_CHECK,
}


class Anchored:
    """A 4-validator chain: block 1 = [membership add_member, evidence.anchor,
    evidence.anchor_batch over FILES], block 2 = [evidence.anchor of FILES[0] alone]."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        c = chain.consortium
        self.membership_tx = c.sign(
            c.admins["enterprise-a"],
            "membership",
            "add_member",
            {"name": "Alice", "public_key": b"\x5a" * 32},
            nonce=1,
        )
        self.anchor_tx = c.sign(
            c.members["notary"],
            "evidence",
            "anchor",
            {"hash": DOCUMENT_HASH, "kind": "contract", "meta": META, "subject": "case-7"},
            nonce=2,
        )
        self.tree = BatchTree(FILE_HASHES)
        self.batch_tx = c.sign(
            c.members["enterprise-b"],
            "evidence",
            "anchor_batch",
            {"root": self.tree.root, "count": len(FILES), "kind": "scan"},
            nonce=3,
        )
        chain.commit([self.membership_tx, self.anchor_tx, self.batch_tx])
        self.later_tx = c.sign(
            c.members["taxoffice"],
            "evidence",
            "anchor",
            {"hash": FILE_HASHES[0], "kind": "file"},
            nonce=4,
        )
        chain.commit([self.later_tx])
        self.trust = read_genesis(c.raw)

    def bundle(self, tx: Transaction) -> dict[str, Any]:
        bundle = build_tx_proof(self.chain.store, self.chain.consortium.genesis, tx.tx_id)
        assert bundle is not None
        if tx.body.contract == "evidence":
            bundle["evidence"] = evidence_section(bundle)
        return json.loads(json.dumps(bundle))

    def anchor_bundle(self) -> dict[str, Any]:
        return self.bundle(self.anchor_tx)

    def batch_bundle(self, index: int) -> dict[str, Any]:
        bundle = self.bundle(self.batch_tx)
        bundle["batch"] = batch_section(self.tree, FILE_HASHES[index], index)
        return bundle


@pytest.fixture
def anchored(make_chain: Callable[[Consortium], Chain], consortium4: Consortium) -> Anchored:
    return Anchored(make_chain(consortium4))


def failing(report: VerificationReport) -> list[str]:
    return [name for name, passed, _ in report.checks if not passed]


def assert_fails(report: VerificationReport, *names: str) -> None:
    """`report` is not ok and its failed checks are exactly `names`."""
    assert report.ok is False
    assert sorted(failing(report)) == sorted(names), report.to_json()


def detail_of(report: VerificationReport, name: str) -> str:
    return next(detail for check, _, detail in report.checks if check == name)


# --- the module stands alone -----------------------------------------------------------------


def test_verifier_imports_only_the_standard_library_cryptography_and_msgpack() -> None:
    tree = ast.parse(Path(verifier.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            imported.add((node.module or "").split(".")[0])
    allowed = set(sys.stdlib_module_names) | {"__future__", "cryptography", "msgpack"}
    assert imported <= allowed, imported - allowed


# --- genesis -----------------------------------------------------------------------------------


def custom_genesis(validator_keys: list[bytes], genesis_time: int = 1_700_000_000_000) -> bytes:
    """Organisations with several keys, non-ASCII names and two roles."""
    keys = [SigningKey.from_seed(bytes([n]) * 32).public_key for n in range(1, 7)]
    orgs = [
        OrganizationSpec("notary", "Étude Dupont & Fils", ("notary", "auditor"), (keys[0],), ()),
        OrganizationSpec("b.2", "公证处", ("enterprise",), (keys[1], keys[2]), tuple(keys[3:6])),
    ]
    validators = [Validator(i, "b.2", key) for i, key in enumerate(validator_keys)]
    return genesis_document("chancery-x", genesis_time, orgs, validators, {"tx_window_ms": 5})


@pytest.mark.parametrize("validators", [1, 4, 7])
def test_genesis_hash_is_byte_for_byte_the_nodes(
    make_consortium: Callable[..., Consortium], validators: int
) -> None:
    consortium = make_consortium(validator_count=validators)
    genesis = consortium.genesis
    trust = read_genesis(consortium.raw)
    assert trust.genesis_hash == genesis.genesis_hash
    assert trust.chain_id == genesis.chain_id
    assert trust.validator_keys == genesis.validator_keys
    assert trust.validators_hash == genesis.validators_hash


def test_genesis_hash_agrees_on_unusual_organisations() -> None:
    keys = [SigningKey.from_seed(bytes([100 + n]) * 32).public_key for n in range(5)]
    raw = custom_genesis(keys)
    assert read_genesis(raw).genesis_hash == parse_genesis(raw).genesis_hash
    # Every part of the genesis block changes the hash.
    assert read_genesis(custom_genesis(keys, 1)).genesis_hash != read_genesis(raw).genesis_hash
    assert read_genesis(custom_genesis(keys[:4])).genesis_hash != read_genesis(raw).genesis_hash


def test_genesis_hash_agrees_on_a_generated_testnet(tmp_path: Path) -> None:
    testnet = generate_testnet(tmp_path / "net", 4)
    raw = testnet.genesis_path.read_bytes()
    assert read_genesis(raw).genesis_hash == testnet.genesis_hash == parse_genesis(raw).genesis_hash


@pytest.mark.parametrize(
    "change",
    [
        lambda g: g.pop("orgs"),
        lambda g: g.update(extra=1),
        lambda g: g["validators"][0].update(index=1),
        lambda g: g["validators"][0].update(public_key="zz" * 32),
        lambda g: g["orgs"][0].update(admins=["ab"]),
        lambda g: g.update(genesis_time=-1),
        lambda g: g.update(validators=[]),
    ],
)
def test_malformed_genesis_is_refused(consortium: Consortium, change: Callable) -> None:
    document = json.loads(consortium.raw)
    change(document)
    with pytest.raises(verifier.GenesisFormatError):
        read_genesis(json.dumps(document).encode())


def test_genesis_that_is_not_strict_json_is_refused(consortium: Consortium) -> None:
    text = consortium.raw.decode()
    for raw in [b"\xff", b"[", text.replace("{", '{"chain_id": "a", ', 1).encode()]:
        with pytest.raises(verifier.GenesisFormatError):
            read_genesis(raw)


# --- RFC 6962 ----------------------------------------------------------------------------------


def pymerkle_tree(leaves: list[bytes]) -> pymerkle.InmemoryTree:
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    for leaf in leaves:
        tree.append_entry(leaf)
    return tree


def pymerkle_path(tree: pymerkle.InmemoryTree, index: int) -> list[bytes]:
    """pymerkle's audit path (1-based; its first element is the leaf's own hash)."""
    proof = tree.prove_inclusion(index + 1).serialize()
    return [bytes.fromhex(h) for h in proof["path"][1:]]


def test_batch_tree_and_audit_paths_agree_with_node_merkle_and_pymerkle() -> None:
    for size in range(1, 40):
        leaves = [hashlib.sha256(bytes([n % 256, n // 256])).digest() for n in range(size)]
        tree = BatchTree(leaves)
        independent = pymerkle_tree(leaves)
        assert tree.root == merkle_root(leaves) == independent.get_root()
        for index in range(size):
            path = tree.audit_path(index)
            assert path == audit_path(leaves, index) == pymerkle_path(independent, index)
            assert root_from_audit_path(leaves[index], index, size, tuple(path)) == tree.root


def test_audit_path_of_the_wrong_shape_fails() -> None:
    leaves = FILE_HASHES
    tree = BatchTree(leaves)
    path = tuple(tree.audit_path(1))
    for index, size, shape in [(1, 5, path[:-1]), (1, 5, (*path, path[0])), (5, 5, path)]:
        with pytest.raises(verifier.CheckFailed):
            root_from_audit_path(leaves[1], index, size, shape)


def test_bundles_check_out_with_an_independent_rfc6962_implementation(anchored: Anchored) -> None:
    store = anchored.chain.store
    block = store.get_block(1)
    assert block is not None
    tx_tree, receipt_tree = pymerkle_tree(list(block.tx_ids)), pymerkle_tree(list(block.receipts))
    for index, tx in enumerate([anchored.membership_tx, anchored.anchor_tx, anchored.batch_tx]):
        bundle = anchored.bundle(tx)
        header = bundle["block"]["header"]
        assert tx_tree.get_root().hex() == header["tx_root"]
        assert receipt_tree.get_root().hex() == header["receipts_root"]
        assert bundle["tx_proof"]["index"] == index
        assert bundle["tx_proof"]["path"] == [h.hex() for h in pymerkle_path(tx_tree, index)]
        receipt_path = [h.hex() for h in pymerkle_path(receipt_tree, index)]
        assert bundle["receipt_proof"]["path"] == receipt_path
        proof = tx_tree.prove_inclusion(index + 1)
        pymerkle.verify_inclusion(tx_tree.get_leaf(index + 1), tx_tree.get_root(), proof)
    independent = pymerkle_tree(FILE_HASHES)
    for index in range(len(FILES)):
        batch = anchored.batch_bundle(index)["batch"]
        assert batch["path"] == [h.hex() for h in pymerkle_path(independent, index)]
        assert (
            anchored.bundle(anchored.batch_tx)["evidence"]["root"] == independent.get_root().hex()
        )


# --- valid bundles -----------------------------------------------------------------------------


def test_every_bundle_verifies_naming_every_check(anchored: Anchored) -> None:
    trust = anchored.trust
    membership = verify_bundle(anchored.bundle(anchored.membership_tx), trust)
    assert membership.ok, membership.to_json()
    assert [name for name, _, _ in membership.checks] == ["format", *TRANSACTION_CHECKS]

    single = verify_bundle(anchored.anchor_bundle(), trust, file_hash=DOCUMENT_HASH)
    assert single.ok, single.to_json()
    assert [n for n, _, _ in single.checks] == [
        "format",
        "file hash",
        *TRANSACTION_CHECKS,
        *EVIDENCE_CHECKS,
    ]
    for index, file_hash in enumerate(FILE_HASHES):
        report = verify_bundle(anchored.batch_bundle(index), trust, file_hash=file_hash)
        assert report.ok, report.to_json()
        assert report.checks[-1][0] == BATCH_CHECK
    later = verify_bundle(anchored.bundle(anchored.later_tx), trust, file_hash=FILE_HASHES[0])
    assert later.ok, later.to_json()


def test_the_cli_evidence_section_is_the_api_routes(anchored: Anchored) -> None:
    view = ReadView(evidence_contract.NAME, anchored.chain.store)
    for tx, key, org in [
        (anchored.anchor_tx, DOCUMENT_HASH, "notary"),
        (anchored.batch_tx, anchored.tree.root, "enterprise-b"),
    ]:
        anchor = evidence_contract.find_anchor(view, key, org)
        assert anchor is not None
        route = to_json_value(route_evidence_section(anchor))
        assert anchored.bundle(tx)["evidence"] == route
    assert anchored.anchor_bundle()["evidence"]["meta"] == {
        "pages": 3,
        "scan": "0102ff",
        "title": "Lease",
    }


def test_route_bundle_without_meta_may_say_null_or_empty(anchored: Anchored) -> None:
    bundle = anchored.bundle(anchored.batch_tx)
    assert bundle["evidence"]["meta"] is None
    bundle["evidence"]["meta"] = {}
    assert verify_bundle(bundle, anchored.trust).ok


# --- tampering ---------------------------------------------------------------------------------


def flip_hex(value: str, position: int) -> str:
    data = bytearray(bytes.fromhex(value))
    data[position] ^= 0x01
    return data.hex()


def verify_changed(
    anchored: Anchored,
    change: Callable[[dict[str, Any]], None],
    bundle: dict[str, Any] | None = None,
    file_hash: bytes | None = DOCUMENT_HASH,
    trust: TrustRoot | None = None,
) -> VerificationReport:
    bundle = copy.deepcopy(bundle or anchored.anchor_bundle())
    change(bundle)
    return verify_bundle(bundle, trust or anchored.trust, file_hash=file_hash)


def test_changed_transaction(anchored: Anchored) -> None:
    def change(bundle: dict[str, Any]) -> None:
        envelope = bytes.fromhex(bundle["tx"]["envelope"])
        position = envelope.index(b"\xa8contract\xa8evidence") + 11  # "evidence" -> "ewidence"
        bundle["tx"]["envelope"] = flip_hex(bundle["tx"]["envelope"], position)

    report = verify_changed(anchored, change)
    assert_fails(report, "tx_id = SHA-256(body)", "envelope signature verifies", ANCHOR_FIELDS)


def test_changed_signature_of_the_transaction(anchored: Anchored) -> None:
    def change(bundle: dict[str, Any]) -> None:
        envelope = bytes.fromhex(bundle["tx"]["envelope"])
        position = envelope.index(b"\xa9signature\xc4\x40") + 12
        bundle["tx"]["envelope"] = flip_hex(bundle["tx"]["envelope"], position)

    assert_fails(verify_changed(anchored, change), "envelope signature verifies")


def test_changed_receipt(anchored: Anchored) -> None:
    def change(bundle: dict[str, Any]) -> None:
        receipt = bytes.fromhex(bundle["receipt"])
        position = receipt.rindex(b"case-7") + 5  # the result's subject "case-7" -> "case-6"
        bundle["receipt"] = flip_hex(bundle["receipt"], position)

    report = verify_changed(anchored, change)
    assert_fails(report, "receipt included in receipts_root", ANCHOR_FIELDS)
    assert "subject" in detail_of(report, ANCHOR_FIELDS)


def test_receipt_of_a_neighbour_in_the_same_block(anchored: Anchored) -> None:
    neighbour = anchored.bundle(anchored.batch_tx)

    def change(bundle: dict[str, Any]) -> None:
        bundle["receipt"], bundle["receipt_proof"] = (
            neighbour["receipt"],
            neighbour["receipt_proof"],
        )

    report = verify_changed(anchored, change)
    assert_fails(
        report, "receipt and tx at the same position", "receipt names this tx_id", ANCHOR_FIELDS
    )


@pytest.mark.parametrize(
    ("field", "value", "also"),
    [
        ("timestamp", 1, (ANCHOR_FIELDS,)),
        ("height", 2, (ANCHOR_FIELDS, "commit certificate: 2f+1 genesis validators signed")),
        ("view", 7, ()),
        ("proposer", 3, ()),
        ("version", 2, ()),
        ("prev_hash", "00" * 32, ("genesis_hash matches genesis",)),
        ("state_root", "00" * 32, ()),
        ("tx_root", "00" * 32, ("tx_id included in tx_root",)),
        ("receipts_root", "00" * 32, ("receipt included in receipts_root",)),
        ("validators_hash", "00" * 32, ("header validators_hash matches genesis",)),
        ("chain_id", "chancery-other", ("header chain_id matches",)),
    ],
)
def test_changed_header_field(
    anchored: Anchored, field: str, value: Any, also: tuple[str, ...]
) -> None:
    def change(bundle: dict[str, Any]) -> None:
        assert bundle["block"]["header"][field] != value
        bundle["block"]["header"][field] = value

    assert_fails(verify_changed(anchored, change), "header hashes to block.hash", *also)


CERTIFICATE = "commit certificate: 2f+1 genesis validators signed"


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        (
            lambda c: c["signatures"][1].__setitem__(1, flip_hex(c["signatures"][1][1], 9)),
            "signature of validator 1 does not verify",
        ),
        (lambda c: c.update(signatures=c["signatures"][:2]), "2 signatures, needs 3"),
        (
            lambda c: c.update(signatures=[c["signatures"][0]] * 3),
            "validator 0 signed more than once",
        ),
        (
            lambda c: c.update(signatures=[*c["signatures"][:2], [9, c["signatures"][2][1]]]),
            "index 9 is not a validator",
        ),
        (
            lambda c: c.update(signatures=[[1, c["signatures"][0][1]], *c["signatures"][1:]]),
            "signature of validator 1 does not verify",
        ),
        (lambda c: c.update(height=2), "different height"),
        (lambda c: c.update(block_hash=flip_hex(c["block_hash"], 0)), "different block hash"),
    ],
    ids=["bad-signature", "too-few", "duplicated", "not-a-validator", "moved", "height", "hash"],
)
def test_changed_certificate(anchored: Anchored, change: Callable, detail: str) -> None:
    report = verify_changed(anchored, lambda bundle: change(bundle["commit"]))
    assert_fails(report, CERTIFICATE)
    assert detail in detail_of(report, CERTIFICATE)


def test_quorum_of_three_of_four_is_enough(anchored: Anchored) -> None:
    def change(bundle: dict[str, Any]) -> None:
        bundle["commit"]["signatures"] = bundle["commit"]["signatures"][1:]

    assert verify_changed(anchored, change).ok


def test_block_from_another_chain(
    anchored: Anchored,
    make_chain: Callable[[Consortium], Chain],
    make_consortium: Callable[..., Consortium],
) -> None:
    """Same chain_id, organisations and validators, another genesis time: another chain."""
    twin = Anchored(make_chain(make_consortium(validator_count=4, genesis_time=1_700_000_000_001)))
    foreign = twin.anchor_bundle()
    report = verify_bundle(foreign, anchored.trust, file_hash=DOCUMENT_HASH)
    assert_fails(report, "genesis_hash matches genesis")
    # Claiming this chain's genesis hash does not help: block 1 names its own genesis block.
    foreign["genesis_hash"] = anchored.trust.genesis_hash.hex()
    report = verify_bundle(foreign, anchored.trust, file_hash=DOCUMENT_HASH)
    assert_fails(report, "genesis_hash matches genesis")
    assert "prev_hash" in detail_of(report, "genesis_hash matches genesis")


def test_block_from_a_chain_with_another_chain_id(
    anchored: Anchored,
    make_chain: Callable[[Consortium], Chain],
    make_consortium: Callable[..., Consortium],
) -> None:
    other = Anchored(make_chain(make_consortium(validator_count=4, chain_id="chancery-other")))
    report = verify_bundle(other.anchor_bundle(), anchored.trust, file_hash=DOCUMENT_HASH)
    assert_fails(
        report,
        "chain_id matches genesis",
        "genesis_hash matches genesis",
        "header chain_id matches",
        CERTIFICATE,
        ANCHOR_FIELDS,
    )


def test_validators_not_those_of_the_genesis_file(anchored: Anchored) -> None:
    document = json.loads(anchored.chain.consortium.raw)
    for position, entry in enumerate(document["validators"]):
        entry["public_key"] = SigningKey.from_seed(bytes([200 + position]) * 32).public_key.hex()
    other = read_genesis(json.dumps(document).encode())
    assert other.chain_id == anchored.trust.chain_id
    report = verify_bundle(anchored.anchor_bundle(), other, file_hash=DOCUMENT_HASH)
    assert_fails(
        report,
        "genesis_hash matches genesis",
        CERTIFICATE,
        "header validators_hash matches genesis",
    )
    # Fewer validators: the same signatures are not a quorum of the right keys either.
    fewer = TrustRoot(
        anchored.trust.chain_id, anchored.trust.genesis_hash, other.validator_keys[:1]
    )
    report = verify_bundle(anchored.anchor_bundle(), fewer, file_hash=DOCUMENT_HASH)
    assert_fails(report, CERTIFICATE, "header validators_hash matches genesis")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("org", "taxoffice"),
        ("signer", "11" * 32),
        ("height", 2),
        ("timestamp", 5),
        ("kind", "invoice"),
        ("meta", {"title": "Lease"}),
        ("meta", None),
        ("tx_id", "22" * 32),
        ("subject", "case-8"),
        ("subject", None),
        ("contract", "membership"),
    ],
)
def test_changed_anchor_field(anchored: Anchored, field: str, value: Any) -> None:
    report = verify_changed(anchored, lambda bundle: bundle["evidence"].update({field: value}))
    assert_fails(report, ANCHOR_FIELDS)
    assert field in detail_of(report, ANCHOR_FIELDS)


def test_changed_anchored_hash(anchored: Anchored) -> None:
    def change(bundle: dict[str, Any]) -> None:
        bundle["evidence"]["hash"] = FILE_HASHES[0].hex()

    report = verify_changed(anchored, change, file_hash=FILE_HASHES[0])
    assert_fails(report, ANCHOR_FIELDS)  # the file matches the claim, the chain does not


def test_membership_transaction_posing_as_an_anchor(anchored: Anchored) -> None:
    bundle = anchored.bundle(anchored.membership_tx)
    bundle["evidence"] = anchored.anchor_bundle()["evidence"]
    report = verify_bundle(bundle, anchored.trust, file_hash=DOCUMENT_HASH)
    assert_fails(report, ANCHOR_FIELDS)
    assert "not an evidence call" in detail_of(report, ANCHOR_FIELDS)


def test_failed_anchor_is_not_evidence(
    make_chain: Callable[[Consortium], Chain], consortium4: Consortium
) -> None:
    chain = make_chain(consortium4)
    c = consortium4
    args = {"hash": DOCUMENT_HASH, "kind": "contract"}
    first = c.sign(c.members["notary"], "evidence", "anchor", args, nonce=1)
    again = c.sign(c.members["notary"], "evidence", "anchor", args, nonce=2)
    chain.commit([first, again])
    first_bundle = build_tx_proof(chain.store, c.genesis, first.tx_id)
    bundle = build_tx_proof(chain.store, c.genesis, again.tx_id)
    assert bundle is not None and first_bundle is not None
    bundle["evidence"] = {**evidence_section(first_bundle), "tx_id": again.tx_id.hex()}
    report = verify_bundle(bundle, read_genesis(c.raw), file_hash=DOCUMENT_HASH)
    assert_fails(report, "receipt ok", ANCHOR_FIELDS)
    assert "evidence.duplicate" in detail_of(report, "receipt ok")


@pytest.mark.parametrize(
    ("change", "failed"),
    [
        (lambda b: b.update(leaf=FILE_HASHES[2].hex()), ("file hash", BATCH_CHECK)),
        (lambda b: b.update(index=3), (BATCH_CHECK,)),
        (lambda b: b.update(size=6), (BATCH_CHECK,)),
        (lambda b: b.update(size=8), (BATCH_CHECK,)),
        (lambda b: b["path"].__setitem__(0, flip_hex(b["path"][0], 31)), (BATCH_CHECK,)),
        (lambda b: b["path"].pop(), (BATCH_CHECK,)),
    ],
    ids=["leaf", "index", "size", "size-same-shape", "path", "short-path"],
)
def test_changed_batch_section(anchored: Anchored, change: Callable, failed: tuple) -> None:
    bundle = anchored.batch_bundle(1)
    report = verify_changed(
        anchored, lambda b: change(b["batch"]), bundle=bundle, file_hash=FILE_HASHES[1]
    )
    assert_fails(report, *failed)


def test_batch_file_checked_against_another_files_bundle(anchored: Anchored) -> None:
    report = verify_bundle(anchored.batch_bundle(0), anchored.trust, file_hash=FILE_HASHES[1])
    assert_fails(report, "file hash")


def test_batch_anchor_without_a_batch_section_cannot_prove_a_file(anchored: Anchored) -> None:
    bundle = anchored.bundle(anchored.batch_tx)
    assert verify_bundle(bundle, anchored.trust).ok  # it proves the root
    assert_fails(verify_bundle(bundle, anchored.trust, file_hash=FILE_HASHES[0]), "file hash")


def test_transaction_bundle_proves_no_file(anchored: Anchored) -> None:
    bundle = anchored.bundle(anchored.membership_tx)
    report = verify_bundle(bundle, anchored.trust, file_hash=DOCUMENT_HASH)
    assert_fails(report, "file hash")


@pytest.mark.parametrize(
    "change",
    [
        lambda b: b.update(extra=1),
        lambda b: b["evidence"].update(extra=1),
        lambda b: b["evidence"].pop("meta"),
        lambda b: b["evidence"].update(method="anchor_many"),
        lambda b: b["evidence"].update(method=["anchor"]),
        lambda b: b["evidence"].update(height=True),
        lambda b: b["evidence"].update(hash=b["evidence"]["hash"].upper()),
        lambda b: b["tx"].update(tx_id=b["tx"]["tx_id"] + "00"),
        lambda b: b["block"]["header"].update(height=2**64),
        lambda b: b["block"]["header"].update(height=1.0),
        lambda b: b["commit"].update(signatures=[[0]]),
        lambda b: b.update(batch={"leaf": "00", "index": 0, "size": 1, "path": []}),
        lambda b: b["tx"].update(envelope=b["tx"]["envelope"] + "00"),
        lambda b: b["block"]["header"].update(chain_id="\ud800"),
    ],
)
def test_malformed_bundle_is_reported_not_raised(anchored: Anchored, change: Callable) -> None:
    report = verify_changed(anchored, change)
    assert report.ok is False
    assert report.checks[-1][:2] == ("bundle is well-formed", False)


@pytest.mark.parametrize("raw", [b"", b"\xff", b"[]", b"{", b'{"a": 1, "a": 2}', b"NaN", b"1e999"])
def test_bundle_that_is_not_strict_json(anchored: Anchored, raw: bytes) -> None:
    report = verify_bundle_bytes(raw, anchored.trust)
    assert report.ok is False
    assert report.checks[-1][0] in {"bundle is well-formed", "format"}


def test_lone_surrogate_in_the_bundle_file(anchored: Anchored) -> None:
    text = json.dumps(anchored.anchor_bundle()).replace('"notary"', '"\\ud800"')
    assert "\\ud800" in text
    report = verify_bundle_bytes(text.encode(), anchored.trust)
    assert report.checks == [("bundle is well-formed", False, report.checks[0][2])]
    assert "not strict JSON" in report.checks[0][2]


def test_non_canonical_envelope_is_refused(anchored: Anchored) -> None:
    import msgpack

    def change(bundle: dict[str, Any]) -> None:
        envelope = msgpack.unpackb(bytes.fromhex(bundle["tx"]["envelope"]))
        reordered = {key: envelope[key] for key in ("signer", "signature", "body")}
        bundle["tx"]["envelope"] = msgpack.packb(reordered, use_bin_type=True).hex()

    report = verify_changed(anchored, change)
    assert "canonical" in detail_of(report, "bundle is well-formed")


# --- every byte ------------------------------------------------------------------------------


def test_every_byte_of_the_file_matters(anchored: Anchored) -> None:
    bundle = anchored.anchor_bundle()
    for position in range(len(DOCUMENT)):
        changed = bytearray(DOCUMENT)
        changed[position] ^= 0x01
        report = verify_bundle(bundle, anchored.trust, file_hash=hashlib.sha256(changed).digest())
        assert_fails(report, "file hash")


def bundle_text_mutations(text: str) -> Iterator[tuple[int, str]]:
    """Each byte of the JSON text with its lowest bit flipped (ASCII stays ASCII)."""
    for position, character in enumerate(text):
        yield position, text[:position] + chr(ord(character) ^ 0x01) + text[position + 1 :]


@pytest.mark.parametrize("which", ["anchor", "batch"])
def test_every_byte_of_the_bundle_matters(anchored: Anchored, which: str) -> None:
    """Flip each byte of the bundle file (values, keys, punctuation, whitespace): every
    change fails, and the report names a check that failed."""
    if which == "anchor":
        bundle, file_hash, step = anchored.anchor_bundle(), DOCUMENT_HASH, 1
    else:
        bundle, file_hash, step = anchored.batch_bundle(3), FILE_HASHES[3], 1
    text = json.dumps(bundle, indent=1)
    assert text.isascii()
    assert verify_bundle_bytes(text.encode(), anchored.trust, file_hash=file_hash).ok
    mutations = list(bundle_text_mutations(text))[::step]
    for position, changed in mutations:
        report = verify_bundle_bytes(changed.encode(), anchored.trust, file_hash=file_hash)
        assert report.ok is False, (position, text[max(0, position - 30) : position + 30])
        assert set(failing(report)) <= EVERY_CHECK_NAME
        assert failing(report)


# --- the command -------------------------------------------------------------------------------


@pytest.fixture
def on_disk(anchored: Anchored, tmp_path: Path) -> dict[str, Path]:
    document = tmp_path / "lease.pdf"
    document.write_bytes(DOCUMENT)
    proof = tmp_path / "lease.pdf.proof.json"
    write_bundle(proof, anchored.anchor_bundle())
    genesis = tmp_path / "genesis.json"
    genesis.write_bytes(anchored.chain.consortium.raw)
    return {"file": document, "proof": proof, "genesis": genesis}


def run_verify(paths: dict[str, Path], *extra: str) -> int:
    argv = ["evidence", "verify", str(paths["file"]), str(paths["proof"])]
    return main([*argv, "--genesis", str(paths["genesis"]), *extra])


def test_verify_command_passes_and_prints_every_check(
    on_disk: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert hash_file(on_disk["file"]) == DOCUMENT_HASH
    assert run_verify(on_disk) == 0
    out = capsys.readouterr().out
    for name in ["file hash", *TRANSACTION_CHECKS, *EVIDENCE_CHECKS]:
        assert f"ok    {name}" in out
    assert "verified:" in out
    assert run_verify(on_disk, "--json") == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_verify_command_fails_naming_the_check(
    on_disk: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    on_disk["file"].write_bytes(DOCUMENT + b" ")
    assert run_verify(on_disk) == 1
    out = capsys.readouterr().out
    assert "FAIL  file hash" in out
    assert "NOT verified: 1 check(s) failed: file hash" in out


def test_verify_command_with_a_damaged_bundle_file(
    on_disk: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    on_disk["proof"].write_bytes(on_disk["proof"].read_bytes()[:-5])
    assert run_verify(on_disk) == 1
    assert "FAIL  bundle is well-formed: not strict JSON" in capsys.readouterr().out


def test_verify_command_usage_errors(
    on_disk: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_verify({**on_disk, "file": tmp_path / "missing"}) == 2
    assert "missing: cannot read" in capsys.readouterr().err
    assert run_verify({**on_disk, "proof": tmp_path / "missing"}) == 2
    assert "cannot read the proof" in capsys.readouterr().err
    bad_genesis = tmp_path / "bad.json"
    bad_genesis.write_text("{}")
    assert run_verify({**on_disk, "genesis": bad_genesis}) == 2
    assert "genesis must have exactly" in capsys.readouterr().err
    assert main(["evidence", "verify", str(on_disk["file"])]) == 2
