"""Tests for node.merkle: published RFC 6962 vectors, a literal recursive reference, properties.

The vectors are the ones Certificate Transparency implementations share, as published in
transparency-dev/merkle (testonly/constants.go: LeafInputs, NodeHashes, RootHashes;
proof/verify_test.go: inclusionProofs, whose leaf numbers are 1-based there and 0-based here).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import replace
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node import merkle
from node.merkle import (
    EMPTY_TREE_HASH,
    InclusionProof,
    MerkleAccumulator,
    MerkleError,
    audit_path,
    audit_path_from_leaf_hashes,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    merkle_root_from_leaf_hashes,
    node_hash,
    root_from_inclusion_proof,
    verify_inclusion,
)

# --------------------------------------------------------------------------------------
# Published vectors (transparency-dev/merkle, testonly/constants.go and proof/verify_test.go)
# --------------------------------------------------------------------------------------

VECTOR_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]

# Root hash of the first n vector leaves, indexed by n = 0..8.
VECTOR_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]

# Hashes of every complete subtree of the 8-leaf tree: [level][position], level 0 = leaves.
VECTOR_NODE_HASHES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]

# (0-based leaf index, tree size, expected audit path).
VECTOR_INCLUSION_PROOFS = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (0, 1, []),
]

SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")

# --------------------------------------------------------------------------------------
# Independent reference: the literal recursive definitions of RFC 6962 section 2.1.1
# --------------------------------------------------------------------------------------


def ref_sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    """MTH(D[n])."""
    n = len(d)
    if n == 0:
        return ref_sha256(b"")
    if n == 1:
        return ref_sha256(b"\x00" + d[0])
    k = ref_split(n)
    return ref_sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]), from the leaf upward."""
    n = len(d)
    if n == 1:
        assert m == 0
        return []
    k = ref_split(n)
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_path_shape(m: int, n: int) -> list[bool]:
    """For each element of PATH(m, D[n]), leaf upward: True when it is the right sibling.

    Two (index, size) pairs with the same shape hash a given path identically.
    """
    if n == 1:
        return []
    k = ref_split(n)
    if m < k:
        return [*ref_path_shape(m, k), True]
    return [*ref_path_shape(m - k, n - k), False]


@contextmanager
def chunk_height(height: int) -> Any:
    with mock.patch.object(merkle, "_CHUNK_HEIGHT", height):
        yield


def distinct_leaves(n: int) -> list[bytes]:
    return [i.to_bytes(4, "big") for i in range(n)]


def flip_bit(h: bytes, bit: int) -> bytes:
    return bytes([h[0] ^ (1 << bit)]) + h[1:]


# --------------------------------------------------------------------------------------
# Reference self-check, so the properties below compare against something right
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", range(len(VECTOR_ROOTS)))
def test_reference_implementation_matches_published_roots(n: int) -> None:
    assert ref_mth(VECTOR_LEAVES[:n]).hex() == VECTOR_ROOTS[n]


@pytest.mark.parametrize(("index", "size", "expected"), VECTOR_INCLUSION_PROOFS)
def test_reference_implementation_matches_published_paths(
    index: int, size: int, expected: list[str]
) -> None:
    assert [h.hex() for h in ref_path(index, VECTOR_LEAVES[:size])] == expected


# --------------------------------------------------------------------------------------
# Published vectors against the module
# --------------------------------------------------------------------------------------


def test_empty_tree_hash() -> None:
    assert EMPTY_TREE_HASH.hex() == VECTOR_ROOTS[0]
    assert merkle_root([]) == EMPTY_TREE_HASH
    assert merkle_root_from_leaf_hashes([]) == EMPTY_TREE_HASH
    assert MerkleAccumulator().root() == EMPTY_TREE_HASH


