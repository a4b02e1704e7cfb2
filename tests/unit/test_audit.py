"""`chancery audit`: a clean chain audits clean, and every kind of tampering is caught and
named exactly (height, transaction, check), whether the blocks come from a node's export
stream or from a copy of its data directory, which the audit leaves untouched."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgpack
import plyvel
import pytest

from contracts.registry import builtin_registry
from node import audit_sources
from node.audit import (
    AuditResult,
    ChainAuditor,
    Divergence,
    SourceBlock,
    SourceItem,
    describe_state_key,
    first_difference,
)
from node.audit_sources import AuditSourceError, audit_data_dir, audit_remote, data_snapshot
from node.block import (
    BlockHeader,
    CommitCertificate,
    Receipt,
)
from node.cli import main
from node.crypto import DOMAIN_TX, SignatureVerifier
from node.storage import (
    HISTORY_DIR,
    STATE_PREFIX,
    TX_PREFIX,
    block_key,
    envelopes_digest_key,
    height_key,
    tx_record_key,
    write_entry_key,
)
from node.transaction import Transaction, decode_envelope, encode_envelope
from tests.unit.conftest import Chain, Consortium, build_consortium, key_from_label

CHAIN_HEIGHT = 8
TAMPERED = 5  # the height every tamper case changes
DIVERGENCE_FIELDS = {"height", "tx_index", "tx_id", "check", "expected", "found", "message"}


def member_key(serial: int) -> bytes:
    return hashlib.sha256(b"audit-member/%d" % serial).digest()


def block_transactions(consortium: Consortium, height: int, when: int) -> list[Transaction]:
    """Admins of two organisations add members; a member's add_member is refused (a failed
    receipt); the notary's member anchors a hash (events); at height 4 a revoke."""
    admins, members = consortium.admins, consortium.members
    serial = height * 10
    transactions = [
        consortium.sign(
            admins["notary"],
            "membership",
            "add_member",
            {"public_key": member_key(serial), "name": f"clerk {serial}"},
            nonce=serial,
            timestamp=when,
        ),
        consortium.sign(
            admins["taxoffice"],
            "membership",
            "add_member",
            {"public_key": member_key(serial + 1), "name": f"inspector {serial}"},
            nonce=serial + 1,
            timestamp=when,
        ),
        consortium.sign(
            members["enterprise-a"],
            "membership",
            "add_member",
            {"public_key": member_key(serial + 2), "name": "not allowed"},
            nonce=serial + 2,
            timestamp=when,
        ),
        consortium.sign(
            members["notary"],
            "evidence",
            "anchor",
            {"hash": hashlib.sha256(b"deed %d" % height).digest(), "kind": "deed"},
            nonce=serial + 3,
            timestamp=when,
        ),
    ]
    if height == 4:
        revoke = {"public_key": member_key(10)}
        transactions.append(
            consortium.sign(
                admins["notary"], "membership", "revoke_member", revoke, nonce=serial + 4
            )
        )
    return transactions


def build_chain(path: Path, consortium: Consortium, height: int = CHAIN_HEIGHT) -> Chain:
    chain = Chain(path, consortium)
    while chain.store.height < height:
        when = chain.next_timestamp()
        chain.commit(block_transactions(consortium, chain.store.height + 1, when))
    return chain


@pytest.fixture(scope="module")
def four() -> Consortium:
    return build_consortium(validator_count=4)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, four: Consortium) -> Iterator[Chain]:
    """The audited chain: CHAIN_HEIGHT blocks certified by all four validators, held open
    (so its LevelDB LOCK is taken, as a running node's is)."""
    chain = build_chain(tmp_path_factory.mktemp("source") / "data", four)
    yield chain
    chain.close()


@pytest.fixture(scope="module")
def verifier() -> Iterator[SignatureVerifier]:
    shared = SignatureVerifier(workers=2)
    yield shared
    shared.close()


@pytest.fixture(scope="module")
def genesis_file(tmp_path_factory: pytest.TempPathFactory, four: Consortium) -> Path:
    path = tmp_path_factory.mktemp("genesis") / "genesis.json"
    path.write_bytes(four.raw)
    return path


def exports(chain: Chain) -> list[dict[str, Any]]:
    """Every block of `chain` as the export stream carries it (fresh copies to tamper)."""
    return [block.to_export() for block in chain.store.iter_blocks(0, chain.store.height + 1)]


def audit(
    consortium: Consortium, verifier: SignatureVerifier, blocks: list[Any], **options: Any
) -> AuditResult:
    auditor = ChainAuditor(consortium.genesis, builtin_registry(), verifier.executor, **options)
    return auditor.run(SourceBlock(height, record) for height, record in enumerate(blocks))


def divergence_of(result: AuditResult) -> Divergence:
    assert result.divergence is not None, "the audit found nothing"
    return result.divergence


# --- a clean chain ------------------------------------------------------------------------


def test_a_clean_chain_audits_clean_and_reaches_the_same_state(
    four: Consortium, verifier: SignatureVerifier, source: Chain
) -> None:
    result = audit(four, verifier, exports(source))
    assert result.clean, result.divergence
    assert result.blocks == CHAIN_HEIGHT + 1
    assert result.transactions == sum(len(e["txs"]) for e in exports(source))
    assert result.height == CHAIN_HEIGHT
    assert result.state_root == source.store.state_root
    assert result.block_hash == source.store.last_block_hash
    stored = {key: source.store.get(key) for key in result.state}
    assert stored == result.state
    receipts = [Receipt.decode(r) for e in exports(source) for r in e["receipts"]]
    assert any(not receipt.ok for receipt in receipts), "the chain has failed receipts"
    assert any(receipt.events for receipt in receipts), "the chain has events"


