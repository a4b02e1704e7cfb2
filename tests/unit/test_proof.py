"""Tests for node.proof: offline proof bundles (PROTOCOL.md section 8)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from node.block import BlockHeader
from node.proof import PROOF_FORMAT, ProofReport, build_tx_proof, verify_proof_bundle
from node.transaction import Transaction

if TYPE_CHECKING:
    from tests.unit.conftest import Chain, Consortium

# Every check a complete, valid bundle passes (matched by substring, in order).
ALL_CHECKS = [
    "format",
    "chain_id matches genesis",
    "genesis_hash matches genesis",
    "tx_id = SHA-256(body)",
    "envelope signature verifies",
    "header hashes to block.hash",
    "header chain_id matches",
    "tx_id included in tx_root",
    "receipt included in receipts_root",
    "receipt and tx at the same",
    "commit certificate",
    "header validators_hash matches genesis",
]


class Committed:
    """A 4-validator chain: block 1 holds three txs (one failing), block 2 holds one."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        c = chain.consortium
        self.txs: list[Transaction] = [
            c.sign(
                c.admins["enterprise-a"],
                "membership",
                "add_member",
                {"name": "Alice", "public_key": b"\x5a" * 32},
                nonce=1,
            ),
            c.sign(
                c.members["notary"],
                "membership",
                "set_encryption_key",
                {"encryption_key": b"\x0e" * 32},
                nonce=2,
            ),
            c.sign(
                c.members["enterprise-b"],
                "membership",
                "add_member",
                {"name": "Bob", "public_key": b"\x5b" * 32},
                nonce=3,
            ),
        ]
        chain.commit(self.txs)
        self.later = c.sign(
            c.admins["taxoffice"],
            "membership",
            "add_member",
            {"name": "Carol", "public_key": b"\x5c" * 32},
            nonce=4,
        )
        chain.commit([self.later])

    def bundle(self, tx: Transaction) -> dict[str, Any]:
        bundle = build_tx_proof(self.chain.store, self.chain.consortium.genesis, tx.tx_id)
        assert bundle is not None
        return bundle


@pytest.fixture
def committed(make_chain: Callable[[Consortium], Chain], consortium4: Consortium) -> Committed:
    return Committed(make_chain(consortium4))


def verify(bundle: Any, committed: Committed, genesis: Any = None) -> ProofReport:
    return verify_proof_bundle(bundle, genesis or committed.chain.consortium.genesis)


def failing(report: ProofReport) -> list[str]:
    return [name for name, passed, _ in report.checks if not passed]


def assert_fails(report: ProofReport, *fragments: str) -> None:
    """`report` is not ok, and its failed checks are exactly the ones named by `fragments`."""
    assert report.ok is False
    failed = failing(report)
    for fragment in fragments:
        assert any(fragment in name for name in failed), (fragment, failed)
    for name in failed:
        assert any(fragment in name for fragment in fragments), (name, fragments)


def test_valid_bundle_verifies_with_every_check_named(committed: Committed) -> None:
    for tx in [*committed.txs, committed.later]:
        report = verify(committed.bundle(tx), committed)
        assert report.ok, report.to_json()
        names = [name for name, _, _ in report.checks]
        for expected in ALL_CHECKS:
            assert any(expected in name for name in names), (expected, names)
        as_json = report.to_json()
        assert as_json["ok"] is True
        assert all(check["ok"] for check in as_json["checks"])


def test_bundle_contents(committed: Committed) -> None:
    tx = committed.txs[1]
    bundle = committed.bundle(tx)
    store = committed.chain.store
    block = store.get_block(1)
    assert block is not None
    genesis = committed.chain.consortium.genesis
    assert bundle["format"] == PROOF_FORMAT == "chancery-proof/1"
    assert bundle["chain_id"] == genesis.chain_id
    assert bundle["genesis_hash"] == genesis.genesis_hash.hex()
    assert bundle["tx"] == {"envelope": tx.envelope.hex(), "tx_id": tx.tx_id.hex()}
    assert bundle["receipt"] == block.receipts[1].hex()
    assert bundle["block"]["hash"] == block.block_hash.hex()
    assert BlockHeader.from_json(bundle["block"]["header"]) == block.header
    assert bundle["tx_proof"]["index"] == bundle["receipt_proof"]["index"] == 1
    assert bundle["tx_proof"]["size"] == bundle["receipt_proof"]["size"] == 3
    assert len(bundle["tx_proof"]["path"]) == 2
    assert bundle["commit"]["height"] == 1
    assert [index for index, _ in bundle["commit"]["signatures"]] == [0, 1, 2, 3]