@pytest.mark.parametrize("n", range(1, len(VECTOR_ROOTS)))
def test_published_roots(n: int) -> None:
    leaves = VECTOR_LEAVES[:n]
    assert merkle_root(leaves).hex() == VECTOR_ROOTS[n]
    assert merkle_root_from_leaf_hashes([leaf_hash(x) for x in leaves]).hex() == VECTOR_ROOTS[n]
    acc = MerkleAccumulator()
    for leaf in leaves:
        acc.append_leaf(leaf)
    assert acc.size == n
    assert acc.root().hex() == VECTOR_ROOTS[n]


def test_published_leaf_and_node_hashes() -> None:
    assert [leaf_hash(x).hex() for x in VECTOR_LEAVES] == VECTOR_NODE_HASHES[0]
    for level in range(1, len(VECTOR_NODE_HASHES)):
        below = [bytes.fromhex(h) for h in VECTOR_NODE_HASHES[level - 1]]
        computed = [node_hash(below[i], below[i + 1]).hex() for i in range(0, len(below), 2)]
        assert computed == VECTOR_NODE_HASHES[level]


@pytest.mark.parametrize(("index", "size", "expected"), VECTOR_INCLUSION_PROOFS)
def test_published_inclusion_proofs(index: int, size: int, expected: list[str]) -> None:
    leaves = VECTOR_LEAVES[:size]
    root = bytes.fromhex(VECTOR_ROOTS[size])
    assert [h.hex() for h in audit_path(leaves, index)] == expected
    hashes = [leaf_hash(x) for x in leaves]
    assert [h.hex() for h in audit_path_from_leaf_hashes(hashes, index)] == expected
    proof = inclusion_proof(leaves, index)
    assert proof.to_json() == {"index": index, "size": size, "path": expected}
    assert root_from_inclusion_proof(leaves[index], proof) == root
    assert verify_inclusion(leaves[index], proof, root)


@pytest.mark.parametrize(("index", "size", "expected"), VECTOR_INCLUSION_PROOFS[:4])
def test_published_inclusion_proofs_reject_corruptions(
    index: int, size: int, expected: list[str]
) -> None:
    """The corruption probes of transparency-dev/merkle's verifierCheck, on the same vectors."""
    leaf = VECTOR_LEAVES[index]
    root = bytes.fromhex(VECTOR_ROOTS[size])
    path = tuple(bytes.fromhex(h) for h in expected)
    good = InclusionProof(index, size, path)
    assert verify_inclusion(leaf, good, root)
    probes = {
        "index + 1": replace(good, index=index + 1),
        "index ^ 2": replace(good, index=index ^ 2),
        "size * 2": replace(good, size=size * 2),
        "size // 2": replace(good, size=size // 2),
        "trailing root": replace(good, path=(*path, root)),
        "preceding root": replace(good, path=(root, *path)),
        "removed component": replace(good, path=path[:-1]),
        "inserted component": replace(good, path=(path[0], SOME_HASH, *path[1:])),
    }
    if index > 0:
        probes["index - 1"] = replace(good, index=index - 1)
    for i in range(len(path)):
        probes[f"path[{i}] bit 3"] = replace(
            good, path=(*path[:i], flip_bit(path[i], 3), *path[i + 1 :])
        )
    wrongly_verified = [name for name, p in probes.items() if verify_inclusion(leaf, p, root)]
    assert wrongly_verified == []
    assert not verify_inclusion(b"WrongLeaf", good, root)
    assert not verify_inclusion(leaf, good, EMPTY_TREE_HASH)
    assert not verify_inclusion(leaf, good, SOME_HASH)


# --------------------------------------------------------------------------------------
# Agreement with the reference, including across chunk boundaries
# --------------------------------------------------------------------------------------

leaf_lists = st.lists(st.binary(max_size=40), max_size=300)
# _CHUNK_HEIGHT 0..3 makes trees of a few hundred leaves cross many chunk boundaries;
# the default height checks the unpatched path.
chunk_heights = st.sampled_from([0, 1, 2, 3, merkle._CHUNK_HEIGHT])
PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(leaves=leaf_lists, height=chunk_heights)
def test_root_matches_reference(leaves: list[bytes], height: int) -> None:
    expected = ref_mth(leaves)
    with chunk_height(height):
        assert merkle_root(leaves) == expected
        assert merkle_root_from_leaf_hashes([ref_sha256(b"\x00" + x) for x in leaves]) == expected
        assert merkle_root(tuple(leaves)) == expected


@PROPERTY_SETTINGS
@given(data=st.data(), leaves=leaf_lists.filter(bool), height=chunk_heights)
def test_audit_path_matches_reference_and_verifies(
    data: st.DataObject, leaves: list[bytes], height: int
) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1), label="index")
    expected = ref_path(index, leaves)
    root = ref_mth(leaves)
    with chunk_height(height):
        assert audit_path(leaves, index) == expected
        hashes = [ref_sha256(b"\x00" + x) for x in leaves]
        assert audit_path_from_leaf_hashes(hashes, index) == expected
        proof = inclusion_proof(leaves, index)
    assert proof == InclusionProof(index=index, size=len(leaves), path=tuple(expected))
    assert root_from_inclusion_proof(leaves[index], proof) == root
    assert verify_inclusion(leaves[index], proof, root)


