"""The node's components, built once from its config and handed to the API and the PBFT driver.

Each component has one job; this module only wires them. The HTTP layer reads from these
services and never reaches around them to LevelDB or the consensus driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contracts.registry import builtin_registry
from contracts.runtime import ContractRegistry
from node.admission import Admission
from node.block import quorum_size
from node.config import NodeConfig
from node.crypto import SignatureVerifier, SigningKey, load_key_file
from node.genesis import Genesis, load_genesis
from node.ledger import Ledger
from node.mempool import Mempool
from node.metrics import NodeMetrics
from node.notify import CommitNotifier
from node.storage import ChainStore
from node.sync import SYNC_RESPONSE_HEADROOM_BYTES


class NodeSetupError(Exception):
    """The node cannot start with this home directory; the message says what to fix."""

    code = "node.setup"


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    index: int
    org: str
    public_key: bytes


@dataclass
class ConsensusStatus:
    """What the ordering layer reports to `/v1/status`, `/v1/ready` and metrics.

    Owned and updated by the PBFT driver (node/pbft.py).
    """

    view: int = 0
    primary: int = 0
    syncing: bool = False
    connected_peers: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class NodeServices:
    config: NodeConfig
    genesis: Genesis
    identity: NodeIdentity
    key: SigningKey
    registry: ContractRegistry
    store: ChainStore
    ledger: Ledger
    mempool: Mempool
    admission: Admission
    notifier: CommitNotifier
    verifier: SignatureVerifier
    metrics: NodeMetrics
    consensus: ConsensusStatus

    def has_quorum(self) -> bool:
        """This node plus its connected validator peers reach 2f+1."""
        reachable = 1 + len(self.consensus.connected_peers)
        return reachable >= quorum_size(len(self.genesis.validators))

    def close(self) -> None:
        self.notifier.close()
        self.verifier.close()
        self.store.close()


def _identity(config: NodeConfig, genesis: Genesis, key: SigningKey) -> NodeIdentity:
    index = config.node.index
    if index >= len(genesis.validators):
        raise NodeSetupError(
            f"[node].index {index} names no validator (genesis has {len(genesis.validators)})"
        )
    validator = genesis.validators[index]
    if validator.public_key != key.public_key:
        raise NodeSetupError(
            f"{config.key_path}: key is not validator {index}'s key in the genesis file"
        )
    return NodeIdentity(index, validator.org, key.public_key)


@dataclass(frozen=True, slots=True)
class NodeKeys:
    """The node's genesis and validator key, checked against each other."""

    genesis: Genesis
    key: SigningKey
    identity: NodeIdentity


def load_node_keys(config: NodeConfig) -> NodeKeys:
    """Read and check genesis and the validator key: cheap, local, done before anything else.

    Raises:
        NodeSetupError, GenesisError, KeyFileError: with a message to act on.
    """
    genesis = load_genesis(config.genesis_path)
    key = load_key_file(config.key_path)
    return NodeKeys(genesis, key, _identity(config, genesis, key))


def check_frame_fits_blocks(frame_bytes_max: int, max_block_bytes: int) -> None:
    """A peer must be able to send any block this chain allows in one frame (a proposal, or
    a bare block in state transfer).

    Raises:
        NodeSetupError: `p2p.frame_bytes_max` is too small for the genesis `max_block_bytes`.
    """
    needed = max_block_bytes + SYNC_RESPONSE_HEADROOM_BYTES
    if frame_bytes_max < needed:
        raise NodeSetupError(
            f"p2p.frame_bytes_max = {frame_bytes_max} cannot carry a block of the genesis"
            f" max_block_bytes ({max_block_bytes}); set it to at least {needed}"
        )


def build_services(config: NodeConfig, keys: NodeKeys | None = None) -> NodeServices:
    """Open the store and wire the components (loading genesis and key unless given).

    Raises:
        NodeSetupError, GenesisError, KeyFileError, StorageError: with a message to act on.
    """
    keys = keys or load_node_keys(config)
    genesis, key, identity = keys.genesis, keys.key, keys.identity
    check_frame_fits_blocks(config.p2p.frame_bytes_max, genesis.params.max_block_bytes)
    registry = builtin_registry()
    storage = config.storage
    store = ChainStore.open(
        config.data_path,
        genesis,
        cache_bytes=storage.cache_bytes,
        write_buffer_bytes=storage.write_buffer_bytes,
        max_open_files=storage.max_open_files,
        table_bytes=storage.table_bytes,
        history_write_buffer_bytes=storage.history_write_buffer_bytes,
        separated_value_bytes=storage.separated_value_bytes,
    )
    mempool = Mempool(config.mempool.txs_max, config.mempool.bytes_max)
    verifier = SignatureVerifier(
        config.crypto.verify_threads,
        config.crypto.verify_chunk_size,
        in_processes=config.crypto.verify_in == "processes",
    )
    admission = Admission(
        genesis.chain_id, store, mempool, registry, verifier, config.mempool.envelope_bytes_max
    )
    notifier = CommitNotifier(
        config.api.commit_waiters_max,
        config.api.sse_subscribers_max,
        config.api.sse_queue_events_max,
    )
    metrics = NodeMetrics()
    metrics.verify_workers_cpu.set_function(lambda: verifier.worker_cpu_seconds)
    metrics.block_height.set(store.height)
    return NodeServices(
        config=config,
        genesis=genesis,
        identity=identity,
        key=key,
        registry=registry,
        store=store,
        ledger=Ledger(genesis, store, registry),
        mempool=mempool,
        admission=admission,
        notifier=notifier,
        verifier=verifier,
        metrics=metrics,
        consensus=ConsensusStatus(),
    )
