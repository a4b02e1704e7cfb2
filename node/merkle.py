"""RFC 6962 Merkle trees over SHA-256 (RFC 6962 section 2.1, RFC 9162 section 2.1).

One tree shape serves transactions, receipts, evidence batches and lottery participant
lists:

* leaf hash: ``SHA-256(0x00 || leaf)``;
* interior node: ``SHA-256(0x01 || left || right)``;
* a list of ``n > 1`` leaves splits at ``k``, the largest power of two smaller than ``n``;
* the empty tree hashes to ``SHA-256("")``.

Inclusion proofs are RFC 6962 audit paths, ordered from the leaf upward, and are checked
with the RFC 9162 section 2.1.3.2 algorithm. Their JSON form is
``{"index": i, "size": n, "path": [lowercase hex, ...]}``.

Lists may hold up to 10^8 leaves, so nothing recurses over leaves. Trees are hashed bottom
up, level by level, where an unpaired last node is promoted unchanged to the next level
(this gives exactly the RFC's split rule). The leaves are taken in aligned chunks of
``2**_CHUNK_HEIGHT``: each chunk is reduced level by level to its subtree root, and then
the list of chunk roots is reduced the same way. Pairs never cross a chunk boundary below
the chunk height, so the result is the same as a single level-by-level pass. Transient
memory is ``O(2**_CHUNK_HEIGHT + n / 2**_CHUNK_HEIGHT)`` hashes instead of ``O(n)``.
`MerkleAccumulator` builds a root from a stream with ``O(log n)`` memory and never holds
the leaves.

This module is pure (``hashlib`` and the standard library only: no I/O, no clock, no
randomness), because deterministic contracts import it too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final

__all__ = [
    "EMPTY_TREE_HASH",
    "HASH_BYTES",
    "InclusionProof",
    "MerkleAccumulator",
    "MerkleError",
    "audit_path",
    "audit_path_from_leaf_hashes",
    "inclusion_proof",
    "leaf_hash",
    "merkle_root",
    "merkle_root_from_leaf_hashes",
    "node_hash",
    "root_from_inclusion_proof",
    "verify_inclusion",
]

HASH_BYTES: Final = 32
EMPTY_TREE_HASH: Final[bytes] = hashlib.sha256(b"").digest()

_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"
_HEX_DIGITS: Final = frozenset("0123456789abcdef")

# Leaves are processed in aligned chunks of 2**_CHUNK_HEIGHT (16,384): big enough that the
# per-chunk bookkeeping is noise, small enough that a chunk's levels stay in cache. Read at
# call time, so tests can shrink it to push small trees across many chunk boundaries.
_CHUNK_HEIGHT = 14

_sha256 = hashlib.sha256


class MerkleError(ValueError):
    """A malformed Merkle input: bad index, bad hash length, or an invalid proof shape."""


def leaf_hash(leaf: bytes) -> bytes:
    """Return the RFC 6962 leaf hash ``SHA-256(0x00 || leaf)``.

    Raises:
        TypeError: if ``leaf`` is not bytes-like.
    """
    return _sha256(_LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 interior node hash ``SHA-256(0x01 || left || right)``.

    Raises:
        MerkleError: if ``left`` or ``right`` is not a 32-byte hash.
    """
    if len(left) != HASH_BYTES or len(right) != HASH_BYTES:
        raise MerkleError(
            f"node children must be {HASH_BYTES}-byte hashes, got {len(left)} and {len(right)}"
        )
    return _sha256(_NODE_PREFIX + left + right).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Return the RFC 6962 Merkle tree hash of raw leaf data (``MTH(D[n])``).

    Each leaf is hashed with `leaf_hash` first. The empty list gives `EMPTY_TREE_HASH`.

    Raises:
        TypeError: if a leaf is not bytes-like.
    """
    root, _ = _root_and_path(leaves, hashed=False, index=None)
    return root


def merkle_root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the RFC 6962 Merkle tree hash of a list of already-computed leaf hashes.

    ``merkle_root_from_leaf_hashes([leaf_hash(x) for x in leaves]) == merkle_root(leaves)``.

    Raises:
        MerkleError: if a leaf hash is not 32 bytes long.
    """
    root, _ = _root_and_path(leaf_hashes, hashed=True, index=None)
    return root