def test_failed_transaction_is_provable_too(committed: Committed) -> None:
    bundle = committed.bundle(committed.txs[2])
    receipt = bytes.fromhex(bundle["receipt"])
    assert b"tx.forbidden" in receipt
    assert verify(bundle, committed).ok


def test_bundle_survives_json(committed: Committed) -> None:
    bundle = committed.bundle(committed.txs[0])
    reloaded = json.loads(json.dumps(bundle))
    assert reloaded == bundle
    assert verify(reloaded, committed).ok


def test_unknown_tx_has_no_bundle(committed: Committed) -> None:
    chain = committed.chain
    assert build_tx_proof(chain.store, chain.consortium.genesis, b"\x00" * 32) is None


# --- tampering ---------------------------------------------------------------------------------


def flip_hex_byte(value: str, position: int, xor: int = 0x01) -> str:
    data = bytearray(bytes.fromhex(value))
    data[position] ^= xor
    return data.hex()


def tampered(committed: Committed, change: Callable[[dict[str, Any]], None]) -> ProofReport:
    bundle = copy.deepcopy(committed.bundle(committed.txs[1]))
    change(bundle)
    return verify(bundle, committed)


def test_tampered_envelope_signature(committed: Committed) -> None:
    def change(bundle: dict[str, Any]) -> None:
        envelope = bytes.fromhex(bundle["tx"]["envelope"])
        position = envelope.index(b"\xa9signature\xc4\x40") + 12
        bundle["tx"]["envelope"] = flip_hex_byte(bundle["tx"]["envelope"], position)

    assert_fails(tampered(committed, change), "envelope signature verifies")


def test_tampered_envelope_body(committed: Committed) -> None:
    def change(bundle: dict[str, Any]) -> None:
        envelope = bytes.fromhex(bundle["tx"]["envelope"])
        position = envelope.index(b"\xa5nonce") + 6
        assert envelope[position] == 2  # nonce 2 as a positive fixint; 3 stays canonical
        bundle["tx"]["envelope"] = flip_hex_byte(bundle["tx"]["envelope"], position)

    assert_fails(
        tampered(committed, change), "tx_id = SHA-256(body)", "envelope signature verifies"
    )


def test_tampered_tx_id(committed: Committed) -> None:
    def change(bundle: dict[str, Any]) -> None:
        bundle["tx"]["tx_id"] = committed.txs[0].tx_id.hex()

    report = tampered(committed, change)
    assert report.ok is False
    assert "tx_id = SHA-256(body)" in failing(report)


def test_tampered_receipt(committed: Committed) -> None:
    def change(bundle: dict[str, Any]) -> None:
        receipt = bytes.fromhex(bundle["receipt"])
        position = receipt.index(b"\xa2ok\xc3") + 3
        bundle["receipt"] = flip_hex_byte(bundle["receipt"], position)  # ok: true -> false

    assert_fails(tampered(committed, change), "receipt included in receipts_root")


def test_receipt_of_another_tx_in_the_same_block(committed: Committed) -> None:
    other = committed.bundle(committed.txs[0])

    def change(bundle: dict[str, Any]) -> None:
        bundle["receipt"] = other["receipt"]
        bundle["receipt_proof"] = other["receipt_proof"]

    report = tampered(committed, change)
    assert report.ok is False
    assert any("receipt and tx at the same" in name for name in failing(report))
    assert "receipt included in receipts_root" not in failing(report)


@pytest.mark.parametrize(
    ("field", "value", "also_failing"),
    [
        ("timestamp", 1, ()),
        ("view", 7, ()),
        ("proposer", 3, ()),
        ("state_root", "00" * 32, ()),
        ("tx_root", "00" * 32, ("tx_id included in tx_root",)),
        ("receipts_root", "00" * 32, ("receipt included in receipts_root",)),
        ("validators_hash", "00" * 32, ("header validators_hash matches genesis",)),
        ("chain_id", "chancery-other", ("header chain_id matches",)),
    ],
)
def test_tampered_header_field(
    committed: Committed, field: str, value: Any, also_failing: tuple[str, ...]
) -> None:
    def change(bundle: dict[str, Any]) -> None:
        assert bundle["block"]["header"][field] != value
        bundle["block"]["header"][field] = value

    assert_fails(tampered(committed, change), "header hashes to block.hash", *also_failing)


