"""State transfer over real transports: an empty node catches up to the same blocks and
state as its peer, from corroborated write sets or by re-execution, and a peer that
serves a bad block is not believed."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest

from node.block import CommittedBlock, encode_write_set
from node.crypto import DOMAIN_TX, SignatureVerifier
from node.encoding import unpackb_strict
from node.p2p.transport import TransportError
from node.sync import (
    SYNC_BATCH_BLOCKS_MAX,
    SYNC_RESPONSE_BYTES_MAX,
    BlockSync,
    export_size_bytes,
    parse_get_blocks,
    read_sync_exports,
)
from node.transaction import decode_envelope, encode_envelope
from tests.unit.conftest import Chain, Consortium, build_consortium, key_from_label
from tests.unit.test_p2p import WAIT_S, Network, Peer, sample

SOURCE_HEIGHT = 40
TXS_PER_BLOCK = 3
BATCH_BLOCKS = 8
TAMPERED_HEIGHT = 11  # in the second batch: the first ten blocks from the liar are fine


@pytest.fixture(scope="module")
def four() -> Consortium:
    return build_consortium(validator_count=4)


@pytest.fixture(scope="module")
def verifier() -> Iterator[SignatureVerifier]:
    shared = SignatureVerifier(workers=2, chunk_size=4)  # small chunks: many in parallel
    yield shared
    shared.close()


def new_member(consortium: Consortium, nonce: int, timestamp: int) -> Any:
    return consortium.sign(
        consortium.admins["notary"],
        "membership",
        "add_member",
        {"public_key": os.urandom(32), "name": f"member-{nonce}"},
        nonce=nonce,
        timestamp=timestamp,
    )


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, four: Consortium) -> Iterator[Chain]:
    """A chain of SOURCE_HEIGHT certified blocks, TXS_PER_BLOCK membership txs each."""
    chain = Chain(tmp_path_factory.mktemp("source") / "data", four)
    for height in range(1, SOURCE_HEIGHT + 1):
        when = chain.next_timestamp()
        chain.commit([new_member(four, height * 100 + i, when) for i in range(TXS_PER_BLOCK)])
    yield chain
    chain.close()


@dataclass
class Harness:
    """Validator 0 serves `source`; validator 1 (empty) catches up; 2 may lie."""

    network: Network
    honest: Peer
    client: Peer
    fresh: Chain
    client_sync: BlockSync
    server_sync: BlockSync


Tamper = Callable[[dict[str, Any], Chain], None]


def lying_server(source: Chain, tamper: Tamper) -> Callable[..., Any]:
    """A `get_blocks` handler that serves `source` with block TAMPERED_HEIGHT tampered."""

    async def serve(peer: int, request: dict[str, Any]) -> dict[str, Any]:
        start, limit = parse_get_blocks(request)
        blocks = read_sync_exports(source.store, start, limit, SYNC_RESPONSE_BYTES_MAX)
        if start <= TAMPERED_HEIGHT < start + len(blocks):
            tamper(blocks[TAMPERED_HEIGHT - start], source)
        return {"type": "blocks", "height": source.store.height, "blocks": blocks}

    return serve


@contextlib.asynccontextmanager
async def harness(
    four: Consortium,
    source: Chain,
    tmp_path: Path,
    verifier: SignatureVerifier,
    liar: Callable[..., Any] | None = None,
    witness: Callable[..., Any] | None = None,
    **sync_options: Any,
) -> AsyncIterator[Harness]:
    """Validator 0 serves honestly, 1 catches up, 2 (if `liar`) answers `get_blocks` with
    it, 3 (if `witness`) answers `get_envelope_digests` with it."""
    network = Network(four, 4)
    fresh = Chain(tmp_path / "fresh", four)
    syncs: list[BlockSync] = []
    try:
        honest = await network.start(0, ping_interval_s=3600)
        client = await network.start(1, ping_interval_s=3600)
        server_sync = BlockSync(honest.transport, source.ledger, verifier, honest.metrics)
        options = {"batch_blocks_max": BATCH_BLOCKS, **sync_options}
        client_sync = BlockSync(client.transport, fresh.ledger, verifier, client.metrics, **options)
        syncs += [server_sync, client_sync]
        wanted = {0}
        if liar is not None:
            lying = await network.start(2, ping_interval_s=3600)
            lying.transport.on_request("get_blocks", liar)
            wanted.add(2)
        if witness is not None:
            vouching = await network.start(3, ping_interval_s=3600)
            vouching.transport.on_request("get_envelope_digests", witness)
            wanted.add(3)
        assert await client.transport.wait_until_connected(wanted, WAIT_S)
        yield Harness(network, honest, client, fresh, client_sync, server_sync)
    finally:
        await network.stop_all()
        for sync in syncs:
            sync.close()
        fresh.close()


def assert_same_chain(fresh: Chain, source: Chain, height: int = SOURCE_HEIGHT) -> None:
    assert fresh.store.height == height
    for h in range(1, height + 1):
        ours, theirs = fresh.store.get_block(h), source.store.get_block(h)
        assert ours is not None and theirs is not None
        assert ours.block_hash == theirs.block_hash
        assert ours.receipts == theirs.receipts
        assert ours.commit == theirs.commit
    if height == source.store.height:
        assert fresh.store.state_root == source.store.state_root
        assert fresh.store.last_block_hash == source.store.last_block_hash


async def test_an_empty_node_catches_up_to_the_same_blocks_and_state(
    four: Consortium, source: Chain, tmp_path: Path, verifier: SignatureVerifier
) -> None:
    applied: list[CommittedBlock] = []
    async with harness(four, source, tmp_path, verifier, on_applied=applied.extend) as h:
        assert await h.client_sync.catch_up(None, [0]) == SOURCE_HEIGHT
        assert_same_chain(h.fresh, source)
        assert [block.height for block in applied] == list(range(1, SOURCE_HEIGHT + 1))
        assert sample(h.client.metrics, "chancery_sync_blocks_applied_total") == SOURCE_HEIGHT


async def test_catch_up_stops_at_the_target_and_resumes_from_where_it_stopped(
    four: Consortium, source: Chain, tmp_path: Path, verifier: SignatureVerifier
) -> None:
    async with harness(four, source, tmp_path, verifier) as h:
        assert await h.client_sync.catch_up(13, [0]) == 13
        assert_same_chain(h.fresh, source, 13)
        assert await h.client_sync.catch_up(SOURCE_HEIGHT + 5, [1, 0]) == SOURCE_HEIGHT
        assert_same_chain(h.fresh, source)
        assert await h.client_sync.catch_up(None, [0]) == SOURCE_HEIGHT  # nothing more


def tamper_signature(export: dict[str, Any], source: Chain) -> None:
    tx = decode_envelope(export["txs"][0])
    other = new_member(source.consortium, 1, tx.body.timestamp)
    export["txs"][0] = encode_envelope(other.body_bytes, tx.signer, tx.signature)


def tamper_resigned_tx(export: dict[str, Any], source: Chain) -> None:
    tx = decode_envelope(export["txs"][0])
    export["txs"][0] = new_member(source.consortium, 2, tx.body.timestamp).envelope


def tamper_dropped_tx(export: dict[str, Any], source: Chain) -> None:
    del export["txs"][-1]


def tamper_forged_certificate(export: dict[str, Any], source: Chain) -> None:
    commit = export["commit"]
    impostors = Consortium(
        source.consortium.genesis,
        source.consortium.raw,
        {},
        {},
        tuple(key_from_label(f"mallory/{i}") for i in range(4)),
    )
    export["commit"] = impostors.certificate(commit["block_hash"], commit["height"]).to_wire()


def tamper_other_hash(export: dict[str, Any], source: Chain) -> None:
    height = export["commit"]["height"]
    export["commit"] = source.consortium.certificate(os.urandom(32), height).to_wire()


def tamper_short_quorum(export: dict[str, Any], source: Chain) -> None:
    commit = export["commit"]
    short = source.consortium.certificate(commit["block_hash"], commit["height"], [0, 3])
    export["commit"] = short.to_wire()


def tamper_wrong_height(export: dict[str, Any], source: Chain) -> None:
    [following] = read_sync_exports(source.store, TAMPERED_HEIGHT + 1, 1, SYNC_RESPONSE_BYTES_MAX)
    export.update(following)


def tamper_receipt(export: dict[str, Any], source: Chain) -> None:
    receipt = bytearray(export["receipts"][0])
    receipt[-1] ^= 1
    export["receipts"][0] = bytes(receipt)


def tamper_write_set(export: dict[str, Any], source: Chain) -> None:
    writes = {key: b"forged" for key, _ in msgpack.unpackb(export["writes"])}
    export["writes"] = encode_write_set(writes)


def tamper_resigned_same_body(export: dict[str, Any], source: Chain) -> None:
    """The certified body re-signed by another member: every signature verifies and no root
    covers the signer, so only corroboration or re-execution tells."""
    tx = decode_envelope(export["txs"][0])
    other = source.consortium.admins["taxoffice"]
    export["txs"][0] = encode_envelope(
        tx.body_bytes, other.public_key, other.sign(DOMAIN_TX, tx.body_bytes)
    )


def tamper_shape(export: dict[str, Any], source: Chain) -> None:
    export["txs"] = "not a list"


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (tamper_signature, "sync.bad_transaction"),
        (tamper_resigned_tx, "proposal.tx_root"),
        (tamper_dropped_tx, "proposal.tx_root"),
        (tamper_forged_certificate, "sync.bad_certificate"),
        (tamper_other_hash, "sync.bad_certificate"),
        (tamper_short_quorum, "sync.bad_certificate"),
        (tamper_wrong_height, "sync.wrong_height"),
        (tamper_receipt, "proposal.receipts_root"),
        (tamper_write_set, "proposal.state_root"),
        (tamper_resigned_same_body, "proposal.receipts_root"),
        (tamper_shape, "sync.malformed"),
    ],
    ids=lambda value: value if isinstance(value, str) else value.__name__.removeprefix("tamper_"),
)
async def test_a_peer_serving_a_bad_block_is_not_believed(
    four: Consortium,
    source: Chain,
    tmp_path: Path,
    verifier: SignatureVerifier,
    tamper: Tamper,
    code: str,
) -> None:
    liar = lying_server(source, tamper)
    async with harness(four, source, tmp_path, verifier, liar) as h:
        assert await h.client_sync.catch_up(None, [2, 0]) == SOURCE_HEIGHT
        assert_same_chain(h.fresh, source)
        metric = "chancery_sync_peers_disbelieved_total"
        assert sample(h.client.metrics, metric, peer="2", code=code) == 1
        dropped = h.client.transport.peer_status()[2]["frames_dropped"]
        assert dropped.get(code) == 1
        # The answer to a fetch cancelled by the refusal may still arrive: late, not bad.
        assert dropped.keys() <= {code, "late_response"}, dropped


async def test_a_liar_is_not_asked_again_within_the_same_catch_up(
    four: Consortium, source: Chain, tmp_path: Path, verifier: SignatureVerifier
) -> None:
    asked: list[int] = []
    lie = lying_server(source, tamper_other_hash)

    async def counting_liar(peer: int, request: dict[str, Any]) -> dict[str, Any]:
        asked.append(request["from"])
        return await lie(peer, request)

    async with harness(four, source, tmp_path, verifier, counting_liar) as h:
        # After the first round (the liar fails at TAMPERED_HEIGHT, validator 0 serves the
        # rest) a second round asks every believed peer for more: the liar is not asked.
        assert await h.client_sync.catch_up(None, [2, 0]) == SOURCE_HEIGHT
        assert SOURCE_HEIGHT + 1 not in asked
        # At most the two batches in flight while the bad one was applied (one verified,
        # one being fetched) went out after it.
        assert max(asked) <= TAMPERED_HEIGHT + 2 * BATCH_BLOCKS


async def test_a_silent_peer_is_skipped_without_being_disbelieved(
    four: Consortium, source: Chain, tmp_path: Path, verifier: SignatureVerifier
) -> None:
    async def silent(peer: int, request: dict[str, Any]) -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    async with harness(four, source, tmp_path, verifier, silent, request_timeout_s=0.2) as h:
        assert await h.client_sync.catch_up(None, [2, 0]) == SOURCE_HEIGHT
        assert_same_chain(h.fresh, source)
        metric = "chancery_sync_peers_disbelieved_total"
        assert sample(h.client.metrics, metric, peer="2", code="p2p.timeout") == 0


async def test_with_no_peer_to_ask_the_height_stays(
    four: Consortium, source: Chain, tmp_path: Path, verifier: SignatureVerifier
) -> None:
    async with harness(four, source, tmp_path, verifier) as h:
        assert await h.client_sync.catch_up(None, []) == 0
        assert await h.client_sync.catch_up(None, [3]) == 0  # validator 3 is not running


async def test_the_server_bounds_its_answer_by_count_and_bytes(
    four: Consortium, source: Chain, tmp_path: Path, verifier: SignatureVerifier
) -> None:
    async with harness(four, source, tmp_path, verifier) as h:
        server = h.server_sync
        request = {"type": "get_blocks", "from": 1, "limit": 10**6, "request_id": 1}
        everything = await server.serve_get_blocks(1, request)
        assert len(everything["blocks"]) == min(SOURCE_HEIGHT, SYNC_BATCH_BLOCKS_MAX)
        first_three = list(source.store.iter_blocks(1, 3))
        server.response_bytes_max = sum(
            export_size_bytes(block, source.store.get_write_set(block.height) or b"")
            for block in first_three
        )
        three = await server.serve_get_blocks(1, request)
        assert [b["header"] for b in three["blocks"]] == [b.header_bytes for b in first_three]
        server.response_bytes_max = 1  # a block bigger than the budget still goes alone
        assert len((await server.serve_get_blocks(1, request))["blocks"]) == 1
        beyond = {**request, "from": SOURCE_HEIGHT + 1}
        assert await server.serve_get_blocks(1, beyond) == {
            "type": "blocks",
            "height": SOURCE_HEIGHT,
            "blocks": [],
        }


def test_export_size_bounds_the_encoded_block(source: Chain) -> None:
    for height in (1, SOURCE_HEIGHT):
        block = source.store.get_block(height)
        write_set = source.store.get_write_set(height)
        assert block is not None and write_set is not None
        [export] = read_sync_exports(source.store, height, 1, SYNC_RESPONSE_BYTES_MAX)
        assert export == {**block.to_export(), "writes": write_set}
        encoded = msgpack.packb(export, use_bin_type=True)
        assert len(encoded) <= export_size_bytes(block, write_set)
        assert unpackb_strict(encoded) == export


@pytest.mark.parametrize(
    "request_fields",
    [
        {"from": 0, "limit": 1},
        {"from": 1, "limit": 0},
        {"from": "1", "limit": 1},
        {"from": True, "limit": 1},
        {"from": 1},
        {"from": 1, "limit": 1, "extra": 1},
    ],
)
async def test_a_bad_get_blocks_is_answered_with_an_error(
    four: Consortium,
    source: Chain,
    tmp_path: Path,
    verifier: SignatureVerifier,
    request_fields: dict[str, Any],
) -> None:
    async with harness(four, source, tmp_path, verifier) as h:
        assert await h.honest.transport.wait_until_connected({1}, WAIT_S)
        with pytest.raises(TransportError) as refused:
            await h.client.transport.request(0, {"type": "get_blocks", **request_fields}, WAIT_S)
        assert refused.value.remote_code == "p2p.bad_request"


def digest_witness(source: Chain, forge: bool = False) -> Callable[..., Any]:
    """A `get_envelope_digests` handler reporting `source`'s digests, or other ones."""

    async def report(peer: int, request: dict[str, Any]) -> dict[str, Any]:
        start, limit = parse_get_blocks(request)
        digests = source.store.get_envelope_digests(start, limit)
        if forge:
            digests = [os.urandom(32) for _ in digests]
        return {"type": "envelope_digests", "digests": digests}

    return report


