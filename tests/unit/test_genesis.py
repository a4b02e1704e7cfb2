"""Tests for node.genesis: strict parsing of genesis.json and the genesis block it defines."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import pytest

from contracts.membership import lookup_signer
from node.block import BlockHeader
from node.genesis import DEFAULT_PARAMS, GenesisError, load_genesis, parse_genesis

if TYPE_CHECKING:
    from tests.unit.conftest import Consortium

STATE_DOMAIN = b"chancery/state/v1\n"


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_valid_document_parses(consortium: Consortium) -> None:
    genesis = consortium.genesis
    assert genesis.raw == consortium.raw
    assert genesis.chain_id == "chancery-test"
    assert genesis.genesis_time == 1_700_000_000_000
    assert [org.id for org in genesis.orgs] == [
        "notary",
        "taxoffice",
        "enterprise-a",
        "enterprise-b",
    ]
    taxoffice = genesis.orgs[1]
    assert taxoffice.roles == ("tax_office",)
    assert taxoffice.admins == (consortium.admins["taxoffice"].public_key,)
    assert taxoffice.members == (consortium.members["taxoffice"].public_key,)
    assert [(v.index, v.org) for v in genesis.validators] == [(0, "notary")]
    assert genesis.validator_keys == (consortium.validators[0].public_key,)
    assert genesis.params.tx_window_ms == 600_000
    assert genesis.params.max_block_txs == 10_000
    assert genesis.params.max_block_bytes == 8 * 1024 * 1024
    assert genesis.params.max_clock_drift_ms == 5_000


def test_params_default_when_omitted_and_override_when_given(consortium: Consortium) -> None:
    doc = json.loads(consortium.raw)
    doc["params"] = {"tx_window_ms": 1_000}
    genesis = parse_genesis(json.dumps(doc).encode())
    assert genesis.params.tx_window_ms == 1_000
    assert genesis.params.max_block_txs == DEFAULT_PARAMS["max_block_txs"]


def test_genesis_block(consortium: Consortium) -> None:
    genesis = consortium.genesis
    block = genesis.genesis_block()
    header = block.header
    assert header.height == 0
    assert block.height == 0
    assert header.prev_hash == bytes(32)
    assert header.tx_root == sha256(b"")
    assert header.receipts_root == sha256(b"")
    assert header.timestamp == genesis.genesis_time
    assert header.chain_id == "chancery-test"
    assert (header.version, header.view, header.proposer) == (1, 0, 0)
    assert header.validators_hash == sha256(b"\x91\xc4\x20" + consortium.validators[0].public_key)
    # state_root_0 = SHA-256(domain || 32 zero bytes || SHA-256(W_0)), W_0 = genesis writes.
    writes = genesis.genesis_writes()
    w0 = msgpack.packb([[key, writes[key]] for key in sorted(writes)], use_bin_type=True)
    assert header.state_root == sha256(STATE_DOMAIN + bytes(32) + sha256(w0))
    assert block.header_bytes == header.encode()
    assert BlockHeader.decode(block.header_bytes) == header
    assert block.block_hash == sha256(block.header_bytes)
    assert genesis.genesis_hash == block.block_hash
    assert (block.tx_ids, block.envelopes, block.receipts) == ((), (), ())
    assert block.commit.height == 0
    assert block.commit.block_hash == block.block_hash
    assert block.commit.signatures == ()


def test_genesis_writes_register_every_admin_and_member(consortium: Consortium) -> None:
    state = consortium.genesis.genesis_writes()
    assert all(isinstance(key, bytes) for key in state)
    assert {key for key in state if not key.startswith(b"membership/")} == {b"chain/params"}
    for org, key in consortium.admins.items():
        signer = lookup_signer(state, key.public_key)
        assert signer is not None
        assert (signer.org, signer.is_admin) == (org, True)
    for org, key in consortium.members.items():
        signer = lookup_signer(state, key.public_key)
        assert signer is not None
        assert (signer.org, signer.is_admin) == (org, False)
    notary = lookup_signer(state, consortium.members["notary"].public_key)
    assert notary is not None
    assert notary.roles == frozenset({"notary"})
    assert lookup_signer(state, consortium.validators[0].public_key) is None


def test_genesis_hash_stable_for_the_same_bytes(consortium: Consortium) -> None:
    again = parse_genesis(consortium.raw)
    assert again.genesis_hash == consortium.genesis.genesis_hash
    assert again.genesis_block() == consortium.genesis.genesis_block()


def test_genesis_hash_differs_per_chain(make_consortium: Callable[..., Consortium]) -> None:
    base = make_consortium().genesis.genesis_hash
    assert make_consortium(chain_id="chancery-other").genesis.genesis_hash != base

    assert make_consortium(genesis_time=1_700_000_000_001).genesis.genesis_hash != base
    assert make_consortium(validator_count=2).genesis.genesis_hash != base


def test_genesis_hash_pins_the_params(consortium: Consortium) -> None:
    document = json.loads(consortium.raw)
    document["params"]["tx_window_ms"] += 1
    other = parse_genesis(json.dumps(document).encode())
    assert other.params.tx_window_ms == consortium.genesis.params.tx_window_ms + 1
    assert other.genesis_hash != consortium.genesis.genesis_hash


def test_load_genesis_from_a_file(tmp_path: Path, consortium: Consortium) -> None:
    path = tmp_path / "genesis.json"
    path.write_bytes(consortium.raw)
    assert load_genesis(path).genesis_hash == consortium.genesis.genesis_hash
    with pytest.raises(GenesisError, match="cannot read"):
        load_genesis(tmp_path / "missing.json")
    path.write_text("{}")
    with pytest.raises(GenesisError, match=r"genesis\.json"):
        load_genesis(path)


# --- refusals -------------------------------------------------------------------------------


def refusal(consortium: Consortium, mutate: Callable[[dict[str, Any]], None]) -> str:
    doc = copy.deepcopy(json.loads(consortium.raw))
    mutate(doc)
    with pytest.raises(GenesisError) as info:
        parse_genesis(json.dumps(doc).encode())
    assert info.value.code == "genesis.invalid"
    return str(info.value)


def _other_key(doc: dict[str, Any]) -> str:
    return doc["orgs"][0]["admins"][0]


CASES: dict[str, tuple[Callable[[dict[str, Any]], None], list[str]]] = {
    "unknown top-level field": (lambda d: d.update(extra_field=1), ["extra_field"]),
    "missing field": (lambda d: d.pop("params"), ["params"]),
    "bad chain_id": (lambda d: d.update(chain_id="bad chain!"), ["chain_id"]),
    "genesis_time bool": (lambda d: d.update(genesis_time=True), ["genesis_time"]),
    "genesis_time negative": (lambda d: d.update(genesis_time=-1), ["genesis_time"]),
    "genesis_time float": (lambda d: d.update(genesis_time=1.5), ["genesis_time"]),
    "orgs empty": (lambda d: d.update(orgs=[]), ["orgs"]),
    "org not an object": (lambda d: d["orgs"].__setitem__(1, ["x"]), ["orgs[1]"]),
    "org missing field": (lambda d: d["orgs"][2].pop("name"), ["orgs[2]", "name"]),
    "org bad id": (lambda d: d["orgs"][0].update(id="no spaces"), ["orgs[0].id"]),
    "duplicate org ids": (
        lambda d: d["orgs"][1].update(id="notary"),
        ["organisation ids"],
    ),
    "bad key hex": (
        lambda d: d["orgs"][0]["admins"].__setitem__(0, "zz" * 32),
        ["orgs[0].admins", "hex"],
    ),
    "short key": (
        lambda d: d["orgs"][3]["members"].__setitem__(0, "ab" * 31),
        ["orgs[3].members", "64 hex"],
    ),
    "key not a string": (lambda d: d["orgs"][1]["admins"].__setitem__(0, 5), ["orgs[1].admins"]),
    "admins not a list": (lambda d: d["orgs"][1].update(admins="ab" * 32), ["orgs[1].admins"]),
    "duplicate keys across orgs": (
        lambda d: d["orgs"][2]["members"].append(_other_key(d)),
        ["one organisation"],
    ),
    "duplicate key within an org": (
        lambda d: d["orgs"][0]["members"].append(_other_key(d)),
        ["one organisation"],
    ),
    "unknown role": (lambda d: d["orgs"][1].update(roles=["king"]), ["orgs[1].roles"]),
    "role not a string": (lambda d: d["orgs"][1].update(roles=[{"r": 1}]), ["orgs[1].roles"]),
    "validators empty": (lambda d: d.update(validators=[]), ["validators"]),
    "validator index mismatch": (
        lambda d: d["validators"][0].update(index=1),
        ["validators[0].index"],
    ),
    "validator index not an int": (
        lambda d: d["validators"][0].update(index="0"),
        ["validators[0].index"],
    ),
    "validator org unknown": (
        lambda d: d["validators"][0].update(org="nobody"),
        ["validators[0].org"],
    ),
    "validator org not a string": (
        lambda d: d["validators"][0].update(org=["notary"]),
        ["validators[0].org"],
    ),
    "validator bad key": (
        lambda d: d["validators"][0].update(public_key="00"),
        ["validators[0]", "64 hex"],
    ),
    "validator extra field": (
        lambda d: d["validators"][0].update(weight=1),
        ["validators[0]", "exactly"],
    ),
    "duplicate validator keys": (
        lambda d: d["validators"].append({**d["validators"][0], "index": 1}),
        ["validator keys"],
    ),
    "unknown param": (lambda d: d["params"].update(block_gas=5), ["params", "block_gas"]),
    "non-integer param": (
        lambda d: d["params"].update(tx_window_ms="600000"),
        ["params.tx_window_ms"],
    ),
    "float param": (lambda d: d["params"].update(max_block_txs=1.5), ["params.max_block_txs"]),
    "bool param": (lambda d: d["params"].update(max_block_bytes=True), ["params.max_block_bytes"]),
    "zero param": (lambda d: d["params"].update(max_clock_drift_ms=0), ["params.max_clock_drift"]),
    "params not an object": (lambda d: d.update(params=[1]), ["params"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_document_names_the_field(consortium: Consortium, case: str) -> None:
    mutate, fragments = CASES[case]
    message = refusal(consortium, mutate)
    for fragment in fragments:
        assert fragment in message, (case, message)


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b"[]", b"null", b'"genesis"'])
def test_not_a_json_object(raw: bytes) -> None:
    with pytest.raises(GenesisError):
        parse_genesis(raw)
