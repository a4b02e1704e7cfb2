"""Checks the simulator makes itself, written without `consensus/` so a bug there shows.

Transactions are "signed by a member": the payload followed by a keyed-hash tag under the
consortium's member secret. Commit certificates are checked vote by vote with
`KeyedHashAuth.verify_commit_vote`, and the quorum is computed here, not imported.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from tests.sim.model import KeyedHashAuth

TX_PAYLOAD_BYTES: Final = 12
TX_TAG_BYTES: Final = 8


def quorum_of(validator_count: int) -> int:
    """2f+1 with f = floor((n-1)/3)."""
    faults_max = (validator_count - 1) // 3
    return 2 * faults_max + 1


@dataclass(frozen=True, slots=True)
class MemberSigner:
    """The consortium's members, as one keyed-hash secret: who may put a tx in a block."""

    secret: bytes

    def _tag(self, payload: bytes) -> bytes:
        return hashlib.sha256(self.secret + b"sim/tx\n" + payload).digest()[:TX_TAG_BYTES]

    def sign(self, payload: bytes) -> bytes:
        assert len(payload) == TX_PAYLOAD_BYTES
        return payload + self._tag(payload)

    def signed(self, tx: bytes) -> bool:
        if len(tx) != TX_PAYLOAD_BYTES + TX_TAG_BYTES:
            return False
        return tx[TX_PAYLOAD_BYTES:] == self._tag(tx[:TX_PAYLOAD_BYTES])


def certificate_problem(
    verifier: KeyedHashAuth,
    validator_count: int,
    height: int,
    block_hash: bytes,
    signatures: Sequence[tuple[int, bytes]],
) -> str | None:
    """Why `signatures` are not 2f+1 distinct valid commit votes for the block, or None."""
    signers: set[int] = set()
    for signer, vote in signatures:
        if not 0 <= signer < validator_count:
            return f"signer {signer} is not a validator"
        if signer in signers:
            return f"signer {signer} appears twice"
        if not verifier.verify_commit_vote(signer, height, block_hash, vote):
            return f"commit vote of {signer} does not verify"
        signers.add(signer)
    if len(signers) < quorum_of(validator_count):
        return f"{len(signers)} commit votes, a quorum is {quorum_of(validator_count)}"
    return None