def applied_by(h: Harness, path: str) -> float:
    return sample(h.client.metrics, "chancery_sync_blocks_applied_by_total", path=path)


async def test_blocks_a_witness_vouches_for_apply_from_their_write_sets(
    four: Consortium, source: Chain, tmp_path: Path, verifier: SignatureVerifier
) -> None:
    witness = digest_witness(source)
    async with harness(four, source, tmp_path, verifier, witness=witness) as h:
        assert await h.client_sync.catch_up(None, [0]) == SOURCE_HEIGHT
        assert_same_chain(h.fresh, source)
        assert applied_by(h, "write_set") == SOURCE_HEIGHT
        assert applied_by(h, "replay") == 0


async def test_without_a_witness_blocks_are_re_executed(
    four: Consortium, source: Chain, tmp_path: Path, verifier: SignatureVerifier
) -> None:
    async with harness(four, source, tmp_path, verifier) as h:
        assert await h.client_sync.catch_up(None, [0]) == SOURCE_HEIGHT
        assert_same_chain(h.fresh, source)
        assert applied_by(h, "replay") == SOURCE_HEIGHT
        assert applied_by(h, "write_set") == 0


async def test_a_witness_reporting_other_digests_only_costs_a_re_execution(
    four: Consortium, source: Chain, tmp_path: Path, verifier: SignatureVerifier
) -> None:
    witness = digest_witness(source, forge=True)
    async with harness(four, source, tmp_path, verifier, witness=witness) as h:
        assert await h.client_sync.catch_up(None, [0]) == SOURCE_HEIGHT
        assert_same_chain(h.fresh, source)
        assert applied_by(h, "replay") == SOURCE_HEIGHT
        metric = "chancery_sync_peers_disbelieved_total"
        refusals = [m for m in h.client.metrics.registry.collect() if m.name == metric[:-6]]
        assert all(not family.samples for family in refusals)


