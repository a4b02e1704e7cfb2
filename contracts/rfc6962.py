"""A small pure RFC 6962 (section 2.1) Merkle helper for contracts.

Contracts may not import `node/`, so this module repeats the few pieces of PROTOCOL.md
section 5 they need, and tests hold it to `node/merkle.py`:

* `leaf_hash`, `node_hash` and `EMPTY_TREE_HASH`, exactly as the protocol defines them;
* a *frontier*: the roots of the perfect subtrees that a list of ``size`` leaves
  decomposes into, largest first (one per set bit of ``size``), so a list that only grows
  has its root in ``O(log size)`` state without ever reading the list again;
* `subtree_root` and `audit_path` over a list reached through a callback that returns the
  hash of any aligned perfect subtree, so a caller that stores large subtrees never loads
  the list.

Standard library only: no I/O, clock or randomness.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Final

HASH_BYTES: Final = 32
EMPTY_TREE_HASH: Final[bytes] = hashlib.sha256(b"").digest()
_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"

# (level, index) -> root of leaves [index * 2**level, (index + 1) * 2**level).
PerfectSubtree = Callable[[int, int], bytes]


def leaf_hash(leaf: bytes) -> bytes:
    """``SHA-256(0x00 || leaf)``."""
    return hashlib.sha256(_LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def frontier_levels(size: int) -> list[int]:
    """The levels of the frontier's subtrees for ``size`` leaves, largest first."""
    return [level for level in range(size.bit_length() - 1, -1, -1) if size >> level & 1]


def frontier_append(
    frontier: list[bytes], size: int, leaf_hash_value: bytes
) -> list[tuple[int, int, bytes]]:
    """Append one leaf hash to the frontier of ``size`` leaves, in place.

    Returns every perfect subtree completed by the append as ``(level, index, root)``,
    smallest first, so a caller can store the ones it wants to serve audit paths from.
    """
    completed = [(0, size, leaf_hash_value)]
    frontier.append(leaf_hash_value)
    carry, level, index = size, 0, size
    while carry & 1:
        right = frontier.pop()
        frontier[-1] = node_hash(frontier[-1], right)
        carry >>= 1
        level += 1
        index >>= 1
        completed.append((level, index, frontier[-1]))
    return completed


def frontier_root(frontier: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of the list whose frontier this is (folded from the right)."""
    if not frontier:
        return EMPTY_TREE_HASH
    root = frontier[-1]
    for subtree in reversed(frontier[:-1]):
        root = node_hash(subtree, root)
    return root


def root_of_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of a short list of leaf hashes (bottom up, no recursion)."""
    if not leaf_hashes:
        return EMPTY_TREE_HASH
    level = list(leaf_hashes)
    while len(level) > 1:
        upper = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) & 1:
            upper.append(level[-1])
        level = upper
    return level[0]


def path_of_leaf_hashes(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of `index` over a short list of leaf hashes (or aligned subtree
    hashes, as the ranking's pages are), from its sibling upward; bottom up like
    `root_of_leaf_hashes`.

    Raises:
        ValueError: unless ``0 <= index < len(leaf_hashes)``.
    """
    if not 0 <= index < len(leaf_hashes):
        raise ValueError(f"leaf index {index} out of range for {len(leaf_hashes)} leaves")
    path: list[bytes] = []
    level = list(leaf_hashes)
    position = index
    while len(level) > 1:
        sibling = position ^ 1
        if sibling < len(level):  # an odd last node is carried up with no sibling
            path.append(level[sibling])
        upper = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) & 1:
            upper.append(level[-1])
        level = upper
        position //= 2
    return path


def _largest_power_below(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def subtree_root(perfect: PerfectSubtree, start: int, size: int) -> bytes:
    """The Merkle tree hash of leaves ``[start, start + size)``, with ``start`` aligned to
    the split rule (as every subtree of an RFC 6962 tree is), from perfect subtrees."""
    if size & (size - 1) == 0:
        level = size.bit_length() - 1
        return perfect(level, start >> level)
    split = _largest_power_below(size)
    return node_hash(
        subtree_root(perfect, start, split), subtree_root(perfect, start + split, size - split)
    )


def audit_path(perfect: PerfectSubtree, index: int, size: int) -> list[bytes]:
    """The RFC 6962 audit path ``PATH(index, D[size])``, leaf upward.

    Raises:
        ValueError: unless ``0 <= index < size``.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} out of range for {size} leaves")
    siblings: list[bytes] = []
    start, length = 0, size
    while length > 1:  # at most 64 rounds: each halves the range
        split = _largest_power_below(length)
        if index - start < split:
            siblings.append(subtree_root(perfect, start + split, length - split))
            length = split
        else:
            siblings.append(subtree_root(perfect, start, split))
            start, length = start + split, length - split
    siblings.reverse()
    return siblings
