"""View change: checking VIEW-CHANGE proofs and computing what a NEW-VIEW must re-propose.

Pure functions, shared by the new primary (which builds the plan) and every backup (which
recomputes it from the same VIEW-CHANGEs and accepts the NEW-VIEW only if it matches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from consensus.auth import Authenticator
from consensus.config import ReplicaConfig
from consensus.messages import (
    PreparedCertificate,
    ViewChange,
    signing_payload,
)


def prepared_certificate_problem(
    certificate: PreparedCertificate, config: ReplicaConfig, auth: Authenticator
) -> str | None:
    """Why `certificate` is not 2f+1 valid PREPAREs for its block, or None."""
    senders: set[int] = set()
    for prepare in certificate.prepares:
        if (prepare.view, prepare.height, prepare.block_hash) != (
            certificate.view,
            certificate.height,
            certificate.block_hash,
        ):
            return "a prepare names another view, height or block"
        if prepare.sender in senders or not 0 <= prepare.sender < config.validator_count:
            return "prepare senders repeat or are not validators"
        if not auth.verify(
            prepare.sender, signing_payload(prepare, config.chain_id), prepare.signature
        ):
            return f"prepare of {prepare.sender} does not verify"
        senders.add(prepare.sender)
    if len(senders) < config.quorum:
        return f"{len(senders)} prepares, needs {config.quorum}"
    return None


def commit_signatures_problem(
    height: int,
    block_hash: bytes,
    signatures: Sequence[tuple[int, bytes]],
    config: ReplicaConfig,
    auth: Authenticator,
) -> str | None:
    """Why these commit votes do not certify `block_hash` at `height`, or None."""
    if height == 0:
        return None  # genesis needs no certificate: the genesis file is its authority
    signers: set[int] = set()
    for signer, vote in signatures:
        if signer in signers or not 0 <= signer < config.validator_count:
            return "commit signers repeat or are not validators"
        if not auth.verify_commit_vote(signer, height, block_hash, vote):
            return f"commit vote of {signer} does not verify"
        signers.add(signer)
    if len(signers) < config.quorum:
        return f"{len(signers)} commit votes, needs {config.quorum}"
    return None


def view_change_problem(
    view_change: ViewChange, config: ReplicaConfig, auth: Authenticator
) -> str | None:
    """Why a (signature-checked) VIEW-CHANGE's proofs do not hold, or None."""
    problem = commit_signatures_problem(
        view_change.committed_height,
        view_change.committed_hash,
        view_change.committed_signatures,
        config,
        auth,
    )
    if problem is not None:
        return f"committed block: {problem}"
    heights: set[int] = set()
    for certificate in view_change.prepared:
        if certificate.height <= view_change.committed_height:
            return "prepared certificate at or below the committed height"
        if certificate.height in heights:
            return "two prepared certificates for one height"
        if certificate.view >= view_change.new_view:
            return "prepared certificate from a view not before the new one"
        heights.add(certificate.height)
        problem = prepared_certificate_problem(certificate, config, auth)
        if problem is not None:
            return f"prepared certificate at {certificate.height}: {problem}"
    return None


@dataclass(frozen=True, slots=True)
class NewViewPlan:
    """Where the new view starts and which prepared blocks it must re-propose, in order."""

    base_height: int
    base_hash: bytes
    base_signatures: tuple[tuple[int, bytes], ...]
    base_sources: tuple[int, ...]
    reproposals: tuple[PreparedCertificate, ...]


def _chain(
    best: dict[int, PreparedCertificate], height: int, parent_hash: bytes
) -> list[PreparedCertificate]:
    chain: list[PreparedCertificate] = []
    while height in best and best[height].parent_hash == parent_hash:
        chain.append(best[height])
        parent_hash = best[height].block_hash
        height += 1
    return chain


def plan_new_view(view_changes: Sequence[ViewChange]) -> NewViewPlan:
    """Compute the NEW-VIEW content from 2f+1 valid VIEW-CHANGEs.

    Above a base block, each height takes the prepared certificate of the highest view; the
    chain stops at the first height with none or whose block does not extend the previous
    one. A block committed anywhere was prepared by f+1 honest replicas, which (voting
    COMMIT at a height only after COMMIT at the one below) also hold every prepared block
    beneath it, so one of them is in any 2f+1 and nothing committed is cut off.

    The base is the lowest committed block of the VIEW-CHANGEs when the prepared blocks
    above it chain up to (and through) the highest committed block they prove: those blocks
    are final by the hash chain, and re-proposing them lets replicas that have not
    committed them do so in this view rather than fetch them from the replicas that did
    (which may be Byzantine and withhold them). Otherwise the base is the highest committed
    block, which lagging replicas then fetch.
    """
    top = max(view_changes, key=lambda vc: (vc.committed_height, -vc.sender))
    low = min(view_changes, key=lambda vc: (vc.committed_height, vc.sender))
    best: dict[int, PreparedCertificate] = {}
    for view_change in view_changes:
        for certificate in view_change.prepared:
            current = best.get(certificate.height)
            if current is None or certificate.view > current.view:
                best[certificate.height] = certificate
    from_low = _chain(best, low.committed_height + 1, low.committed_hash)
    reaches_top = top.committed_height == low.committed_height or any(
        c.height == top.committed_height and c.block_hash == top.committed_hash for c in from_low
    )
    base = low if reaches_top else top
    reproposals = (
        from_low if reaches_top else _chain(best, top.committed_height + 1, top.committed_hash)
    )
    sources = tuple(
        sorted(vc.sender for vc in view_changes if vc.committed_height >= base.committed_height)
    )
    return NewViewPlan(
        base.committed_height,
        base.committed_hash,
        base.committed_signatures,
        sources,
        tuple(reproposals),
    )