async def test_a_re_signed_body_is_refused_even_when_a_witness_is_asked(
    four: Consortium, source: Chain, tmp_path: Path, verifier: SignatureVerifier
) -> None:
    liar = lying_server(source, tamper_resigned_same_body)
    witness = digest_witness(source)
    async with harness(four, source, tmp_path, verifier, liar, witness=witness) as h:
        assert await h.client_sync.catch_up(None, [2, 0]) == SOURCE_HEIGHT
        assert_same_chain(h.fresh, source)
        for height in range(1, SOURCE_HEIGHT + 1):
            ours, theirs = h.fresh.store.get_block(height), source.store.get_block(height)
            assert ours is not None and theirs is not None
            assert ours.envelopes == theirs.envelopes
        metric = "chancery_sync_peers_disbelieved_total"
        assert sample(h.client.metrics, metric, peer="2", code="proposal.receipts_root") == 1


async def test_a_block_too_big_with_its_write_set_goes_bare_and_is_re_executed(
    four: Consortium, source: Chain, tmp_path: Path, verifier: SignatureVerifier
) -> None:
    blocks = list(source.store.iter_blocks(1, SOURCE_HEIGHT))
    bare = max(export_size_bytes(block, None) for block in blocks)
    full = min(
        export_size_bytes(block, source.store.get_write_set(block.height)) for block in blocks
    )
    assert bare < full
    witness = digest_witness(source)
    async with harness(four, source, tmp_path, verifier, witness=witness) as h:
        h.server_sync.response_bytes_max = bare  # every block alone is too big with writes
        [only] = read_sync_exports(source.store, 1, 10, bare)
        assert only["writes"] is None and only["receipts"] is None
        assert await h.client_sync.catch_up(None, [0]) == SOURCE_HEIGHT
        assert_same_chain(h.fresh, source)
        assert applied_by(h, "replay") == SOURCE_HEIGHT


def tamper_half_bare(export: dict[str, Any], source: Chain) -> None:
    export["writes"] = None  # receipts still there: neither a full nor a bare block


async def test_a_half_bare_block_is_malformed(
    four: Consortium, source: Chain, tmp_path: Path, verifier: SignatureVerifier
) -> None:
    liar = lying_server(source, tamper_half_bare)
    async with harness(four, source, tmp_path, verifier, liar) as h:
        assert await h.client_sync.catch_up(None, [2, 0]) == SOURCE_HEIGHT
        metric = "chancery_sync_peers_disbelieved_total"
        assert sample(h.client.metrics, metric, peer="2", code="sync.malformed") == 1
