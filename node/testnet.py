"""A local demo network on one machine: keys, node homes, genesis and `network.json`.

`chancery testnet` and `chancery up` call `generate_testnet`; tests and tools read the
result back with `load_network`. Layout of the output directory DIR:

    DIR/genesis.json                      shared by every node (configs say ../genesis.json)
    DIR/network.json                      where everything is (paths relative to DIR)
    DIR/node{i}/config.toml, node.key     one home per validator
    DIR/orgs/{org}/admin.key, admin.pub   each organisation's admin key (PEM, 0600) and hex
    DIR/orgs/{org}/member.key, member.pub each organisation's member key

`network.json` is written last, so its presence means the directory is complete.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from contracts.membership import OrganizationSpec
from node.config import (
    CryptoSection,
    PeerAddress,
    StorageSection,
    config_to_toml,
    default_config,
)
from node.crypto import SigningKey, write_key_file
from node.genesis import CHAIN_ID_PATTERN, Validator, genesis_document, parse_genesis

GENESIS_FILE_NAME: Final = "genesis.json"
NETWORK_FILE_NAME: Final = "network.json"
LOCAL_HOST: Final = "127.0.0.1"
VALIDATORS_MAX: Final = 64
PORT_MAX: Final = 65535
# Homes and key folders hold private keys: owner-only, on top of the 0600 key files.
PRIVATE_DIR_MODE: Final = 0o700
# Co-located nodes get write buffers of 8/8, 9/8, 10/8 and 11/8 of the default, in turn.
WRITE_BUFFER_STAGGER_DIVISOR: Final = 8
WRITE_BUFFER_STAGGER_SIZES: Final = 4
# Co-located nodes verify in worker processes only with this many cores each.
CORES_PER_NODE_FOR_WORKER_PROCESSES: Final = 2


class TestnetError(Exception):
    """The output directory holds a network already, or network.json is unreadable."""

    __test__ = False  # not a pytest test class despite the name
    code = "testnet.invalid"


@dataclass(frozen=True)
class OrganizationTemplate:
    """One of the demo network's fixed organisations."""

    id: str
    name: str
    roles: tuple[str, ...]


# Node i belongs to ORGANIZATIONS[i % 4]; the order is part of the demo's layout.
ORGANIZATIONS: Final = (
    OrganizationTemplate("notary", "Notary Office", ("notary",)),
    OrganizationTemplate("taxoffice", "Tax Office", ("tax_office",)),
    OrganizationTemplate("enterprise-a", "Enterprise A", ("enterprise",)),
    OrganizationTemplate("enterprise-b", "Enterprise B", ("enterprise",)),
)


@dataclass(frozen=True)
class TestnetNode:
    """One validator of the network; `home` is DIR/node{i} (DIR as the caller gave it)."""

    __test__ = False

    index: int
    org: str
    home: Path
    api_url: str
    p2p: str
    public_key: bytes

    @property
    def api_port(self) -> int:
        port = urlsplit(self.api_url).port
        if port is None:
            raise TestnetError(f"node {self.index}: api_url {self.api_url!r} has no port")
        return port

    @property
    def p2p_port(self) -> int:
        return int(self.p2p.rsplit(":", 1)[1])

    @property
    def log_path(self) -> Path:
        """Where `chancery up` writes this node's output."""
        return self.home / "node.log"


@dataclass(frozen=True)
class TestnetOrganization:
    """One organisation with the paths of its admin and member key files."""

    __test__ = False

    id: str
    roles: tuple[str, ...]
    admin_key: Path
    member_key: Path


@dataclass(frozen=True)
class Testnet:
    """A generated network, as recorded in `network.json`."""

    __test__ = False

    directory: Path
    chain_id: str
    genesis_hash: bytes
    nodes: tuple[TestnetNode, ...]
    orgs: tuple[TestnetOrganization, ...]

    @property
    def genesis_path(self) -> Path:
        return self.directory / GENESIS_FILE_NAME

    def org(self, org_id: str) -> TestnetOrganization:
        """Raises: KeyError when the network has no such organisation."""
        for org in self.orgs:
            if org.id == org_id:
                return org
        raise KeyError(org_id)


def _check_request(
    out_dir: Path, validators: int, base_api_port: int, base_p2p_port: int, chain_id: str
) -> None:
    """Raises: TestnetError for a bad count, chain id or ports, or an existing network."""
    if not CHAIN_ID_PATTERN.fullmatch(chain_id):
        raise TestnetError(f"chain id {chain_id!r} must be 1..64 characters of [A-Za-z0-9._:-]")
    if not 1 <= validators <= VALIDATORS_MAX:
        raise TestnetError(f"validators must be 1..{VALIDATORS_MAX}, got {validators}")
    api_ports = range(base_api_port, base_api_port + validators)
    p2p_ports = range(base_p2p_port, base_p2p_port + validators)
    for name, ports in (("API", api_ports), ("p2p", p2p_ports)):
        if ports.start < 1 or ports.stop - 1 > PORT_MAX:
            raise TestnetError(
                f"{name} ports {ports.start}..{ports.stop - 1} are not all in 1..{PORT_MAX}"
            )
    if set(api_ports) & set(p2p_ports):
        raise TestnetError(
            f"API ports {api_ports.start}..{api_ports.stop - 1} overlap p2p ports "
            f"{p2p_ports.start}..{p2p_ports.stop - 1}"
        )
    for name in (GENESIS_FILE_NAME, NETWORK_FILE_NAME):
        if (out_dir / name).exists():
            raise TestnetError(
                f"{out_dir / name} exists already; refusing to overwrite a network "
                "(remove the directory or choose another)"
            )