@pytest.mark.parametrize("height", [0, 1, 2, merkle._CHUNK_HEIGHT])
def test_every_inclusion_proof_verifies_exhaustively(height: int) -> None:
    with chunk_height(height):
        for n in range(1, 41):
            leaves = distinct_leaves(n)
            root = ref_mth(leaves)
            assert merkle_root(leaves) == root
            for index in range(n):
                proof = inclusion_proof(leaves, index)
                assert list(proof.path) == ref_path(index, leaves), (n, index)
                assert verify_inclusion(leaves[index], proof, root), (n, index)


def test_default_chunk_boundaries() -> None:
    """Sizes around the real chunk size, checked against the reference and the accumulator."""
    chunk = 1 << merkle._CHUNK_HEIGHT
    leaves = distinct_leaves(2 * chunk + 3)
    acc = MerkleAccumulator()
    roots_by_size: dict[int, bytes] = {}
    sizes = {chunk - 1, chunk, chunk + 1, 2 * chunk, 2 * chunk + 3}
    for n, leaf in enumerate(leaves, start=1):
        acc.append_leaf(leaf)
        if n in sizes:
            roots_by_size[n] = acc.root()
    for n in sorted(sizes):
        expected = ref_mth(leaves[:n])
        assert roots_by_size[n] == expected, n
        assert merkle_root(leaves[:n]) == expected, n
    n = 2 * chunk + 3
    root = roots_by_size[n]
    for index in (0, chunk - 1, chunk, 2 * chunk - 1, 2 * chunk, n - 1):
        assert audit_path(leaves, index) == ref_path(index, leaves), index
        assert verify_inclusion(leaves[index], inclusion_proof(leaves, index), root), index


# --------------------------------------------------------------------------------------
# Proofs that must fail
# --------------------------------------------------------------------------------------

unique_leaf_lists = st.lists(st.binary(max_size=40), min_size=2, max_size=300, unique=True)


@PROPERTY_SETTINGS
@given(data=st.data(), leaves=leaf_lists.filter(bool))
def test_proof_fails_for_a_different_leaf(data: st.DataObject, leaves: list[bytes]) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1), label="index")
    other = data.draw(st.binary(max_size=40).filter(lambda x: x != leaves[index]), label="other")
    proof = inclusion_proof(leaves, index)
    assert not verify_inclusion(other, proof, ref_mth(leaves))


@PROPERTY_SETTINGS
@given(data=st.data(), leaves=unique_leaf_lists)
def test_proof_fails_for_a_different_index(data: st.DataObject, leaves: list[bytes]) -> None:
    # Unique leaves: with duplicates, swapping two equal siblings legitimately keeps the root.
    n = len(leaves)
    index = data.draw(st.integers(0, n - 1), label="index")
    other = data.draw(st.integers(0, n - 1).filter(lambda j: j != index), label="other")
    proof = inclusion_proof(leaves, index)
    assert not verify_inclusion(leaves[index], replace(proof, index=other), ref_mth(leaves))


