"""Pending parents: blocks built on blocks not yet committed, as the PBFT window does."""

from __future__ import annotations

import os

import pytest

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