@pytest.mark.parametrize("lookahead_blocks", [1, 3, 100])
def test_the_lookahead_depth_does_not_change_the_verdict(
    four: Consortium, verifier: SignatureVerifier, source: Chain, lookahead_blocks: int
) -> None:
    blocks = exports(source)
    assert audit(four, verifier, blocks, lookahead_blocks=lookahead_blocks).clean
    tamper_transaction_body(blocks[TAMPERED], four, source)
    found = divergence_of(audit(four, verifier, blocks, lookahead_blocks=lookahead_blocks))
    assert (found.height, found.check, found.tx_index) == (TAMPERED, "tx.signature", 1)


# --- tampering: each case changes block TAMPERED and names what the audit must say ----------

Tamper = Callable[[dict[str, Any], Consortium, Chain], None]


def _header(export: dict[str, Any]) -> BlockHeader:
    return BlockHeader.decode(export["header"])


def _recertify(export: dict[str, Any], consortium: Consortium, header: BlockHeader) -> None:
    """Replace the header and have every validator sign it: a Byzantine quorum."""
    export["header"] = header.encode()
    export["commit"] = consortium.certificate(header.block_hash(), header.height).to_wire()


def _with(export: dict[str, Any], **fields: Any) -> BlockHeader:
    values = {name: getattr(_header(export), name) for name in BlockHeader.__slots__}
    return BlockHeader(**{**values, **fields})


def tamper_transaction_body(export: dict[str, Any], consortium: Consortium, chain: Chain) -> None:
    """Another body under the original signature."""
    tx = decode_envelope(export["txs"][1])
    other = consortium.sign(
        consortium.admins["notary"],
        "membership",
        "add_member",
        {"public_key": member_key(999), "name": "x"},
        nonce=999,
    )
    export["txs"][1] = encode_envelope(other.body_bytes, tx.signer, tx.signature)


def tamper_resigned_transaction(
    export: dict[str, Any], consortium: Consortium, chain: Chain
) -> None:
    """A different transaction, validly signed: the bodies no longer hash to tx_root."""
    tx = decode_envelope(export["txs"][2])
    other = consortium.sign(
        consortium.admins["notary"],
        "membership",
        "add_member",
        {"public_key": member_key(998), "name": "x"},
        nonce=998,
        timestamp=tx.body.timestamp,
    )
    export["txs"][2] = other.envelope


def tamper_resigned_same_body(export: dict[str, Any], consortium: Consortium, chain: Chain) -> None:
    """The certified body re-signed by another organisation's admin: no root covers the
    signer, but the replay runs it as that signer and the receipt differs."""
    tx = decode_envelope(export["txs"][0])
    imposter = consortium.admins["enterprise-b"]
    signature = imposter.sign(DOMAIN_TX, tx.body_bytes)
    export["txs"][0] = encode_envelope(tx.body_bytes, imposter.public_key, signature)


def tamper_dropped_transaction(
    export: dict[str, Any], consortium: Consortium, chain: Chain
) -> None:
    del export["txs"][-1]
    del export["receipts"][-1]


def tamper_non_canonical_envelope(
    export: dict[str, Any], consortium: Consortium, chain: Chain
) -> None:
    tx = decode_envelope(export["txs"][3])
    reordered = {"signer": tx.signer, "signature": tx.signature, "body": tx.body_bytes}
    export["txs"][3] = msgpack.packb(reordered, use_bin_type=True)


def tamper_repeated_transaction(
    export: dict[str, Any], consortium: Consortium, chain: Chain
) -> None:
    """A transaction committed at height 2 appears again (header and certificate intact)."""
    earlier = exports(chain)[2]
    export["txs"][2] = earlier["txs"][0]


def tamper_foreign_transaction(
    export: dict[str, Any], consortium: Consortium, chain: Chain
) -> None:
    other = consortium.sign(
        consortium.admins["notary"],
        "membership",
        "add_member",
        {"public_key": member_key(997), "name": "x"},
        nonce=997,
        chain_id="another-chain",
    )
    export["txs"][0] = other.envelope


def tamper_receipt_ok(export: dict[str, Any], consortium: Consortium, chain: Chain) -> None:
    """Receipt 2 (a refused add_member) claims success."""
    receipt = Receipt.decode(export["receipts"][2])
    forged = Receipt(receipt.tx_id, True, None, None, ())
    export["receipts"][2] = forged.encode()


def tamper_receipt_result(export: dict[str, Any], consortium: Consortium, chain: Chain) -> None:
    receipt = Receipt.decode(export["receipts"][0])
    forged = Receipt(receipt.tx_id, receipt.ok, receipt.error, {"forged": 1}, receipt.events)
    export["receipts"][0] = forged.encode()


def tamper_receipt_events(export: dict[str, Any], consortium: Consortium, chain: Chain) -> None:
    receipt = Receipt.decode(export["receipts"][3])
    forged = Receipt(receipt.tx_id, receipt.ok, receipt.error, receipt.result, ())
    export["receipts"][3] = forged.encode()


