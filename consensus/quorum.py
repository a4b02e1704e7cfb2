"""Quorum arithmetic and the commit-vote payload (PROTOCOL.md section 6).

n = 3f+1 or more validators tolerate f Byzantine ones; every decision needs 2f+1.
"""

from __future__ import annotations

import msgpack


def fault_tolerance(validator_count: int) -> int:
    """f = floor((n-1)/3)."""
    return (validator_count - 1) // 3


def quorum_size(validator_count: int) -> int:
    """2f+1: any two quorums share at least one honest validator."""
    return 2 * fault_tolerance(validator_count) + 1


def commit_vote_payload(chain_id: str, height: int, block_hash: bytes) -> bytes:
    """What a commit vote signs (after `chancery/commit/v1\\n`): `[chain_id, height, hash]`.

    A list has no map keys, so plain msgpack is already canonical.
    """
    return msgpack.packb([chain_id, height, block_hash], use_bin_type=True)