def _write_new_file(path: Path, data: bytes) -> None:
    """Create `path` exclusively, so two generators racing on one directory cannot mix."""
    with path.open("xb") as handle:
        handle.write(data)


def _write_org_keys(out_dir: Path, template: OrganizationTemplate) -> OrganizationSpec:
    org_dir = out_dir / "orgs" / template.id
    org_dir.mkdir(parents=True, mode=PRIVATE_DIR_MODE, exist_ok=True)
    public_keys: dict[str, bytes] = {}
    for role in ("admin", "member"):
        key = SigningKey.generate()
        write_key_file(org_dir / f"{role}.key", key)
        _write_new_file(org_dir / f"{role}.pub", (key.public_key.hex() + "\n").encode())
        public_keys[role] = key.public_key
    return OrganizationSpec(
        id=template.id,
        name=template.name,
        roles=template.roles,
        admins=(public_keys["admin"],),
        members=(public_keys["member"],),
    )


def _staggered_storage(storage: StorageSection, index: int) -> StorageSection:
    """Node `index`'s LevelDB write buffers, an eighth larger per node (four sizes in turn).

    Nodes on one machine write the same blocks at the same rate; with equal write buffers
    all of them flush and compact in the same second and wait on the same disk for each
    synced commit (docs/performance.md). Unequal buffers spread the flushes over the
    cycle, as separate machines would.
    """
    parts = WRITE_BUFFER_STAGGER_DIVISOR + index % WRITE_BUFFER_STAGGER_SIZES
    return replace(
        storage,
        write_buffer_bytes=storage.write_buffer_bytes * parts // WRITE_BUFFER_STAGGER_DIVISOR,
        history_write_buffer_bytes=(
            storage.history_write_buffer_bytes * parts // WRITE_BUFFER_STAGGER_DIVISOR
        ),
    )


def _colocated_crypto(crypto: CryptoSection, validators: int) -> CryptoSection:
    """Threads instead of worker processes when the machine lacks the cores for them.

    Worker processes take verification off a node's GIL, which pays when the node has
    cores of its own: one validator on two cores committed 6,733-7,067 tx/s with them and
    4,817-5,367 with threads. With four nodes on two cores every core is already busy with
    a node, and each process round trip waits to be scheduled: 4 validators at 2,000 tx/s
    had p50 commit latency 480-620 ms with processes and 315-368 ms with threads
    (docs/performance.md, round 5).
    """
    cores = os.cpu_count() or 1
    if cores >= CORES_PER_NODE_FOR_WORKER_PROCESSES * validators:
        return crypto
    return replace(crypto, verify_in="threads")


def _write_node_home(
    out_dir: Path, index: int, validators: int, base_api_port: int, base_p2p_port: int
) -> bytes:
    """Create DIR/node{index} with its config and key; returns the node's public key."""
    home = out_dir / f"node{index}"
    home.mkdir(parents=True, mode=PRIVATE_DIR_MODE, exist_ok=True)
    peers = [
        PeerAddress(index=other, host=LOCAL_HOST, port=base_p2p_port + other)
        for other in range(validators)
        if other != index
    ]
    config = default_config(index, base_api_port + index, base_p2p_port + index, peers, home=home)
    config = replace(
        config,
        storage=_staggered_storage(config.storage, index),
        crypto=_colocated_crypto(config.crypto, validators),
    )
    _write_new_file(home / "config.toml", config_to_toml(config).encode())
    key = SigningKey.generate()
    write_key_file(config.key_path, key)
    return key.public_key