def tamper_receipt_byte(export: dict[str, Any], consortium: Consortium, chain: Chain) -> None:
    receipt = bytearray(export["receipts"][1])
    receipt[len(receipt) // 2] ^= 0x01
    export["receipts"][1] = bytes(receipt)


def tamper_header_field(export: dict[str, Any], consortium: Consortium, chain: Chain) -> None:
    """A header field changed after certification."""
    export["header"] = _with(export, timestamp=_header(export).timestamp + 1).encode()


def tamper_certified_state_root(
    export: dict[str, Any], consortium: Consortium, chain: Chain
) -> None:
    _recertify(export, consortium, _with(export, state_root=bytes(32)))


def tamper_certified_receipts_root(
    export: dict[str, Any], consortium: Consortium, chain: Chain
) -> None:
    _recertify(export, consortium, _with(export, receipts_root=bytes(32)))


def tamper_certified_prev_hash(
    export: dict[str, Any], consortium: Consortium, chain: Chain
) -> None:
    _recertify(export, consortium, _with(export, prev_hash=bytes(32)))


def tamper_certified_timestamp(
    export: dict[str, Any], consortium: Consortium, chain: Chain
) -> None:
    _recertify(export, consortium, _with(export, timestamp=1))


def tamper_certified_proposer(export: dict[str, Any], consortium: Consortium, chain: Chain) -> None:
    _recertify(export, consortium, _with(export, proposer=4))


def tamper_certificate_signature(
    export: dict[str, Any], consortium: Consortium, chain: Chain
) -> None:
    index, signature = export["commit"]["signatures"][1]
    export["commit"]["signatures"][1] = [index, bytes([signature[0] ^ 1]) + signature[1:]]


def tamper_too_few_signers(export: dict[str, Any], consortium: Consortium, chain: Chain) -> None:
    commit = export["commit"]
    short = consortium.certificate(commit["block_hash"], commit["height"], [0, 3])
    export["commit"] = short.to_wire()


def tamper_duplicated_signer(export: dict[str, Any], consortium: Consortium, chain: Chain) -> None:
    commit = export["commit"]
    votes = consortium.certificate(commit["block_hash"], commit["height"], [0, 1]).signatures
    repeated = CommitCertificate(commit["block_hash"], commit["height"], (*votes, votes[0]))
    export["commit"] = repeated.to_wire()


def tamper_impostor_certificate(
    export: dict[str, Any], consortium: Consortium, chain: Chain
) -> None:
    impostors = Consortium(
        consortium.genesis,
        consortium.raw,
        {},
        {},
        tuple(key_from_label(f"mallory/{i}") for i in range(4)),
    )
    commit = export["commit"]
    export["commit"] = impostors.certificate(commit["block_hash"], commit["height"]).to_wire()


def tamper_certificate_of_another_height(
    export: dict[str, Any], consortium: Consortium, chain: Chain
) -> None:
    commit = export["commit"]
    export["commit"] = consortium.certificate(commit["block_hash"], TAMPERED + 1).to_wire()


def _other_chain_block(path: Path, consortium: Consortium) -> dict[str, Any]:
    other = build_chain(path, consortium, TAMPERED)
    try:
        return exports(other)[TAMPERED]
    finally:
        other.close()


def tamper_block_of_another_chain(
    export: dict[str, Any], consortium: Consortium, chain: Chain
) -> None:
    """Block TAMPERED of a chain with another chain_id (same validator keys)."""
    other = build_consortium(chain_id="chancery-other", validator_count=4)
    export.update(_other_chain_block(chain.path.parent / "other-chain-id", other))


def tamper_block_of_another_genesis(
    export: dict[str, Any], consortium: Consortium, chain: Chain
) -> None:
    """Block TAMPERED of another chain with the same chain_id and validators (a different
    genesis time): only the hash chain tells."""
    other = build_consortium(genesis_time=consortium.genesis.genesis_time + 1, validator_count=4)
    export.update(_other_chain_block(chain.path.parent / "other-genesis", other))


def tamper_shape(export: dict[str, Any], consortium: Consortium, chain: Chain) -> None:
    export["txs"] = "not a list"


def tamper_extra_field(export: dict[str, Any], consortium: Consortium, chain: Chain) -> None:
    export["writes"] = b""


# (tamper, check, transaction index or None)
TAMPER_CASES: list[tuple[Tamper, str, int | None]] = [
    (tamper_transaction_body, "tx.signature", 1),
    (tamper_resigned_transaction, "tx_root", None),
    (tamper_resigned_same_body, "receipt.result", 0),
    (tamper_dropped_transaction, "tx_root", None),
    (tamper_non_canonical_envelope, "tx.canonical", 3),
    (tamper_repeated_transaction, "tx.duplicate", 2),
    (tamper_foreign_transaction, "tx.chain_id", 0),
    (tamper_receipt_ok, "receipt.ok", 2),
    (tamper_receipt_result, "receipt.result", 0),
    (tamper_receipt_events, "receipt.events", 3),
    (tamper_receipt_byte, "receipt.", 1),
    (tamper_header_field, "certificate.block_hash", None),
    (tamper_certified_state_root, "state_root", None),
    (tamper_certified_receipts_root, "receipts_root", None),
    (tamper_certified_prev_hash, "header.prev_hash", None),
    (tamper_certified_timestamp, "header.timestamp", None),
    (tamper_certified_proposer, "header.proposer", None),
    (tamper_certificate_signature, "certificate.signatures", None),
    (tamper_too_few_signers, "certificate.signatures", None),
    (tamper_duplicated_signer, "certificate.signatures", None),
    (tamper_impostor_certificate, "certificate.signatures", None),
    (tamper_certificate_of_another_height, "certificate.height", None),
    (tamper_block_of_another_chain, "header.chain_id", None),
    (tamper_block_of_another_genesis, "header.prev_hash", None),
    (tamper_shape, "block.malformed", None),
    (tamper_extra_field, "block.malformed", None),
]


@pytest.mark.parametrize(
    ("tamper", "check", "tx_index"),
    TAMPER_CASES,
    ids=[tamper.__name__.removeprefix("tamper_") for tamper, _, _ in TAMPER_CASES],
)
def test_tampering_is_caught_and_named_exactly(
    four: Consortium,
    verifier: SignatureVerifier,
    source: Chain,
    tamper: Tamper,
    check: str,
    tx_index: int | None,
) -> None:
    blocks = exports(source)
    tamper(blocks[TAMPERED], four, source)
    result = audit(four, verifier, blocks)
    found = divergence_of(result)
    assert found.height == TAMPERED, found
    assert found.check.startswith(check), found
    assert found.tx_index == tx_index, found
    if tx_index is not None and found.check != "tx.decode":
        assert found.tx_id == decode_envelope(blocks[TAMPERED]["txs"][tx_index]).tx_id
    assert result.blocks == TAMPERED  # blocks 0 .. TAMPERED-1 held up
    assert result.height == TAMPERED - 1
    assert set(found.to_json()) == DIVERGENCE_FIELDS
    json.dumps(found.to_json())  # JSON-ready: bytes are hex


def test_the_certificate_problems_say_what_is_wrong(
    four: Consortium, verifier: SignatureVerifier, source: Chain
) -> None:
    messages = {}
    for tamper in (tamper_too_few_signers, tamper_duplicated_signer, tamper_certificate_signature):
        blocks = exports(source)
        tamper(blocks[TAMPERED], four, source)
        messages[tamper] = divergence_of(audit(four, verifier, blocks)).message
    assert "needs 3" in messages[tamper_too_few_signers]
    assert "repeated" in messages[tamper_duplicated_signer]
    assert "validator 1 does not verify" in messages[tamper_certificate_signature]


def test_a_changed_receipt_names_the_field_with_both_values(
    four: Consortium, verifier: SignatureVerifier, source: Chain
) -> None:
    blocks = exports(source)
    tamper_receipt_ok(blocks[TAMPERED], four, source)
    found = divergence_of(audit(four, verifier, blocks)).to_json()
    assert (found["check"], found["expected"], found["found"]) == ("receipt.ok", False, True)
    tx_id = decode_envelope(blocks[TAMPERED]["txs"][2]).tx_id.hex()
    assert found["tx_id"] == tx_id


def test_a_genesis_block_of_another_chain_is_refused_at_height_0(
    four: Consortium, verifier: SignatureVerifier, source: Chain
) -> None:
    blocks = exports(source)
    other = build_consortium(chain_id="chancery-other", validator_count=4)
    blocks[0] = other.genesis.genesis_block().to_export()
    found = divergence_of(audit(four, verifier, blocks))
    assert (found.height, found.check) == (0, "genesis")


def test_a_skipped_block_is_named(
    four: Consortium, verifier: SignatureVerifier, source: Chain
) -> None:
    blocks = exports(source)
    del blocks[TAMPERED]
    found = divergence_of(audit(four, verifier, blocks))
    assert (found.height, found.check) == (TAMPERED, "header.height")


def test_an_empty_source_is_not_a_clean_chain(
    four: Consortium, verifier: SignatureVerifier
) -> None:
    found = divergence_of(audit(four, verifier, []))
    assert (found.height, found.check) == (0, "block.missing")


def test_a_divergence_before_a_failing_source_is_still_reported(
    four: Consortium, verifier: SignatureVerifier, source: Chain
) -> None:
    blocks = exports(source)
    tamper_receipt_ok(blocks[2], four, source)

    def failing(blocks: list[dict[str, Any]], fail_at: int) -> Iterator[SourceItem]:
        for height, record in enumerate(blocks):
            if height == fail_at:
                raise AuditSourceError("the node went away")
            yield SourceBlock(height, record)

    auditor = ChainAuditor(four.genesis, builtin_registry(), verifier.executor, lookahead_blocks=10)
    assert divergence_of(auditor.run(failing(blocks, 4))).height == 2
    auditor = ChainAuditor(four.genesis, builtin_registry(), verifier.executor, lookahead_blocks=10)
    with pytest.raises(AuditSourceError, match="went away"):
        auditor.run(failing(exports(source), 4))


def test_state_keys_and_differences_are_described_for_people() -> None:
    assert describe_state_key(b"membership/orgs") == "membership/orgs"
    assert describe_state_key(b"membership/key/" + bytes([0, 255])) == "membership/key/00ff"
    stored = [(b"a", b"1"), (b"b", b"2"), (b"d", None)]
    assert first_difference(stored, stored) is None
    assert first_difference(stored, [(b"a", b"1"), (b"b", b"3")]) == (b"b", "33", "32")
    assert first_difference(stored, [(b"a", b"1"), (b"b", b"2")]) == (b"d", "absent", "deleted")
    assert first_difference([(b"a", b"1")], [(b"a", b"1"), (b"c", b"4")]) == (b"c", "34", "absent")


# --- a data directory -----------------------------------------------------------------------


def fingerprint(directory: Path) -> dict[str, tuple[int, int, str]]:
    """Every file's size, mtime and content hash."""
    return {
        str(path.relative_to(directory)): (
            path.stat().st_size,
            path.stat().st_mtime_ns,
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def audit_dir(consortium: Consortium, verifier: SignatureVerifier, path: Path) -> AuditResult:
    auditor = ChainAuditor(consortium.genesis, builtin_registry(), verifier.executor)
    return audit_data_dir(path, consortium.genesis, auditor)


def test_a_data_directory_held_open_by_a_node_audits_clean_and_is_left_untouched(
    four: Consortium, verifier: SignatureVerifier, source: Chain, tmp_path: Path
) -> None:
    before = fingerprint(source.path)
    assert "LOCK" in before  # the source chain holds it, as a running node does
    result = audit_dir(four, verifier, source.path)
    assert result.clean, result.divergence
    assert (result.blocks, result.height) == (CHAIN_HEIGHT + 1, CHAIN_HEIGHT)
    assert fingerprint(source.path) == before
    assert source.store.get(b"membership/orgs") is not None  # the node's DB still works


def test_the_snapshot_links_the_table_files_and_is_deleted_afterwards(
    source: Chain, tmp_path: Path
) -> None:
    with data_snapshot(source.path, tmp_path) as snapshot:
        assert snapshot.path.is_relative_to(tmp_path)
        names = [path.name for path in snapshot.path.rglob("*")]
        assert names.count("CURRENT") == 2 and "LOCK" not in names  # both stores
        tables = [n for n in names if n.endswith((".ldb", ".sst"))]
        assert snapshot.linked_files == len(tables)
    assert list(tmp_path.iterdir()) == []


def test_the_snapshot_copies_when_hard_links_fail(
    four: Consortium,
    verifier: SignatureVerifier,
    source: Chain,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: Any) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(audit_sources.os, "link", refuse)
    with data_snapshot(source.path, tmp_path) as snapshot:
        assert snapshot.linked_files == 0
        files = [path for path in snapshot.path.rglob("*") if path.is_file()]
        assert snapshot.copied_files == len(files)
    assert audit_dir(four, verifier, source.path).clean


def test_the_snapshot_is_taken_again_while_the_directory_changes(
    source: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listings = []
    real = audit_sources._snapshot_files

    def changing(data_dir: Path) -> dict[str, tuple[int, int]]:
        files = real(data_dir)
        listings.append(files)
        if len(listings) == 2:  # a flush finished during the first attempt
            files = {**files, "999999.ldb": (1, 1)}
        return files

    monkeypatch.setattr(audit_sources, "_snapshot_files", changing)
    with data_snapshot(source.path, tmp_path) as snapshot:
        assert (snapshot.path / "CURRENT").is_file()
        assert (snapshot.path / HISTORY_DIR / "CURRENT").is_file()
    # The state store twice (a listing before and after each attempt), then the history.
    assert len(listings) == 6

    def always_changing(data_dir: Path) -> dict[str, tuple[int, int]]:
        listings.append(real(data_dir))
        return {**listings[-1], f"{len(listings)}.log": (0, 0)}

    monkeypatch.setattr(audit_sources, "_snapshot_files", always_changing)
    with (
        pytest.raises(AuditSourceError, match="kept changing"),
        data_snapshot(source.path, tmp_path),
    ):
        pass


@contextlib.contextmanager
def copy_of(chain: Chain, tmp_path: Path) -> Iterator[tuple[Path, plyvel.DB, plyvel.DB]]:
    """A copy of `chain`'s data directory, its state and history stores opened with
    plyvel to be tampered with."""
    copy = tmp_path / "copy"
    shutil.copytree(chain.path, copy, ignore=shutil.ignore_patterns("LOCK"))
    db = plyvel.DB(str(copy))
    history = plyvel.DB(str(copy / HISTORY_DIR))
    try:
        yield copy, db, history
    finally:
        history.close()
        db.close()


def test_a_flipped_byte_in_a_stored_block_header_is_caught_at_its_height(
    four: Consortium, verifier: SignatureVerifier, source: Chain, tmp_path: Path
) -> None:
    with copy_of(source, tmp_path) as (copy, _db, history):
        key = block_key(TAMPERED)
        record = msgpack.unpackb(history.get(key), raw=False)
        header = bytearray(record["header"])
        header[-3] ^= 0x01
        record["header"] = bytes(header)
        history.put(key, msgpack.packb(record, use_bin_type=True))
    found = divergence_of(audit_dir(four, verifier, copy))
    assert found.height == TAMPERED
    assert found.check in {"certificate.block_hash", "header.decode"}, found


def test_a_flipped_byte_in_a_raw_block_record_is_caught_at_its_height(
    four: Consortium, verifier: SignatureVerifier, source: Chain, tmp_path: Path
) -> None:
    with copy_of(source, tmp_path) as (copy, _db, history):
        key = block_key(TAMPERED)
        value = bytearray(history.get(key))
        value[len(value) // 2] ^= 0x40
        history.put(key, bytes(value))
    assert divergence_of(audit_dir(four, verifier, copy)).height == TAMPERED


def _rewrite_transaction_record(history: plyvel.DB, height: int, index: int, change: Any) -> None:
    key = tx_record_key(height, index)
    envelope, receipt = msgpack.unpackb(history.get(key), raw=False)
    history.put(key, msgpack.packb(change(envelope, receipt), use_bin_type=True))


def claim_success(envelope: bytes, receipt: bytes) -> list[bytes]:
    """A stored [envelope, receipt] whose receipt now says the call succeeded."""
    return [envelope, Receipt(Receipt.decode(receipt).tx_id, True, None, None, ()).encode()]


def test_a_changed_stored_transaction_or_receipt_is_named(
    four: Consortium, verifier: SignatureVerifier, source: Chain, tmp_path: Path
) -> None:
    def flip_signature(envelope: bytes, receipt: bytes) -> list[bytes]:
        tx = decode_envelope(envelope)
        signature = bytes([tx.signature[0] ^ 1]) + tx.signature[1:]
        return [encode_envelope(tx.body_bytes, tx.signer, signature), receipt]

    with copy_of(source, tmp_path) as (copy, _, history):
        _rewrite_transaction_record(history, TAMPERED, 1, flip_signature)
    found = divergence_of(audit_dir(four, verifier, copy))
    assert (found.height, found.check, found.tx_index) == (TAMPERED, "tx.signature", 1)

    def fail_receipt(envelope: bytes, receipt: bytes) -> list[bytes]:
        decoded = Receipt.decode(receipt)
        return [envelope, Receipt(decoded.tx_id, False, "x", None, ()).encode()]

    shutil.rmtree(copy)
    with copy_of(source, tmp_path) as (copy, _db, history):
        _rewrite_transaction_record(history, 3, 0, fail_receipt)
    found = divergence_of(audit_dir(four, verifier, copy))
    assert (found.height, found.check, found.tx_index) == (3, "receipt.ok", 0)


def test_a_changed_stored_state_value_is_named_by_key(
    four: Consortium, verifier: SignatureVerifier, source: Chain, tmp_path: Path
) -> None:
    key = b"membership/key/" + member_key(TAMPERED * 10)
    with copy_of(source, tmp_path) as (copy, db, _history):
        assert db.get(STATE_PREFIX + key) is not None
        db.put(STATE_PREFIX + key, b"\x80")
    found = divergence_of(audit_dir(four, verifier, copy))
    assert (found.height, found.check) == (CHAIN_HEIGHT, "store.state")
    assert describe_state_key(key) in found.message
    assert found.found == "80"


def separated_state_keys(db: plyvel.DB) -> list[tuple[bytes, bytes]]:
    """Every state key whose value is kept in the history, with its reference."""
    return [
        (key[len(STATE_PREFIX) :], stored)
        for key, stored in db.iterator(prefix=STATE_PREFIX)
        if stored[:1] == b"\xc1"
    ]


def test_a_separated_value_is_covered_by_its_blocks_write_set(
    four: Consortium, verifier: SignatureVerifier, source: Chain, tmp_path: Path
) -> None:
    with copy_of(source, tmp_path) as (copy, db, history):
        _, reference = separated_state_keys(db)[-1]
        entry_key = reference[1:]
        key, value = msgpack.unpackb(history.get(entry_key))
        history.put(entry_key, msgpack.packb([key, value + b"x"]))
    found = divergence_of(audit_dir(four, verifier, copy))
    assert found.height == int.from_bytes(entry_key[:8], "big")
    assert found.check == "store.write_set", found
    assert describe_state_key(key) in found.message


def test_a_reference_to_another_keys_value_is_named_by_key(
    four: Consortium, verifier: SignatureVerifier, source: Chain, tmp_path: Path
) -> None:
    with copy_of(source, tmp_path) as (copy, db, _):
        (first, _), (_second, reference) = separated_state_keys(db)[:2]
        db.put(STATE_PREFIX + first, reference)
    found = divergence_of(audit_dir(four, verifier, copy))
    assert (found.height, found.check) == (CHAIN_HEIGHT, "store.state"), found
    assert describe_state_key(first) in found.message
    assert found.found == reference.hex()


def test_an_extra_stored_state_key_is_named(
    four: Consortium, verifier: SignatureVerifier, source: Chain, tmp_path: Path
) -> None:
    with copy_of(source, tmp_path) as (copy, db, _history):
        db.put(STATE_PREFIX + b"membership/zzz", b"\x01")
    found = divergence_of(audit_dir(four, verifier, copy))
    assert found.check == "store.state" and "membership/zzz" in found.message
    assert (found.expected, found.found) == ("absent", "01")


def test_a_changed_stored_write_set_entry_is_named_by_key(
    four: Consortium, verifier: SignatureVerifier, source: Chain, tmp_path: Path
) -> None:
    with copy_of(source, tmp_path) as (copy, _db, history):
        entry_key = write_entry_key(TAMPERED, 1)
        changed, _ = msgpack.unpackb(history.get(entry_key))
        history.put(entry_key, msgpack.packb([changed, b"forged"]))
    found = divergence_of(audit_dir(four, verifier, copy))
    assert (found.height, found.check) == (TAMPERED, "store.write_set")
    assert describe_state_key(changed) in found.message


def test_stored_indexes_and_metadata_are_checked(
    four: Consortium, verifier: SignatureVerifier, source: Chain, tmp_path: Path
) -> None:
    tx_id = source.store.get_block(TAMPERED).tx_ids[2]  # type: ignore[union-attr]
    cases: list[tuple[Callable[[plyvel.DB, plyvel.DB], None], int, str]] = [
        (lambda db, _: db.delete(TX_PREFIX + tx_id), TAMPERED, "store.tx_index"),
        (
            lambda db, _: db.put(TX_PREFIX + tx_id, height_key(1) + bytes(4)),
            TAMPERED,
            "store.tx_index",
        ),
        (
            lambda _, history: history.put(envelopes_digest_key(3), bytes(32)),
            3,
            "store.envelopes_digest",
        ),
        (lambda db, _: db.put(b"m:state_root", bytes(32)), CHAIN_HEIGHT, "store.meta"),
        (lambda _, history: history.delete(tx_record_key(4, 0)), 4, "store.record"),
        (lambda _, history: history.delete(block_key(6)), 6, "store.record"),
    ]
    for change, height, check in cases:
        shutil.rmtree(tmp_path / "copy", ignore_errors=True)
        with copy_of(source, tmp_path) as (copy, db, history):
            change(db, history)
        found = divergence_of(audit_dir(four, verifier, copy))
        assert (found.height, found.check) == (height, check), found


def test_a_data_directory_of_another_chain_or_none_cannot_be_audited(
    four: Consortium, verifier: SignatureVerifier, tmp_path: Path
) -> None:
    other = build_chain(tmp_path / "other", build_consortium(chain_id="x", validator_count=4), 1)
    other.close()
    with pytest.raises(AuditSourceError, match="another chain"):
        audit_dir(four, verifier, tmp_path / "other")
    with pytest.raises(AuditSourceError, match="not a directory"):
        audit_dir(four, verifier, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AuditSourceError, match="no CURRENT"):
        audit_dir(four, verifier, tmp_path / "empty")


# --- a node's export stream ----------------------------------------------------------------


class ExportServer:
    """`GET /v1/status` and the export stream `GET /v1/blocks` of a chain, as a node frames
    them (concatenated msgpack maps), over real HTTP in a thread. `tamper` may change
    blocks on their way out."""

    def __init__(
        self,
        chain: Chain,
        tamper: Callable[[dict[str, Any]], None] | None = None,
        *,
        claimed_height: int | None = None,
        stream: bytes | None = None,
    ) -> None:
        self.chain = chain
        self.tamper = tamper
        self.claimed_height = claimed_height
        self.stream = stream
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                self.send_response(200)
                if self.path == "/v1/status":
                    body = json.dumps(server.status()).encode()
                    self.send_header("Content-Type", "application/json")
                else:
                    body = server.export(parse_qs(urlsplit(self.path).query))
                    self.send_header("Content-Type", "application/msgpack")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def status(self) -> dict[str, Any]:
        store = self.chain.store
        height = store.height if self.claimed_height is None else self.claimed_height
        return {"genesis_hash": store.genesis_hash.hex(), "height": height}

    def export(self, query: dict[str, list[str]]) -> bytes:
        if self.stream is not None:
            return self.stream
        start, limit = int(query["from"][0]), int(query["limit"][0])
        out = b""
        for block in self.chain.store.iter_blocks(start, limit):
            export = block.to_export()
            if self.tamper is not None:
                self.tamper(export)
            out += msgpack.packb(export, use_bin_type=True)
        return out

    def __enter__(self) -> ExportServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_an_export_stream_is_audited_page_by_page(
    four: Consortium, verifier: SignatureVerifier, source: Chain
) -> None:
    auditor = ChainAuditor(four.genesis, builtin_registry(), verifier.executor)
    with ExportServer(source) as server:
        result = audit_remote(server.url, four.genesis, auditor, page_blocks=3)
    assert result.clean, result.divergence
    assert result.blocks == CHAIN_HEIGHT + 1
    pages = [path for path in server.requests if path.startswith("/v1/blocks")]
    assert pages == [
        "/v1/blocks?from=0&limit=3",
        "/v1/blocks?from=3&limit=3",
        "/v1/blocks?from=6&limit=3",
    ]


def test_a_tampered_export_stream_is_caught(
    four: Consortium, verifier: SignatureVerifier, source: Chain
) -> None:
    def tamper(export: dict[str, Any]) -> None:
        if _header(export).height == TAMPERED:
            tamper_receipt_result(export, four, source)

    auditor = ChainAuditor(four.genesis, builtin_registry(), verifier.executor)
    with ExportServer(source, tamper) as server:
        found = divergence_of(audit_remote(server.url, four.genesis, auditor, page_blocks=4))
    assert (found.height, found.check, found.tx_index) == (TAMPERED, "receipt.result", 0)


def test_an_export_stream_that_is_not_msgpack_is_a_divergence(
    four: Consortium, verifier: SignatureVerifier, source: Chain
) -> None:
    auditor = ChainAuditor(four.genesis, builtin_registry(), verifier.executor)
    with ExportServer(source, stream=b"\xc1garbage") as server:
        found = divergence_of(audit_remote(server.url, four.genesis, auditor))
    assert (found.height, found.check) == (0, "export.decode")


def test_a_node_serving_fewer_blocks_than_it_claims_cannot_be_audited(
    four: Consortium, verifier: SignatureVerifier, source: Chain
) -> None:
    auditor = ChainAuditor(four.genesis, builtin_registry(), verifier.executor)
    with (
        ExportServer(source, claimed_height=CHAIN_HEIGHT + 5) as server,
        pytest.raises(AuditSourceError, match=f"no block at height {CHAIN_HEIGHT + 1}"),
    ):
        audit_remote(server.url, four.genesis, auditor)


def test_a_node_of_another_chain_or_none_cannot_be_audited(
    verifier: SignatureVerifier, source: Chain
) -> None:
    other = build_consortium(chain_id="chancery-other", validator_count=4)
    auditor = ChainAuditor(other.genesis, builtin_registry(), verifier.executor)
    with ExportServer(source) as server, pytest.raises(AuditSourceError, match="another chain"):
        audit_remote(server.url, other.genesis, auditor)
    with pytest.raises(AuditSourceError, match="cannot reach"):
        audit_remote(f"http://127.0.0.1:{closed_port()}", other.genesis, auditor)


def closed_port() -> int:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the command ----------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["audit", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_command_exits_0_on_a_clean_chain(
    capsys: pytest.CaptureFixture[str], source: Chain, genesis_file: Path
) -> None:
    code, out, _ = run(capsys, "--data", str(source.path), "--genesis", str(genesis_file))
    assert code == 0
    assert out.startswith(f"audited {CHAIN_HEIGHT + 1} blocks, ")
    assert out.rstrip().endswith("tx/s): clean")


def test_the_command_reports_a_divergence_in_one_paragraph_and_exits_1(
    capsys: pytest.CaptureFixture[str],
    source: Chain,
    genesis_file: Path,
    four: Consortium,
    tmp_path: Path,
) -> None:
    with copy_of(source, tmp_path) as (copy, _db, history):
        _rewrite_transaction_record(history, TAMPERED, 2, claim_success)
    code, out, _ = run(capsys, "--data", str(copy), "--genesis", str(genesis_file))
    assert code == 1
    paragraph, summary = out.rstrip().split("\n")
    assert paragraph.startswith(f"DIVERGENCE at height {TAMPERED}, transaction 2 (tx_id ")
    assert "check receipt.ok failed" in paragraph
    assert "Expected false; found true." in paragraph
    assert summary.endswith(f"divergent at height {TAMPERED}")


def test_the_json_report(
    capsys: pytest.CaptureFixture[str], source: Chain, genesis_file: Path, tmp_path: Path
) -> None:
    code, out, err = run(
        capsys, "--data", str(source.path), "--genesis", str(genesis_file), "--json"
    )
    assert code == 0
    report = json.loads(out)
    assert set(report) == {
        "result",
        "chain_id",
        "genesis_hash",
        "source",
        "blocks",
        "transactions",
        "height",
        "seconds",
        "tx_per_s",
        "divergence",
    }
    assert report["result"] == "clean" and report["divergence"] is None
    assert report["source"] == {"data": str(source.path)}
    assert (report["blocks"], report["height"]) == (CHAIN_HEIGHT + 1, CHAIN_HEIGHT)
    assert "clean" in err  # the summary line goes to stderr with --json

    with copy_of(source, tmp_path) as (copy, _, history):
        entry_key = write_entry_key(2, 0)
        history.put(entry_key, msgpack.packb([b"membership/x", None]))
    code, out, _ = run(capsys, "--data", str(copy), "--genesis", str(genesis_file), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["result"] == "divergent"
    assert set(report["divergence"]) == DIVERGENCE_FIELDS
    assert (report["divergence"]["height"], report["divergence"]["check"]) == (
        2,
        "store.write_set",
    )


def test_the_command_audits_an_export_stream(
    capsys: pytest.CaptureFixture[str], source: Chain, genesis_file: Path
) -> None:
    with ExportServer(source) as server:
        code, out, _ = run(capsys, "--from", server.url, "--genesis", str(genesis_file))
    assert code == 0, out
    assert out.rstrip().endswith("clean")


@pytest.mark.parametrize(
    "case", ["unreachable", "bad_genesis", "missing_genesis", "other_chain", "not_a_dir", "both"]
)
def test_the_command_exits_2_with_one_line_when_it_cannot_run(
    capsys: pytest.CaptureFixture[str],
    source: Chain,
    genesis_file: Path,
    tmp_path: Path,
    case: str,
) -> None:
    bad_genesis = tmp_path / "bad.json"
    bad_genesis.write_text("{not json")
    other_genesis = tmp_path / "other.json"
    other_genesis.write_bytes(build_consortium(chain_id="chancery-other").raw)
    genesis = str(genesis_file)
    argv = {
        "unreachable": ["--from", f"http://127.0.0.1:{closed_port()}", "--genesis", genesis],
        "bad_genesis": ["--data", str(source.path), "--genesis", str(bad_genesis)],
        "missing_genesis": ["--data", str(source.path), "--genesis", str(tmp_path / "none")],
        "other_chain": ["--data", str(source.path), "--genesis", str(other_genesis)],
        "not_a_dir": ["--data", str(genesis_file), "--genesis", genesis],
        "both": ["--data", str(source.path), "--from", "http://x", "--genesis", genesis],
    }[case]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    code, out, _ = run(capsys, *argv, "--json")
    assert code == 2
    if case != "both":  # argparse refuses that one before there is a report to write
        assert json.loads(out)["result"] == "error"


def test_divergence_json_is_the_documented_shape() -> None:
    divergence = Divergence(7, "receipt.ok", "m", True, False, 3, bytes(32))
    assert divergence.to_json() == {
        "height": 7,
        "tx_index": 3,
        "tx_id": "00" * 32,
        "check": "receipt.ok",
        "expected": True,
        "found": False,
        "message": "m",
    }
    assert os.linesep not in divergence.describe()