@PROPERTY_SETTINGS
@given(data=st.data(), leaves=leaf_lists.filter(lambda xs: len(xs) >= 2))
def test_proof_fails_for_a_tampered_path_element(data: st.DataObject, leaves: list[bytes]) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1), label="index")
    proof = inclusion_proof(leaves, index)
    position = data.draw(st.integers(0, len(proof.path) - 1), label="position")
    byte = data.draw(st.integers(0, 31), label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")
    element = bytearray(proof.path[position])
    element[byte] ^= 1 << bit
    path = list(proof.path)
    path[position] = bytes(element)
    assert not verify_inclusion(leaves[index], replace(proof, path=tuple(path)), ref_mth(leaves))


@PROPERTY_SETTINGS
@given(data=st.data(), leaves=leaf_lists.filter(lambda xs: len(xs) >= 2))
def test_proof_fails_for_a_truncated_or_extended_path(
    data: st.DataObject, leaves: list[bytes]
) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1), label="index")
    proof = inclusion_proof(leaves, index)
    root = ref_mth(leaves)
    keep = data.draw(st.integers(0, len(proof.path) - 1), label="keep")
    for path in (proof.path[:keep], proof.path[len(proof.path) - keep :]):
        bad = replace(proof, path=path)
        assert not verify_inclusion(leaves[index], bad, root)
        with pytest.raises(MerkleError):
            root_from_inclusion_proof(leaves[index], bad)
    longer = replace(proof, path=(*proof.path, root))
    assert not verify_inclusion(leaves[index], longer, root)
    with pytest.raises(MerkleError):
        root_from_inclusion_proof(leaves[index], longer)


@PROPERTY_SETTINGS
@given(data=st.data(), leaves=leaf_lists.filter(bool))
def test_proof_fails_for_a_wrong_size(data: st.DataObject, leaves: list[bytes]) -> None:
    """A wrong size is refused unless it gives the audit path the same shape.

    The same-shape case is inherent to RFC 6962/9162 (the root does not encode the size),
    which is why a root is only meaningful together with the size it was published for.
    """
    n = len(leaves)
    index = data.draw(st.integers(0, n - 1), label="index")
    size = data.draw(st.integers(0, 2 * n + 2).filter(lambda s: s != n), label="size")
    proof = inclusion_proof(leaves, index)
    verified = verify_inclusion(leaves[index], replace(proof, size=size), ref_mth(leaves))
    same_shape = size > index and ref_path_shape(index, size) == ref_path_shape(index, n)
    assert verified == same_shape


def test_wrong_size_with_the_same_path_shape_verifies() -> None:
    """Pins down the property documented on verify_inclusion (leaf 0 of 5..8 leaves)."""
    leaves = distinct_leaves(5)
    proof = inclusion_proof(leaves, 0)
    root = merkle_root(leaves)
    assert [verify_inclusion(leaves[0], replace(proof, size=s), root) for s in range(1, 10)] == [
        False,
        False,
        False,
        False,
        True,
        True,
        True,
        True,
        False,
    ]


def test_proof_fails_against_a_different_root() -> None:
    leaves = distinct_leaves(10)
    proof = inclusion_proof(leaves, 3)
    assert verify_inclusion(leaves[3], proof, merkle_root(leaves))
    assert not verify_inclusion(leaves[3], proof, merkle_root(leaves[:9]))
    assert not verify_inclusion(leaves[3], proof, merkle_root([*leaves[:9], b"x"]))


def test_root_from_inclusion_proof_rejects_index_not_below_size() -> None:
    leaves = distinct_leaves(4)
    proof = inclusion_proof(leaves, 3)
    for bad in (replace(proof, size=3), replace(proof, index=4), InclusionProof(0, 0, ())):
        with pytest.raises(MerkleError):
            root_from_inclusion_proof(leaves[3], bad)
        assert not verify_inclusion(leaves[3], bad, merkle_root(leaves))