def audit_path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Return the RFC 6962 audit path ``PATH(index, D[n])`` for raw leaf data.

    The path runs from the leaf's sibling up to the child of the root; it is empty for a
    one-leaf tree.

    Raises:
        MerkleError: if ``index`` is not an int with ``0 <= index < len(leaves)``.
        TypeError: if a leaf is not bytes-like.
    """
    _check_index(index, len(leaves))
    _, path = _root_and_path(leaves, hashed=False, index=index)
    return path


def audit_path_from_leaf_hashes(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Return the RFC 6962 audit path for ``index`` given already-computed leaf hashes.

    Raises:
        MerkleError: if ``index`` is not an int with ``0 <= index < len(leaf_hashes)``, or
            if a leaf hash is not 32 bytes long.
    """
    _check_index(index, len(leaf_hashes))
    _, path = _root_and_path(leaf_hashes, hashed=True, index=index)
    return path


@dataclass(frozen=True)
class InclusionProof:
    """An RFC 6962 inclusion proof: leaf ``index`` in a tree of ``size`` leaves.

    ``path`` is the audit path from the leaf upward. Construction checks types only
    (non-negative int index and size, 32-byte bytes path elements; a list path is stored
    as a tuple). Whether the path length fits ``index`` and ``size`` is checked when the
    proof is used, by `root_from_inclusion_proof`.

    Raises:
        MerkleError: on construction with fields of the wrong type or length.
    """

    index: int
    size: int
    path: tuple[bytes, ...]

    def __post_init__(self) -> None:
        path = self.path
        if isinstance(path, list):
            path = tuple(path)
            object.__setattr__(self, "path", path)
        _check_proof_fields(self.index, self.size, path)

    def to_json(self) -> dict[str, Any]:
        """Return ``{"index": i, "size": n, "path": [lowercase hex, ...]}``."""
        return {"index": self.index, "size": self.size, "path": [h.hex() for h in self.path]}

    @classmethod
    def from_json(cls, obj: object) -> InclusionProof:
        """Parse the JSON form produced by `to_json`, strictly.

        ``obj`` must be a dict with exactly the keys ``index``, ``size`` and ``path``;
        ``index`` and ``size`` non-negative ints (not bools); ``path`` a list of strings of
        exactly 64 lowercase hex digits (no whitespace, prefix or upper case, which
        ``bytes.fromhex`` alone would let through).

        Raises:
            MerkleError: if ``obj`` has any other shape, type or content.
        """
        if not isinstance(obj, dict):
            raise MerkleError(f"inclusion proof must be a JSON object, got {type(obj).__name__}")
        keys = set(obj)
        if keys != {"index", "size", "path"}:
            raise MerkleError(
                f"inclusion proof must have exactly the keys index, size and path, "
                f"got {sorted(map(repr, keys))}"
            )
        index, size, path = obj["index"], obj["size"], obj["path"]
        if not isinstance(path, list):
            raise MerkleError(f"inclusion proof path must be a list, got {type(path).__name__}")
        hashes = []
        for position, item in enumerate(path):
            if (
                not isinstance(item, str)
                or len(item) != 2 * HASH_BYTES
                or not _HEX_DIGITS.issuperset(item)
            ):
                raise MerkleError(
                    f"inclusion proof path[{position}] must be {2 * HASH_BYTES} lowercase hex "
                    f"digits, got {item!r}"
                )
            hashes.append(bytes.fromhex(item))
        return cls(index=index, size=size, path=tuple(hashes))


