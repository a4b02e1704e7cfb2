"""RFC 6962 Merkle tree hashing for the `ranking` contract (PROTOCOL.md section 5).

Contracts do not import `node/`, so this is a small pure copy of the tree: leaf hash
`SHA-256(0x00 || leaf)`, interior node `SHA-256(0x01 || left || right)`, split at the
largest power of two smaller than n, empty tree `SHA-256("")`. tests/unit/test_ranking.py
checks it against node/merkle.py.

The functions take *subtree hashes* rather than leaves: the ranking keeps its ranked
digests in pages of `2**k` leaves, and every full page is an aligned subtree of the whole
tree, so the tree over n leaves is the tree over its pages' hashes (the last page may be
partial) with the same split rule. A root or an audit path therefore needs one page and
the list of page hashes, never the whole list of leaves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"
EMPTY_TREE_HASH: Final = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two strictly smaller than `size` (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def root_of(subtree_hashes: Sequence[bytes]) -> bytes:
    """The RFC 6962 tree hash over already-hashed leaves (or aligned subtree hashes)."""
    if not subtree_hashes:
        return EMPTY_TREE_HASH
    level = list(subtree_hashes)
    # Bottom-up pairing gives the same tree as the recursive split: an odd last node is
    # carried up unchanged, exactly where the split rule leaves it alone.
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def path_of(subtree_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of `index` over `subtree_hashes`, from its sibling upward."""
    if not 0 <= index < len(subtree_hashes):
        raise AssertionError("audit path index out of range")
    path: list[bytes] = []
    level = list(subtree_hashes)
    position = index
    while len(level) > 1:
        sibling = position ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
        position //= 2
    return path