def test_verify_inclusion_never_raises_on_malformed_proofs() -> None:
    leaves = distinct_leaves(4)
    root = merkle_root(leaves)
    proof = inclusion_proof(leaves, 1)
    assert not verify_inclusion(leaves[1], proof.to_json(), root)  # type: ignore[arg-type]
    assert not verify_inclusion(leaves[1], None, root)  # type: ignore[arg-type]
    for field, value in (
        ("index", -1),
        ("index", "1"),
        ("size", True),
        ("path", [*proof.path]),
        ("path", (*proof.path[:-1], b"short")),
        ("path", (*proof.path[:-1], "00" * 32)),
    ):
        forged = InclusionProof(1, 4, proof.path)
        object.__setattr__(forged, field, value)  # bypasses __post_init__
        assert not verify_inclusion(leaves[1], forged, root), field
        with pytest.raises(MerkleError):
            root_from_inclusion_proof(leaves[1], forged)


# --------------------------------------------------------------------------------------
# Index and hash validation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [-1, 3, 100, True, 1.0, "0", None])
def test_audit_path_rejects_bad_index(index: Any) -> None:
    leaves = distinct_leaves(3)
    with pytest.raises(MerkleError):
        audit_path(leaves, index)
    with pytest.raises(MerkleError):
        audit_path_from_leaf_hashes([leaf_hash(x) for x in leaves], index)
    with pytest.raises(MerkleError):
        inclusion_proof(leaves, index)


def test_audit_path_of_empty_tree_is_an_error() -> None:
    with pytest.raises(MerkleError):
        audit_path([], 0)
    with pytest.raises(MerkleError):
        inclusion_proof([], 0)


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33])
def test_leaf_hash_inputs_must_be_32_bytes(bad: bytes) -> None:
    good = [leaf_hash(x) for x in distinct_leaves(5)]
    for position in (0, 4):
        hashes = [*good]
        hashes[position] = bad
        with pytest.raises(MerkleError):
            merkle_root_from_leaf_hashes(hashes)
        with pytest.raises(MerkleError):
            audit_path_from_leaf_hashes(hashes, 2)
    with pytest.raises(MerkleError):
        MerkleAccumulator().append_leaf_hash(bad)
    with pytest.raises(MerkleError):
        node_hash(bad, good[0])
    with pytest.raises(MerkleError):
        node_hash(good[0], bad)


def test_node_hash_definition() -> None:
    left, right = ref_sha256(b"l"), ref_sha256(b"r")
    assert node_hash(left, right) == ref_sha256(b"\x01" + left + right)
    assert node_hash(left, right) != node_hash(right, left)
    assert leaf_hash(b"abc") == ref_sha256(b"\x00abc")


def test_inclusion_proof_constructor_validates() -> None:
    h = SOME_HASH
    assert InclusionProof(0, 1, [h]).path == (h,)  # type: ignore[arg-type]
    for args in (
        (-1, 1, ()),
        (0, -1, ()),
        (True, 1, ()),
        (0, 1.0, ()),
        (0, 1, (h[:31],)),
        (0, 1, (bytearray(h),)),
        (0, 1, (h.hex(),)),
        (0, 1, "ab"),
    ):
        with pytest.raises(MerkleError):
            InclusionProof(*args)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# JSON form
# --------------------------------------------------------------------------------------

proofs = st.builds(
    InclusionProof,
    index=st.integers(0, 2**64),
    size=st.integers(0, 2**64),
    path=st.lists(st.binary(min_size=32, max_size=32), max_size=64).map(tuple),
)


@settings(max_examples=200, deadline=None)
@given(proof=proofs)
def test_inclusion_proof_json_round_trip(proof: InclusionProof) -> None:
    obj = proof.to_json()
    assert set(obj) == {"index", "size", "path"}
    assert obj["path"] == [h.hex() for h in proof.path]
    assert all(s == s.lower() and len(s) == 64 for s in obj["path"])
    assert InclusionProof.from_json(obj) == proof
    assert InclusionProof.from_json(json.loads(json.dumps(obj))) == proof