def generate_testnet(
    out_dir: Path,
    validators: int,
    *,
    base_api_port: int = 8600,
    base_p2p_port: int = 9600,
    chain_id: str = "chancery-local",
    genesis_time_ms: int | None = None,
    params: dict[str, int] | None = None,
) -> Testnet:
    """Write a complete local network into `out_dir` and return its description.

    `params` overrides genesis chain parameters (e.g. `max_block_txs` for tests).

    Node i listens on API port `base_api_port + i` and p2p port `base_p2p_port + i` on
    127.0.0.1, belongs to organisation `ORGANIZATIONS[i % 4]` and lists every other node
    as a peer. `genesis_time_ms` defaults to now.

    Raises:
        TestnetError: bad validator count, chain id or ports, or `out_dir` holds a network.
        KeyFileError: a key file exists already (a half-written directory).
    """
    out_dir = Path(out_dir)
    _check_request(out_dir, validators, base_api_port, base_p2p_port, chain_id)
    if genesis_time_ms is None:
        genesis_time_ms = time.time_ns() // 1_000_000
    out_dir.mkdir(parents=True, exist_ok=True)
    orgs = [_write_org_keys(out_dir, template) for template in ORGANIZATIONS]
    validator_list = [
        Validator(
            index,
            ORGANIZATIONS[index % len(ORGANIZATIONS)].id,
            _write_node_home(out_dir, index, validators, base_api_port, base_p2p_port),
        )
        for index in range(validators)
    ]
    genesis_bytes = genesis_document(chain_id, genesis_time_ms, orgs, validator_list, params)
    # Parse what we wrote: the generator must never hand nodes a genesis they would refuse.
    genesis = parse_genesis(genesis_bytes)
    _write_new_file(out_dir / GENESIS_FILE_NAME, genesis_bytes)
    network = _network_document(
        genesis.chain_id, genesis.genesis_hash, validator_list, base_api_port, base_p2p_port
    )
    _write_new_file(out_dir / NETWORK_FILE_NAME, (json.dumps(network, indent=2) + "\n").encode())
    return _parse_network(network, out_dir)


def _network_document(
    chain_id: str,
    genesis_hash: bytes,
    validators: list[Validator],
    base_api_port: int,
    base_p2p_port: int,
) -> dict[str, Any]:
    nodes = [
        {
            "index": v.index,
            "org": v.org,
            "home": f"node{v.index}",
            "api_url": f"http://{LOCAL_HOST}:{base_api_port + v.index}",
            "p2p": f"{LOCAL_HOST}:{base_p2p_port + v.index}",
            "public_key": v.public_key.hex(),
        }
        for v in validators
    ]
    orgs = [
        {
            "id": t.id,
            "roles": list(t.roles),
            "admin_key": f"orgs/{t.id}/admin.key",
            "member_key": f"orgs/{t.id}/member.key",
        }
        for t in ORGANIZATIONS
    ]
    return {"chain_id": chain_id, "genesis_hash": genesis_hash.hex(), "nodes": nodes, "orgs": orgs}


def _field(raw: Any, name: str, expected: type, where: str) -> Any:
    """`raw[name]` when `raw` is an object whose `name` has type `expected`.

    Raises:
        TestnetError: naming `where` (e.g. "nodes[2]") and the field.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get(name), expected):
        label = f"{where}.{name}" if where else name
        raise TestnetError(f"{label} is missing or not a {expected.__name__}")
    return raw[name]


def _parse_node(raw: Any, position: int, directory: Path) -> TestnetNode:
    where = f"nodes[{position}]"
    return TestnetNode(
        index=_field(raw, "index", int, where),
        org=_field(raw, "org", str, where),
        home=directory / _field(raw, "home", str, where),
        api_url=_field(raw, "api_url", str, where),
        p2p=_field(raw, "p2p", str, where),
        public_key=bytes.fromhex(_field(raw, "public_key", str, where)),
    )


def _parse_org(raw: Any, position: int, directory: Path) -> TestnetOrganization:
    where = f"orgs[{position}]"
    return TestnetOrganization(
        id=_field(raw, "id", str, where),
        roles=tuple(_field(raw, "roles", list, where)),
        admin_key=directory / _field(raw, "admin_key", str, where),
        member_key=directory / _field(raw, "member_key", str, where),
    )


def _parse_network(raw: Any, directory: Path) -> Testnet:
    """Raises: TestnetError naming the first field that is missing or of the wrong type."""
    try:
        chain_id = _field(raw, "chain_id", str, "")
        genesis_hash = bytes.fromhex(_field(raw, "genesis_hash", str, ""))
        nodes = tuple(
            _parse_node(node, i, directory) for i, node in enumerate(_field(raw, "nodes", list, ""))
        )
        orgs = tuple(
            _parse_org(org, i, directory) for i, org in enumerate(_field(raw, "orgs", list, ""))
        )
    except ValueError as exc:  # bytes.fromhex
        raise TestnetError(f"a key or hash is not hex ({exc})") from None
    return Testnet(directory, chain_id, genesis_hash, nodes, orgs)


def load_network(directory: Path) -> Testnet:
    """Read `directory/network.json` back; paths in the result are under `directory`.

    Raises:
        TestnetError: the file is missing, not JSON, or not of the shape `generate_testnet` writes.
    """
    directory = Path(directory)
    path = directory / NETWORK_FILE_NAME
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise TestnetError(f"{path}: not found (generate one with: chancery testnet)") from None
    except OSError as exc:
        raise TestnetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise TestnetError(f"{path}: not JSON ({exc})") from None
    try:
        return _parse_network(raw, directory)
    except TestnetError as exc:
        raise TestnetError(f"{path}: {exc}") from None
