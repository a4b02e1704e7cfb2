"""Tests for node.block: headers, state roots, receipts and certificates (PROTOCOL.md 4, 6)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import TYPE_CHECKING

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.block import (
    ZERO_HASH,
    BlockFormatError,
    BlockHeader,
    CommitCertificate,
    ContractEvent,
    Receipt,
    certificate_problem,
    commit_vote_payload,
    compute_receipts_root,
    compute_tx_root,
    compute_validators_hash,
    encode_write_set,
    next_state_root,
    quorum_size,
    sign_commit_vote,
)
from node.crypto import DOMAIN_TX
from node.encoding import canonical_packb, unpackb_strict
from node.merkle import EMPTY_TREE_HASH, merkle_root

if TYPE_CHECKING:
    from tests.unit.conftest import Consortium


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


HEADER = BlockHeader(
    chain_id="chancery-test",
    height=5,
    prev_hash=b"\x01" * 32,
    proposer=2,
    receipts_root=b"\x02" * 32,
    state_root=b"\x03" * 32,
    timestamp=1_700_000_005_000,
    tx_root=b"\x04" * 32,
    validators_hash=b"\x05" * 32,
    version=1,
    view=3,
)
HEADER_KEYS = [
    "chain_id",
    "height",
    "prev_hash",
    "proposer",
    "receipts_root",
    "state_root",
    "timestamp",
    "tx_root",
    "validators_hash",
    "version",
    "view",
]

hashes = st.binary(min_size=32, max_size=32)
headers = st.builds(
    BlockHeader,
    chain_id=st.text(max_size=64),
    height=st.integers(0, 2**64 - 1),
    prev_hash=hashes,
    proposer=st.integers(0, 2**32),
    receipts_root=hashes,
    state_root=hashes,
    timestamp=st.integers(0, 2**63 - 1),
    tx_root=hashes,
    validators_hash=hashes,
    version=st.just(1),
    view=st.integers(0, 2**64 - 1),
)


# --- headers --------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(headers)
def test_header_round_trip(header: BlockHeader) -> None:
    data = header.encode()
    assert BlockHeader.decode(data) == header
    assert header.block_hash() == sha256(data)
    assert data == canonical_packb({name: getattr(header, name) for name in HEADER_KEYS})
    assert BlockHeader.from_json(header.to_json()) == header


def test_header_keys_are_in_canonical_order_on_the_wire() -> None:
    decoded = msgpack.unpackb(HEADER.encode(), raw=False)
    assert list(decoded) == HEADER_KEYS
    assert decoded["prev_hash"] == b"\x01" * 32  # bin, not str
    assert decoded["version"] == 1


def test_header_bytes_start_as_expected() -> None:
    data = HEADER.encode()
    assert data.startswith(b"\x8b\xa8chain_id\xadchancery-test\xa6height\x05\xa9prev_hash\xc4\x20")
    assert HEADER.block_hash() == hashlib.sha256(data).digest()


def test_block_hash_changes_with_every_field() -> None:
    changed = {
        "chain_id": "other",
        "height": 6,
        "prev_hash": b"\x09" * 32,
        "proposer": 0,
        "receipts_root": b"\x09" * 32,
        "state_root": b"\x09" * 32,
        "timestamp": 1,
        "tx_root": b"\x09" * 32,
        "validators_hash": b"\x09" * 32,
        "version": 2,
        "view": 0,
    }
    assert sorted(changed) == HEADER_KEYS
    seen = {HEADER.block_hash()}
    for name, value in changed.items():
        seen.add(replace(HEADER, **{name: value}).block_hash())
    assert len(seen) == len(changed) + 1


def test_header_json_uses_hex_for_hashes() -> None:
    as_json = HEADER.to_json()
    assert as_json["prev_hash"] == "01" * 32
    assert as_json["height"] == 5
    assert as_json["chain_id"] == "chancery-test"


@pytest.mark.parametrize(
    "fields",
    [
        {k: v for k, v in HEADER.to_json().items() if k != "view"},
        {**HEADER.to_json(), "height": True},
        {**HEADER.to_json(), "height": "5"},
        {**HEADER.to_json(), "prev_hash": "01" * 31},
        {**HEADER.to_json(), "prev_hash": "zz" * 32},
        {**HEADER.to_json(), "tx_root": 7},
    ],
)
def test_header_from_json_refusals(fields: dict[str, object]) -> None:
    with pytest.raises(BlockFormatError):
        BlockHeader.from_json(fields)


def test_header_decode_refusals() -> None:
    fields = {name: getattr(HEADER, name) for name in HEADER_KEYS}
    with pytest.raises(BlockFormatError, match="canonical"):
        BlockHeader.decode(msgpack.packb(dict(reversed(fields.items())), use_bin_type=True))
    with pytest.raises(BlockFormatError, match="32 bytes"):
        BlockHeader.decode(canonical_packb({**fields, "state_root": b"\x03" * 31}))
    with pytest.raises(BlockFormatError, match="'height'"):
        BlockHeader.decode(canonical_packb({**fields, "height": False}))
    with pytest.raises(BlockFormatError, match="'chain_id'"):
        BlockHeader.decode(canonical_packb({**fields, "chain_id": b"chancery-test"}))
    with pytest.raises(BlockFormatError, match="exactly"):
        BlockHeader.decode(canonical_packb({**fields, "extra": 0}))
    with pytest.raises(BlockFormatError, match="exactly"):
        BlockHeader.decode(canonical_packb([1, 2]))
    with pytest.raises(BlockFormatError):
        BlockHeader.decode(HEADER.encode()[:-1])


# --- state root -------------------------------------------------------------------------------


def test_write_set_encoding_by_hand() -> None:
    writes = {b"b": b"2", b"a": None, b"c": b"3"}
    expected = (
        b"\x93" + b"\x92\xc4\x01a\xc0" + b"\x92\xc4\x01b\xc4\x012" + b"\x92\xc4\x01c\xc4\x013"
    )
    assert encode_write_set(writes) == expected
    assert encode_write_set({}) == b"\x90"


def test_write_set_sorted_by_key_bytes() -> None:
    writes = {b"\xff": b"", b"ab": b"1", b"b": b"2", b"a": b"3", b"\x00": None}
    decoded = msgpack.unpackb(encode_write_set(writes), raw=False)
    assert [key for key, _ in decoded] == [b"\x00", b"a", b"ab", b"b", b"\xff"]
    assert decoded[0] == [b"\x00", None]


def test_state_root_chain_by_hand() -> None:
    domain = b"chancery/state/v1\n"
    block0 = {b"membership/orgs": b"\x91\xa1a", b"membership/x": b"1"}
    block1 = {b"membership/x": None, b"membership/a": b"v"}
    block2: dict[bytes, bytes | None] = {}

    w0 = (
        b"\x92"
        + b"\x92\xc4\x0fmembership/orgs\xc4\x03\x91\xa1a"
        + b"\x92\xc4\x0cmembership/x\xc4\x011"
    )
    w1 = b"\x92" + b"\x92\xc4\x0cmembership/a\xc4\x01v" + b"\x92\xc4\x0cmembership/x\xc0"
    w2 = b"\x90"
    root0 = sha256(domain + bytes(32) + sha256(w0))
    root1 = sha256(domain + root0 + sha256(w1))
    root2 = sha256(domain + root1 + sha256(w2))

    assert bytes(32) == ZERO_HASH
    assert next_state_root(ZERO_HASH, block0) == root0
    assert next_state_root(root0, block1) == root1
    assert next_state_root(root1, block2) == root2
    # The root commits to the parent: the same writes on another parent differ.
    assert next_state_root(root1, block1) != root1
    # A deletion is not the same as writing an empty value.
    assert next_state_root(root0, {b"membership/x": b""}) != next_state_root(
        root0, {b"membership/x": None}
    )


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.binary(max_size=8), st.none() | st.binary(max_size=8), max_size=8))
def test_state_root_ignores_insertion_order(writes: dict[bytes, bytes | None]) -> None:
    shuffled = dict(reversed(list(writes.items())))
    assert next_state_root(ZERO_HASH, shuffled) == next_state_root(ZERO_HASH, writes)
    expected_w = canonical_packb([[key, writes[key]] for key in sorted(writes)])
    assert encode_write_set(writes) == expected_w


def test_validators_hash_by_hand() -> None:
    first, second = b"\xaa" * 32, b"\xbb" * 32
    expected = sha256(b"\x92\xc4\x20" + first + b"\xc4\x20" + second)
    assert compute_validators_hash([first, second]) == expected
    assert compute_validators_hash([second, first]) != expected  # the order matters
    assert compute_validators_hash([]) == sha256(b"\x90")


def test_tx_and_receipt_roots_are_merkle_roots() -> None:
    assert compute_tx_root([]) == EMPTY_TREE_HASH == sha256(b"")
    leaves = [b"\x01" * 32, b"\x02" * 32]
    assert compute_tx_root(leaves) == merkle_root(leaves)
    expected = sha256(b"\x01" + sha256(b"\x00" + leaves[0]) + sha256(b"\x00" + leaves[1]))
    assert compute_receipts_root(leaves) == expected


# --- quorum and certificates --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("validators", "quorum"),
    [(1, 1), (2, 1), (3, 1), (4, 3), (5, 3), (6, 3), (7, 5), (8, 5), (9, 5), (10, 7)],
)
def test_quorum_size(validators: int, quorum: int) -> None:
    assert quorum_size(validators) == quorum


def test_commit_vote_payload_by_hand() -> None:
    block_hash = b"\x42" * 32
    expected = b"\x93\xa1c\x05\xc4\x20" + block_hash
    assert commit_vote_payload("c", 5, block_hash) == expected


BLOCK_HASH = HEADER.block_hash()
HEIGHT = HEADER.height


def test_certificate_of_one_of_one(consortium: Consortium) -> None:
    keys = consortium.genesis.validator_keys
    assert len(keys) == 1
    certificate = consortium.certificate(BLOCK_HASH, HEIGHT)
    assert certificate_problem(certificate, consortium.chain_id, BLOCK_HASH, HEIGHT, keys) is None
    empty = CommitCertificate(BLOCK_HASH, HEIGHT, ())
    problem = certificate_problem(empty, consortium.chain_id, BLOCK_HASH, HEIGHT, keys)
    assert problem == "certificate has 0 signatures, needs 1"


@pytest.mark.parametrize("signers", [[0, 1, 2], [1, 2, 3], [0, 2, 3], [0, 1, 2, 3], [3, 0, 1]])
def test_certificate_with_a_quorum_of_four(consortium4: Consortium, signers: list[int]) -> None:
    certificate = consortium4.certificate(BLOCK_HASH, HEIGHT, signers)
    problem = certificate_problem(
        certificate, consortium4.chain_id, BLOCK_HASH, HEIGHT, consortium4.genesis.validator_keys
    )
    assert problem is None


def check4(consortium4: Consortium, certificate: CommitCertificate) -> str | None:
    return certificate_problem(
        certificate, consortium4.chain_id, BLOCK_HASH, HEIGHT, consortium4.genesis.validator_keys
    )


def test_two_of_four_is_not_enough(consortium4: Consortium) -> None:
    problem = check4(consortium4, consortium4.certificate(BLOCK_HASH, HEIGHT, [0, 3]))
    assert problem == "certificate has 2 signatures, needs 3"


def test_duplicate_index_refused(consortium4: Consortium) -> None:
    good = consortium4.certificate(BLOCK_HASH, HEIGHT, [0, 1])
    doubled = replace(good, signatures=(*good.signatures, good.signatures[1]))
    problem = check4(consortium4, doubled)
    assert problem is not None
    assert "index 1 is repeated" in problem


@pytest.mark.parametrize("index", [4, 5, -1])
def test_index_out_of_range_refused(consortium4: Consortium, index: int) -> None:
    good = consortium4.certificate(BLOCK_HASH, HEIGHT, [0, 1, 2])
    signature = good.signatures[0][1]
    bad = replace(good, signatures=(*good.signatures, (index, signature)))
    problem = check4(consortium4, bad)
    assert problem is not None
    assert f"index {index}" in problem
    assert "not a validator" in problem


def test_bad_signature_refused(consortium4: Consortium) -> None:
    good = consortium4.certificate(BLOCK_HASH, HEIGHT, [0, 1, 2])
    index, signature = good.signatures[1]
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    bad = replace(good, signatures=(good.signatures[0], (index, flipped), good.signatures[2]))
    assert check4(consortium4, bad) == "signature of validator 1 does not verify"


def test_signature_of_another_validator_refused(consortium4: Consortium) -> None:
    good = consortium4.certificate(BLOCK_HASH, HEIGHT, [0, 1, 2])
    swapped = ((0, good.signatures[1][1]), good.signatures[1], good.signatures[2])
    assert check4(consortium4, replace(good, signatures=swapped)) == (
        "signature of validator 0 does not verify"
    )


def test_wrong_length_signature_refused(consortium4: Consortium) -> None:
    good = consortium4.certificate(BLOCK_HASH, HEIGHT, [0, 1, 2])
    bad = replace(good, signatures=((0, good.signatures[0][1][:63]), *good.signatures[1:]))
    assert check4(consortium4, bad) == "signature of validator 0 has the wrong length"


def test_wrong_height_or_hash_refused(consortium4: Consortium) -> None:
    good = consortium4.certificate(BLOCK_HASH, HEIGHT, [0, 1, 2])
    assert check4(consortium4, replace(good, height=HEIGHT + 1)) == (
        "certificate names a different height"
    )
    assert check4(consortium4, replace(good, block_hash=b"\x00" * 32)) == (
        "certificate names a different block hash"
    )
    # Votes for another height, relabelled with this height, do not verify.
    other_height = consortium4.certificate(BLOCK_HASH, HEIGHT + 1, [0, 1, 2])
    relabelled = replace(other_height, height=HEIGHT)
    assert check4(consortium4, relabelled) == "signature of validator 0 does not verify"
    # Votes for another block, relabelled with this hash, do not verify.
    other_block = consortium4.certificate(b"\x07" * 32, HEIGHT, [0, 1, 2])
    assert check4(consortium4, replace(other_block, block_hash=BLOCK_HASH)) == (
        "signature of validator 0 does not verify"
    )


def test_votes_for_another_chain_refused(consortium4: Consortium) -> None:
    votes = tuple(
        (i, sign_commit_vote(consortium4.validators[i], "other-chain", HEIGHT, BLOCK_HASH))
        for i in range(4)
    )
    certificate = CommitCertificate(BLOCK_HASH, HEIGHT, votes)
    assert check4(consortium4, certificate) == "signature of validator 0 does not verify"
    assert (
        certificate_problem(
            certificate, "other-chain", BLOCK_HASH, HEIGHT, consortium4.genesis.validator_keys
        )
        is None
    )


def test_vote_signed_under_another_domain_refused(consortium4: Consortium) -> None:
    payload = commit_vote_payload(consortium4.chain_id, HEIGHT, BLOCK_HASH)
    votes = tuple((i, consortium4.validators[i].sign(DOMAIN_TX, payload)) for i in range(4))
    certificate = CommitCertificate(BLOCK_HASH, HEIGHT, votes)
    assert check4(consortium4, certificate) == "signature of validator 0 does not verify"


def test_certificate_wire_and_json_round_trip(consortium4: Consortium) -> None:
    certificate = consortium4.certificate(BLOCK_HASH, HEIGHT, [0, 2, 3])
    wire = unpackb_strict(canonical_packb(certificate.to_wire()))
    assert CommitCertificate.from_wire(wire) == certificate
    assert CommitCertificate.from_json(certificate.to_json()) == certificate
    assert certificate.to_json()["signatures"][1] == [2, certificate.signatures[1][1].hex()]
    with pytest.raises(BlockFormatError):
        CommitCertificate.from_wire({"block_hash": BLOCK_HASH, "height": 1})
    with pytest.raises(BlockFormatError):
        CommitCertificate.from_wire({"block_hash": "x", "height": 1, "signatures": []})
    with pytest.raises(BlockFormatError):
        CommitCertificate.from_json({"block_hash": "zz", "height": 1, "signatures": []})


# --- receipts ---------------------------------------------------------------------------------


def test_receipt_encoding_by_hand() -> None:
    receipt = Receipt(
        tx_id=b"\x11" * 32,
        ok=True,
        error=None,
        result={"z": 1, "org": "a"},
        events=(ContractEvent("e", {"k": 1}),),
    )
    expected = (
        b"\x85"
        + b"\xa5error\xc0"
        + b"\xa6events\x91\x82\xa4data\x81\xa1k\x01\xa4name\xa1e"
        + b"\xa2ok\xc3"
        + b"\xa6result\x82\xa3org\xa1a\xa1z\x01"
        + b"\xa5tx_id\xc4\x20"
        + b"\x11" * 32
    )
    data = receipt.encode()
    assert data == expected
    assert list(msgpack.unpackb(data, raw=False)) == ["error", "events", "ok", "result", "tx_id"]
    assert unpackb_strict(data, require_canonical=True)["ok"] is True


def test_failed_receipt_round_trip() -> None:
    receipt = Receipt(b"\x22" * 32, False, "tx.expired", None, ())
    data = receipt.encode()
    assert data == (
        b"\x85\xa5error\xaatx.expired\xa6events\x90\xa2ok\xc2\xa6result\xc0\xa5tx_id\xc4\x20"
        + b"\x22" * 32
    )
    assert Receipt.decode(data) == receipt


def test_receipt_decode_refusals() -> None:
    with pytest.raises(BlockFormatError):
        Receipt.decode(b"\xc1")
    with pytest.raises(BlockFormatError):
        Receipt.decode(canonical_packb({"ok": True}))
    with pytest.raises(BlockFormatError):
        Receipt.decode(canonical_packb([1, 2]))