def test_inclusion_proof_json_exact_form() -> None:
    proof = inclusion_proof(VECTOR_LEAVES, 5)
    assert json.dumps(proof.to_json(), sort_keys=True) == json.dumps(
        {"index": 5, "path": VECTOR_INCLUSION_PROOFS[1][2], "size": 8}, sort_keys=True
    )


GOOD_HEX = "ab" * 32


@pytest.mark.parametrize(
    "obj",
    [
        None,
        [],
        "proof",
        {},
        {"index": 0, "size": 1},
        {"index": 0, "size": 1, "path": [], "extra": 1},
        {"index": "0", "size": 1, "path": []},
        {"index": 0, "size": "1", "path": []},
        {"index": True, "size": 1, "path": []},
        {"index": 0, "size": False, "path": []},
        {"index": 0.0, "size": 1, "path": []},
        {"index": -1, "size": 1, "path": []},
        {"index": 0, "size": -1, "path": []},
        {"index": 0, "size": 1, "path": None},
        {"index": 0, "size": 1, "path": GOOD_HEX},
        {"index": 0, "size": 1, "path": (GOOD_HEX,)},
        {"index": 0, "size": 1, "path": [1]},
        {"index": 0, "size": 1, "path": [bytes.fromhex(GOOD_HEX)]},
        {"index": 0, "size": 1, "path": ["ab" * 31]},
        {"index": 0, "size": 1, "path": ["ab" * 33]},
        {"index": 0, "size": 1, "path": ["ab" * 31 + "a"]},
        {"index": 0, "size": 1, "path": ["AB" * 32]},
        {"index": 0, "size": 1, "path": ["0x" + "ab" * 31]},
        {"index": 0, "size": 1, "path": ["ab" * 31 + "g0"]},
        {"index": 0, "size": 1, "path": [" " + "ab" * 31 + "a"]},
        {"index": 0, "size": 1, "path": ["ab " * 21 + "a"]},
        {"index": 0, "size": 1, "path": [GOOD_HEX, "ab" * 31]},
    ],
)
def test_inclusion_proof_from_json_is_strict(obj: object) -> None:
    with pytest.raises(MerkleError):
        InclusionProof.from_json(obj)


def test_inclusion_proof_from_json_accepts_valid() -> None:
    proof = InclusionProof.from_json({"index": 2, "size": 3, "path": [GOOD_HEX]})
    assert proof == InclusionProof(2, 3, (bytes.fromhex(GOOD_HEX),))


# --------------------------------------------------------------------------------------
# MerkleAccumulator
# --------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(leaves=leaf_lists)
def test_accumulator_matches_reference(leaves: list[bytes]) -> None:
    acc = MerkleAccumulator()
    by_hash = MerkleAccumulator()
    for leaf in leaves:
        acc.append_leaf(leaf)
        by_hash.append_leaf_hash(ref_sha256(b"\x00" + leaf))
    expected = ref_mth(leaves)
    assert acc.size == by_hash.size == len(leaves)
    assert acc.root() == expected
    assert by_hash.root() == expected
    assert merkle_root(leaves) == expected


def test_accumulator_matches_merkle_root_at_every_size() -> None:
    leaves = distinct_leaves(300)
    acc = MerkleAccumulator()
    assert acc.root() == merkle_root([])
    for n, leaf in enumerate(leaves, start=1):
        acc.append_leaf(leaf)
        assert acc.size == n
        assert acc.root() == merkle_root(leaves[:n]), n
        assert acc.root() == acc.root()  # root() does not change the state


def test_accumulator_keeps_logarithmic_state() -> None:
    acc = MerkleAccumulator()
    for n in range(1, 1025):
        acc.append_leaf_hash(SOME_HASH)
        assert len(acc._stack) == bin(n).count("1")
