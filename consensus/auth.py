"""How a replica signs and checks signatures, injected so the core stays free of key files.

The node implements it with Ed25519 (domains `chancery/p2p/v1\\n` and
`chancery/commit/v1\\n`); the simulator with a fast keyed hash. Either way a replica
cannot produce another replica's signature.
"""

from __future__ import annotations

from typing import Protocol


class Authenticator(Protocol):
    def sign(self, payload: bytes) -> bytes:
        """This replica's signature over a message's signing payload."""
        ...

    def sign_commit_vote(self, height: int, block_hash: bytes) -> bytes:
        """This replica's commit vote, as it goes into commit certificates."""
        ...

    def verify(self, signer: int, payload: bytes, signature: bytes) -> bool:
        """Whether validator `signer` signed `payload`."""
        ...

    def verify_commit_vote(self, signer: int, height: int, block_hash: bytes, vote: bytes) -> bool:
        """Whether validator `signer` cast this commit vote."""
        ...