def test_tampered_block_hash(committed: Committed) -> None:
    def change(bundle: dict[str, Any]) -> None:
        bundle["block"]["hash"] = flip_hex_byte(bundle["block"]["hash"], 0)

    # The certificate names the real hash, so it no longer matches either.
    assert_fails(tampered(committed, change), "header hashes to block.hash", "commit certificate")


@pytest.mark.parametrize("element", [0, 1])
def test_tampered_tx_path_element(committed: Committed, element: int) -> None:
    def change(bundle: dict[str, Any]) -> None:
        path = bundle["tx_proof"]["path"]
        path[element] = flip_hex_byte(path[element], 31)

    assert_fails(tampered(committed, change), "tx_id included in tx_root")


def test_tampered_receipt_path_element(committed: Committed) -> None:
    def change(bundle: dict[str, Any]) -> None:
        path = bundle["receipt_proof"]["path"]
        path[0] = flip_hex_byte(path[0], 0)

    assert_fails(tampered(committed, change), "receipt included in receipts_root")


def test_tampered_certificate_signature(committed: Committed) -> None:
    def change(bundle: dict[str, Any]) -> None:
        index, signature = bundle["commit"]["signatures"][2]
        bundle["commit"]["signatures"][2] = [index, flip_hex_byte(signature, 5)]

    report = tampered(committed, change)
    assert_fails(report, "commit certificate")
    details = [detail for name, passed, detail in report.checks if not passed]
    assert details == ["signature of validator 2 does not verify"]


def test_certificate_below_quorum(committed: Committed) -> None:
    def change(bundle: dict[str, Any]) -> None:
        bundle["commit"]["signatures"] = bundle["commit"]["signatures"][:2]

    assert_fails(tampered(committed, change), "commit certificate")


def test_different_genesis_same_chain_id(
    committed: Committed, make_consortium: Callable[..., Consortium]
) -> None:
    other = make_consortium(validator_count=4, genesis_time=1_700_000_000_001)
    bundle = committed.bundle(committed.txs[1])
    assert_fails(verify(bundle, committed, other.genesis), "genesis_hash matches genesis")


def test_different_genesis_other_chain(
    committed: Committed, make_consortium: Callable[..., Consortium]
) -> None:
    other = make_consortium(validator_count=4, chain_id="chancery-other")
    report = verify(committed.bundle(committed.txs[1]), committed, other.genesis)
    assert_fails(
        report,
        "chain_id matches genesis",
        "genesis_hash matches genesis",
        "header chain_id matches",
        "commit certificate",
    )


def test_different_genesis_other_validators(
    committed: Committed, make_consortium: Callable[..., Consortium]
) -> None:
    other = make_consortium(validator_count=1)
    report = verify(committed.bundle(committed.txs[1]), committed, other.genesis)
    assert_fails(
        report,
        "genesis_hash matches genesis",
        "commit certificate",
        "header validators_hash matches genesis",
    )


def test_wrong_format_stops_early(committed: Committed) -> None:
    def change(bundle: dict[str, Any]) -> None:
        bundle["format"] = "chancery-proof/2"

    report = tampered(committed, change)
    assert_fails(report, "format")
    assert len(report.checks) == 1


@pytest.mark.parametrize(
    "change",
    [
        lambda b: b.pop("receipt"),
        lambda b: b["tx"].update(envelope="zz"),
        lambda b: b["tx"].update(envelope="c1"),
        lambda b: b["tx_proof"].update(path="not a list"),
        lambda b: b["block"].update(header={}),
        lambda b: b["commit"].update(signatures=[[0, "xyz"]]),
        lambda b: b.update(genesis_hash=5),
    ],
    ids=["missing", "bad-hex", "bad-envelope", "bad-path", "bad-header", "bad-sig", "not-str"],
)
def test_malformed_bundle_is_reported_not_raised(
    committed: Committed, change: Callable[[dict[str, Any]], None]
) -> None:
    report = tampered(committed, change)
    assert report.ok is False
    assert report.checks[-1][0] == "bundle is well-formed"
    assert report.checks[-1][1] is False


@pytest.mark.parametrize("bundle", [None, [], "text", {}])
def test_not_a_bundle(committed: Committed, bundle: Any) -> None:
    report = verify(bundle, committed)
    assert report.ok is False
    assert ProofReport().ok is False  # no checks run is never ok