def inclusion_proof(leaves: Sequence[bytes], index: int) -> InclusionProof:
    """Return the `InclusionProof` of leaf ``index`` in the tree of raw leaf data ``leaves``.

    Raises:
        MerkleError: if ``index`` is not an int with ``0 <= index < len(leaves)``.
        TypeError: if a leaf is not bytes-like.
    """
    return InclusionProof(index=index, size=len(leaves), path=tuple(audit_path(leaves, index)))


def root_from_inclusion_proof(leaf: bytes, proof: InclusionProof) -> bytes:
    """Return the root implied by raw ``leaf`` data and ``proof`` (RFC 9162 2.1.3.2).

    The caller compares the result with a root it trusts for a tree of ``proof.size``.

    Raises:
        MerkleError: if ``proof.index >= proof.size``, if the path is longer or shorter
            than a proof for that index and size must be, or if a field has the wrong type.
        TypeError: if ``leaf`` is not bytes-like.
    """
    index, size, path = proof.index, proof.size, proof.path
    # Re-checked here because a frozen dataclass can still be forged with object.__setattr__.
    _check_proof_fields(index, size, path)
    if index >= size:
        raise MerkleError(f"leaf index {index} is not below tree size {size}")
    fn, sn = index, size - 1
    r = leaf_hash(leaf)
    for p in path:
        if sn == 0:
            raise MerkleError(f"audit path too long for leaf {index} of {size}")
        if fn & 1 or fn == sn:
            r = _sha256(_NODE_PREFIX + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(_NODE_PREFIX + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleError(f"audit path too short for leaf {index} of {size}")
    return r


def verify_inclusion(leaf: bytes, proof: InclusionProof, root: bytes) -> bool:
    """Return whether ``proof`` shows raw ``leaf`` data at ``proof.index`` under ``root``.

    Never raises on a bad proof: anything malformed (including a ``proof`` that is not an
    `InclusionProof`) returns False.

    The proof binds the leaf and index to the root, but a root alone does not bind the tree
    size: a proof can also verify with a different ``size`` whose audit path has the same
    shape (for example leaf 0 of 5, 6, 7 or 8 leaves). Only trust ``root`` together with
    the size it was published for.

    Raises:
        TypeError: if ``leaf`` is not bytes-like.
    """
    if not isinstance(proof, InclusionProof):
        return False
    try:
        computed = root_from_inclusion_proof(leaf, proof)
    except MerkleError:
        return False
    return computed == root


class MerkleAccumulator:
    """Incremental RFC 6962 root of a leaf stream, in ``O(log n)`` memory.

    It keeps a stack of the roots of the perfect subtrees that the leaves so far decompose
    into (one per set bit of ``size``, largest first), merging them like carries in a
    binary counter. `root` folds the stack from the right. For every list ``leaves``,
    appending them in order gives ``root() == merkle_root(leaves)``.
    """

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        self._stack: list[bytes] = []
        self._size = 0

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    def append_leaf(self, leaf: bytes) -> None:
        """Append raw leaf data (hashed with `leaf_hash`).

        Raises:
            TypeError: if ``leaf`` is not bytes-like.
        """
        self._push(leaf_hash(leaf))

    def append_leaf_hash(self, h: bytes) -> None:
        """Append an already-computed leaf hash.

        Raises:
            MerkleError: if ``h`` is not a 32-byte bytes-like object.
        """
        if not isinstance(h, bytes | bytearray | memoryview) or len(h) != HASH_BYTES:
            raise MerkleError(f"leaf hash must be {HASH_BYTES} bytes, got {h!r}")
        self._push(bytes(h))

    def root(self) -> bytes:
        """Return the Merkle tree hash of the leaves appended so far (no state change)."""
        stack = self._stack
        if not stack:
            return EMPTY_TREE_HASH
        r = stack[-1]
        for i in range(len(stack) - 2, -1, -1):
            r = _sha256(_NODE_PREFIX + stack[i] + r).digest()
        return r

    def _push(self, h: bytes) -> None:
        stack = self._stack
        stack.append(h)
        carry = self._size
        while carry & 1:
            right = stack.pop()
            stack[-1] = _sha256(_NODE_PREFIX + stack[-1] + right).digest()
            carry >>= 1
        self._size += 1


def _check_index(index: int, size: int) -> None:
    if not isinstance(index, int) or isinstance(index, bool):
        raise MerkleError(f"leaf index must be an int, got {type(index).__name__}")
    if not 0 <= index < size:
        raise MerkleError(f"leaf index {index} out of range for {size} leaves")


def _check_proof_fields(index: object, size: object, path: object) -> None:
    for name, value in (("index", index), ("size", size)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise MerkleError(f"inclusion proof {name} must be an int, got {type(value).__name__}")
        if value < 0:
            raise MerkleError(f"inclusion proof {name} must not be negative, got {value}")
    if not isinstance(path, tuple):
        raise MerkleError(f"inclusion proof path must be a tuple, got {type(path).__name__}")
    for position, h in enumerate(path):
        if not isinstance(h, bytes) or len(h) != HASH_BYTES:
            raise MerkleError(
                f"inclusion proof path[{position}] must be {HASH_BYTES} bytes, got {h!r}"
            )


def _check_leaf_hashes(chunk: list[bytes], offset: int) -> None:
    if set(map(len, chunk)) != {HASH_BYTES}:
        for position, h in enumerate(chunk):
            if len(h) != HASH_BYTES:
                raise MerkleError(
                    f"leaf hash {offset + position} must be {HASH_BYTES} bytes, got {len(h)}"
                )


def _root_and_path(
    items: Sequence[bytes], *, hashed: bool, index: int | None
) -> tuple[bytes, list[bytes]]:
    """Root of ``items`` (raw leaves, or leaf hashes if ``hashed``) and, if ``index`` is
    not None, the audit path of that (already range-checked) leaf."""
    height = _CHUNK_HEIGHT
    chunk_size = 1 << height
    target_chunk = -1 if index is None else index >> height
    path: list[bytes] = []
    chunk_roots: list[bytes] = []
    source = iter(items)
    chunk_number = 0
    while chunk := list(islice(source, chunk_size)):
        if hashed:
            _check_leaf_hashes(chunk, chunk_number << height)
            level = chunk
        elif chunk_number == target_chunk:
            level = [_sha256(_LEAF_PREFIX + leaf).digest() for leaf in chunk]
        else:
            # Hash leaves and their pairs in one pass: the leaf level is never materialised.
            pairs = iter(chunk)
            level = [
                _sha256(
                    _NODE_PREFIX
                    + _sha256(_LEAF_PREFIX + left).digest()
                    + _sha256(_LEAF_PREFIX + right).digest()
                ).digest()
                for left, right in zip(pairs, pairs, strict=False)
            ]
            if len(chunk) & 1:
                level.append(_sha256(_LEAF_PREFIX + chunk[-1]).digest())
        if index is not None and chunk_number == target_chunk:
            chunk_roots.append(_fold(level, index & (chunk_size - 1), path))
        else:
            chunk_roots.append(_fold(level, -1, None))
        chunk_number += 1
    if not chunk_roots:
        return EMPTY_TREE_HASH, path
    return bytes(_fold(chunk_roots, target_chunk, path if index is not None else None)), path


def _fold(level: list[bytes], index: int, path: list[bytes] | None) -> bytes:
    """Reduce a non-empty level to its root, level by level, promoting an unpaired last
    node unchanged; if ``path`` is given, append the sibling of node ``index`` at each
    level where it has one."""
    while len(level) > 1:
        if path is not None:
            sibling = index ^ 1
            if sibling < len(level):
                path.append(bytes(level[sibling]))
            index >>= 1
        pairs = iter(level)
        upper = [
            _sha256(_NODE_PREFIX + left + right).digest()
            for left, right in zip(pairs, pairs, strict=False)
        ]
        if len(level) & 1:
            upper.append(level[-1])
        level = upper
    return level[0]
