"""Proof bundles (PROTOCOL.md section 8): offline evidence that a transaction was committed.

`build_tx_proof` assembles a bundle from the store; `verify_proof_bundle` checks one with
nothing but the genesis file, and reports each check by name so an auditor sees exactly
what was proven and what failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from node.block import (
    BlockFormatError,
    BlockHeader,
    CommitCertificate,
    Receipt,
    certificate_problem,
    sha256,
)
from node.crypto import DOMAIN_TX, verify
from node.errors import ChanceryError
from node.genesis import Genesis
from node.merkle import InclusionProof, MerkleError, inclusion_proof, verify_inclusion
from node.storage import ChainStore
from node.transaction import decode_envelope

PROOF_FORMAT: Final = "chancery-proof/1"


def build_tx_proof(store: ChainStore, genesis: Genesis, tx_id: bytes) -> dict[str, Any] | None:
    """The proof bundle of a committed transaction, JSON-ready; None if not committed."""
    record = store.get_tx(tx_id)
    if record is None:
        return None
    block = store.get_block(record.height)
    if block is None:  # pragma: no cover - the tx index and blocks are written together
        return None
    return {
        "format": PROOF_FORMAT,
        "chain_id": genesis.chain_id,
        "genesis_hash": store.genesis_hash.hex(),
        "tx": {"envelope": record.envelope.hex(), "tx_id": tx_id.hex()},
        "receipt": record.receipt.hex(),
        "block": {"header": block.header.to_json(), "hash": block.block_hash.hex()},
        "tx_proof": inclusion_proof(block.tx_ids, record.index).to_json(),
        "receipt_proof": inclusion_proof(block.receipts, record.index).to_json(),
        "commit": block.commit.to_json(),
    }


@dataclass
class ProofReport:
    """The outcome of every check, in order; `ok` only if all passed."""

    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(passed for _, passed, _ in self.checks)

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        self.checks.append((name, passed, detail))
        return passed

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [{"check": n, "ok": p, "detail": d} for n, p, d in self.checks],
        }


def _hex(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("expected a hex string")
    return bytes.fromhex(value)


def verify_proof_bundle(bundle: Any, genesis: Genesis) -> ProofReport:
    """Check a proof bundle against a genesis file, with no node online."""
    report = ProofReport()
    try:
        _verify(bundle, genesis, report)
    except (KeyError, TypeError, ValueError, MerkleError, BlockFormatError, ChanceryError) as exc:
        report.check("bundle is well-formed", False, f"{type(exc).__name__}: {exc}")
    return report


def _verify(bundle: Any, genesis: Genesis, report: ProofReport) -> None:
    if not report.check("format", bundle["format"] == PROOF_FORMAT, str(bundle["format"])):
        return
    report.check("chain_id matches genesis", bundle["chain_id"] == genesis.chain_id)
    report.check(
        "genesis_hash matches genesis", _hex(bundle["genesis_hash"]) == genesis.genesis_hash
    )
    tx = decode_envelope(_hex(bundle["tx"]["envelope"]))
    tx_id = _hex(bundle["tx"]["tx_id"])
    report.check("tx_id = SHA-256(body)", tx.tx_id == tx_id)
    signed = verify(tx.signer, DOMAIN_TX, tx.body_bytes, tx.signature)
    report.check("envelope signature verifies", signed)
    header = BlockHeader.from_json(bundle["block"]["header"])
    block_hash = _hex(bundle["block"]["hash"])
    report.check("header hashes to block.hash", sha256(header.encode()) == block_hash)
    report.check("header chain_id matches", header.chain_id == genesis.chain_id)
    tx_proof = InclusionProof.from_json(bundle["tx_proof"])
    report.check("tx_id included in tx_root", verify_inclusion(tx_id, tx_proof, header.tx_root))
    receipt = _hex(bundle["receipt"])
    receipt_proof = InclusionProof.from_json(bundle["receipt_proof"])
    included = verify_inclusion(receipt, receipt_proof, header.receipts_root)
    report.check("receipt included in receipts_root", included)
    # An audit path does not pin the tree size by itself (RFC 9162 accepts a path for
    # several sizes), so the receipt is bound to the tx by its own tx_id and by equal
    # (index, size) in both trees, which fixes the same leaf position.
    same_position = (receipt_proof.index, receipt_proof.size) == (tx_proof.index, tx_proof.size)
    report.check("receipt and tx at the same position", same_position)
    report.check("receipt names this tx_id", Receipt.decode(receipt).tx_id == tx_id)
    certificate = CommitCertificate.from_json(bundle["commit"])
    problem = certificate_problem(
        certificate, genesis.chain_id, block_hash, header.height, genesis.validator_keys
    )
    report.check(
        "commit certificate: 2f+1 genesis validators signed", problem is None, problem or ""
    )
    validators_ok = header.validators_hash == genesis.validators_hash
    report.check("header validators_hash matches genesis", validators_ok)
