"""Tests for node.testnet: the files a local network is made of, and reading them back."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from node.config import PeerAddress, load_config
from node.crypto import load_key_file
from node.genesis import load_genesis
from node.storage import HISTORY_WRITE_BUFFER_BYTES, LEVELDB_WRITE_BUFFER_BYTES
from node.testnet import ORGANIZATIONS, TestnetError, generate_testnet, load_network

GENESIS_TIME_MS = 1_700_000_000_000


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def network_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "net"
    generate_testnet(directory, 4, genesis_time_ms=GENESIS_TIME_MS)
    return directory


def test_every_key_file_is_private_and_has_its_public_hex_beside_it(network_dir: Path) -> None:
    key_files = [network_dir / f"node{i}" / "node.key" for i in range(4)]
    for org in ("notary", "taxoffice", "enterprise-a", "enterprise-b"):
        for role in ("admin", "member"):
            key_path = network_dir / "orgs" / org / f"{role}.key"
            key_files.append(key_path)
            public_hex = (network_dir / "orgs" / org / f"{role}.pub").read_text().strip()
            assert load_key_file(key_path).public_key.hex() == public_hex
    for key_path in key_files:
        assert mode(key_path) == 0o600, key_path
        assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_genesis_names_four_organisations_with_their_keys(network_dir: Path) -> None:
    genesis = load_genesis(network_dir / "genesis.json")
    assert genesis.chain_id == "chancery-local"
    assert genesis.genesis_time == GENESIS_TIME_MS
    assert [(org.id, org.roles) for org in genesis.orgs] == [
        ("notary", ("notary",)),
        ("taxoffice", ("tax_office",)),
        ("enterprise-a", ("enterprise",)),
        ("enterprise-b", ("enterprise",)),
    ]
    assert all(org.name for org in genesis.orgs)
    for org in genesis.orgs:
        org_dir = network_dir / "orgs" / org.id
        assert org.admins == (load_key_file(org_dir / "admin.key").public_key,)
        assert org.members == (load_key_file(org_dir / "member.key").public_key,)


def test_validators_are_the_node_keys_assigned_to_orgs_round_robin(tmp_path: Path) -> None:
    generate_testnet(tmp_path, 5)
    genesis = load_genesis(tmp_path / "genesis.json")
    assert [v.org for v in genesis.validators] == [
        "notary",
        "taxoffice",
        "enterprise-a",
        "enterprise-b",
        "notary",
    ]
    for validator in genesis.validators:
        node_key = load_key_file(tmp_path / f"node{validator.index}" / "node.key")
        assert validator.public_key == node_key.public_key


def test_node_configs_load_with_their_ports_peers_and_shared_genesis(network_dir: Path) -> None:
    for index in range(4):
        config = load_config(network_dir / f"node{index}", environ={})
        assert config.node.index == index
        assert config.api.port == 8600 + index
        assert config.p2p.port == 9600 + index
        assert config.p2p.peers == tuple(
            PeerAddress(other, "127.0.0.1", 9600 + other) for other in range(4) if other != index
        )
        assert config.genesis_path.resolve() == (network_dir / "genesis.json").resolve()
        assert load_key_file(config.key_path).public_key is not None


def test_co_located_nodes_get_unequal_write_buffers(tmp_path: Path) -> None:
    """So that nodes sharing a disk do not all flush in the same second."""
    generate_testnet(tmp_path / "net", 5, genesis_time_ms=GENESIS_TIME_MS)
    storage = [load_config(tmp_path / "net" / f"node{i}", environ={}).storage for i in range(5)]
    eighths = [8 + index % 4 for index in range(5)]
    assert [s.write_buffer_bytes for s in storage] == [
        LEVELDB_WRITE_BUFFER_BYTES * n // 8 for n in eighths
    ]
    assert [s.history_write_buffer_bytes for s in storage] == [
        HISTORY_WRITE_BUFFER_BYTES * n // 8 for n in eighths
    ]


def test_network_json_records_where_everything_is(network_dir: Path) -> None:
    raw = json.loads((network_dir / "network.json").read_text())
    genesis = load_genesis(network_dir / "genesis.json")
    assert raw["chain_id"] == "chancery-local"
    assert raw["genesis_hash"] == genesis.genesis_hash.hex()
    assert raw["nodes"][2] == {
        "index": 2,
        "org": "enterprise-a",
        "home": "node2",
        "api_url": "http://127.0.0.1:8602",
        "p2p": "127.0.0.1:9602",
        "public_key": genesis.validators[2].public_key.hex(),
    }
    assert raw["orgs"][1] == {
        "id": "taxoffice",
        "roles": ["tax_office"],
        "admin_key": "orgs/taxoffice/admin.key",
        "member_key": "orgs/taxoffice/member.key",
    }
    assert [org["id"] for org in raw["orgs"]] == [template.id for template in ORGANIZATIONS]


def test_load_network_gives_back_what_generate_returned(tmp_path: Path) -> None:
    generated = generate_testnet(
        tmp_path, 2, base_api_port=18600, base_p2p_port=19600, chain_id="demo-chain"
    )
    loaded = load_network(tmp_path)
    assert loaded == generated
    assert loaded.nodes[1].api_port == 18601
    assert loaded.nodes[1].p2p_port == 19601
    assert loaded.nodes[1].home == tmp_path / "node1"
    assert loaded.org("enterprise-b").member_key == tmp_path / "orgs/enterprise-b/member.key"
    assert load_genesis(loaded.genesis_path).genesis_hash == loaded.genesis_hash


def test_refuses_a_directory_that_holds_a_genesis_file(tmp_path: Path) -> None:
    (tmp_path / "genesis.json").write_text("{}")
    with pytest.raises(TestnetError, match=r"genesis\.json exists already"):
        generate_testnet(tmp_path, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["genesis.json"]


def test_a_second_generation_leaves_the_first_network_untouched(network_dir: Path) -> None:
    before = (network_dir / "network.json").read_bytes()
    with pytest.raises(TestnetError, match="refusing to overwrite"):
        generate_testnet(network_dir, 4)
    assert (network_dir / "network.json").read_bytes() == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"validators": 0}, "validators must be"),
        ({"validators": 2, "base_api_port": 9599}, "overlap"),
        ({"validators": 2, "base_api_port": 65535}, "not all in"),
        ({"validators": 1, "chain_id": "bad chain"}, "chain id"),
    ],
)
def test_refuses_bad_requests_before_writing_anything(
    tmp_path: Path, kwargs: dict, message: str
) -> None:
    with pytest.raises(TestnetError, match=message):
        generate_testnet(tmp_path / "net", **kwargs)
    assert not (tmp_path / "net").exists()


def test_load_network_names_the_file_when_missing_or_malformed(tmp_path: Path) -> None:
    with pytest.raises(TestnetError, match=r"network\.json: not found"):
        load_network(tmp_path)
    (tmp_path / "network.json").write_text("{not json")
    with pytest.raises(TestnetError, match="not JSON"):
        load_network(tmp_path)
    (tmp_path / "network.json").write_text(
        json.dumps({"chain_id": "c", "genesis_hash": "00", "nodes": [{"index": 0}], "orgs": []})
    )
    with pytest.raises(TestnetError, match=r"nodes\[0\]\.org is missing"):
        load_network(tmp_path)


@pytest.mark.parametrize(
    ("cores", "validators", "expected"),
    [(2, 1, "processes"), (2, 4, "threads"), (16, 4, "processes"), (8, 7, "threads")],
)
def test_co_located_nodes_verify_in_processes_only_with_cores_to_spare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cores: int, validators: int, expected: str
) -> None:
    """Worker processes need about two cores per node; fewer, and their round trips wait
    for the scheduler (docs/performance.md)."""
    monkeypatch.setattr("node.testnet.os.cpu_count", lambda: cores)
    generate_testnet(tmp_path / "net", validators, genesis_time_ms=GENESIS_TIME_MS)
    modes = {
        load_config(tmp_path / "net" / f"node{index}", environ={}).crypto.verify_in
        for index in range(validators)
    }
    assert modes == {expected}
