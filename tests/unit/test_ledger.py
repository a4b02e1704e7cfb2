"""Pending parents: blocks built on blocks not yet committed, as the PBFT window does."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest

from contracts import lottery_draw
from contracts.registry import builtin_registry
from node import merkle
from node.audit import ChainAuditor, SourceBlock
from node.crypto import SignatureVerifier, SigningKey
from node.ledger import Parent, Proposal, ProposalRejected
from node.transaction import Transaction
from tests.unit.conftest import Chain

HEIGHTS = 40


def new_member(chain: Chain, nonce: int, timestamp: int) -> Transaction:
    consortium = chain.consortium
    return consortium.sign(
        consortium.admins["notary"],
        "membership",
        "add_member",
        {"public_key": os.urandom(32), "name": f"m{nonce}"},
        nonce=nonce,
        timestamp=timestamp,
    )


def build(chain: Chain, parent: Parent, txs: list[Transaction], when: int) -> Proposal:
    return chain.ledger.build_proposal(parent, txs, when, 0, 0)


def test_a_long_pipeline_carries_only_the_uncommitted_layers(chain: Chain) -> None:
    """Each block is built on the previous, still pending, one; the one before is committed
    meanwhile. The parent must not accumulate the chain's history, and reads must still
    see every earlier write (from the store once committed)."""
    when = chain.next_timestamp()
    added: list[bytes] = []
    previous: Proposal | None = None
    parent = chain.ledger.tip()
    for height in range(1, HEIGHTS + 1):
        tx = new_member(chain, height, when)
        added.append(tx.body.args["public_key"])
        proposal = build(chain, parent, [tx], when + height)
        if previous is not None:
            certificate = chain.consortium.certificate(previous.block_hash, previous.height)
            chain.ledger.commit(previous, certificate)
        parent = proposal.as_parent(chain.store)
        assert [layer.height for layer in parent.pending] == [height]
        previous = proposal
    for key in added:
        assert parent.state.get(b"membership/key/" + key) is not None


def test_a_transaction_pending_in_an_ancestor_is_refused_and_then_found_committed(
    chain: Chain,
) -> None:
    when = chain.next_timestamp()
    tx = new_member(chain, 1, when)
    first = build(chain, chain.ledger.tip(), [tx], when)
    second = build(chain, first.as_parent(chain.store), [new_member(chain, 2, when)], when + 1)
    on_pending = second.as_parent(chain.store)
    assert [layer.height for layer in on_pending.pending] == [1, 2]
    with pytest.raises(ProposalRejected, match="repeated"):
        chain.ledger.check_transactions([tx], on_pending)
    chain.ledger.commit(first, chain.consortium.certificate(first.block_hash, 1))
    on_committed = second.as_parent(chain.store)
    assert [layer.height for layer in on_committed.pending] == [2]
    with pytest.raises(ProposalRejected, match="already committed"):
        chain.ledger.check_transactions([tx], on_committed)


def test_a_draw_on_a_pending_chain_seeds_from_the_sealing_blocks_hash(chain: Chain) -> None:
    """Seal, reveals and draw in consecutive blocks, each built on the previous while it is
    still pending (the PBFT window): the draw reads the sealing block's hash from the
    pending layers, and the replaying auditor, reading it from its own history, agrees."""
    consortium = chain.consortium
    sponsor, notary = consortium.members["enterprise-a"], consortium.members["notary"]
    secrets = {"sponsor": hashlib.sha256(b"s").digest(), "notary": hashlib.sha256(b"n").digest()}
    nonce = iter(range(1, 100))

    def call(key: SigningKey, method: str, args: dict[str, Any]) -> Transaction:
        when = chain.next_timestamp()
        args = {"project_id": "p", **args}
        return consortium.sign(key, "lottery", method, args, nonce=next(nonce), timestamp=when)

    entries = [hashlib.sha256(bytes([n])).digest() for n in range(10)]
    create = {"title": "t", "rules": {}, "notary_org": "notary", "winners": 2}
    create["sponsor_commit"] = hashlib.sha256(secrets["sponsor"]).digest()
    chain.commit([call(sponsor, "create", create)])
    notary_commit = hashlib.sha256(secrets["notary"]).digest()
    chain.commit([call(notary, "approve", {"notary_commit": notary_commit})])
    chain.commit([call(sponsor, "add_participants", {"entries": entries})])

    when = chain.next_timestamp()
    sealing = build(chain, chain.ledger.tip(), [call(sponsor, "seal", {})], when)
    revealing = build(
        chain,
        sealing.as_parent(chain.store),
        [call(sponsor, "reveal", {"secret": secrets["sponsor"]})],
        when + 1,
    )
    drawing = build(
        chain,
        revealing.as_parent(chain.store),
        [call(notary, "reveal", {"secret": secrets["notary"]}), call(notary, "draw", {})],
        when + 2,
    )
    assert all(r.ok for p in (sealing, revealing, drawing) for r in p.output.receipts)
    seed = lottery_draw.draw_seed(
        "p",
        merkle.merkle_root(entries),
        len(entries),
        secrets["sponsor"],
        secrets["notary"],
        sealing.block_hash,
    )
    assert drawing.output.receipts[1].result["seed"] == seed
    for proposal in (sealing, revealing, drawing):
        certificate = consortium.certificate(proposal.block_hash, proposal.height)
        chain.ledger.commit(proposal, certificate)

    verifier = SignatureVerifier(workers=1)
    try:
        auditor = ChainAuditor(consortium.genesis, builtin_registry(), verifier.executor)
        blocks = chain.store.iter_blocks(0, chain.store.height + 1)
        result = auditor.run(SourceBlock(b.height, b.to_export()) for b in blocks)
    finally:
        verifier.close()
    assert result.clean, result.divergence
    assert result.height == drawing.height
