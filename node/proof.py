"""Proof bundles (PROTOCOL.md section 8): offline evidence that a transaction was committed.

`build_tx_proof` assembles a bundle from the store; `verify_proof_bundle` checks one with
nothing but the genesis file, and reports each check by name so an auditor sees exactly
what was proven and what failed. The checking itself is `node.verifier`, a standalone
module that imports nothing from the project, so there is one verification path.
"""

from __future__ import annotations

from typing import Any

from node.genesis import Genesis
from node.merkle import inclusion_proof
from node.storage import ChainStore
from node.verifier import (
    PROOF_FORMAT,
    GenesisFormatError,
    VerificationReport,
    read_genesis,
    verify_bundle,
)

__all__ = ["PROOF_FORMAT", "ProofReport", "build_tx_proof", "verify_proof_bundle"]


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


# One verification path: the standalone verifier (node/verifier.py) checks every bundle.
ProofReport = VerificationReport


def verify_proof_bundle(bundle: Any, genesis: Genesis) -> ProofReport:
    """Check a proof bundle (its JSON value) against a genesis file, with no node online.

    Never raises on a malformed bundle: that is the failed check "bundle is well-formed".
    """
    try:
        trust = read_genesis(genesis.raw)
    except GenesisFormatError as exc:  # pragma: no cover - parse_genesis accepted these bytes
        report = ProofReport()
        report.check("genesis file is well-formed", False, str(exc))
        return report
    return verify_bundle(bundle, trust)
