"""`python -m node.bench_sync`: how fast an empty node catches up by state transfer.

Builds a source chain with the real ledger (4 genesis validators, every block certified
with the commit votes of 3 of them, `membership.add_member` transactions), then starts two
real transports on 127.0.0.1 - validator 0 serving the source chain from a process of its
own, as a peer would, validator 2 in that process as the witness that vouches for the
envelopes (f = 1), and validator 1 with an empty data directory in this process - and
times `BlockSync.catch_up`. `--no-witness` leaves validator 2 out, so every block is
re-executed instead. Prints blocks/s and tx/s and checks that the caught-up state
root equals the source's. Asserts nothing else.

`--workdir DIR` keeps the source chain in DIR and reuses it on the next run (keys are
derived from fixed labels, so the same genesis comes back).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from contracts.membership import KEYS_PER_ORG_MAX, OrganizationSpec
from contracts.registry import builtin_registry
from node.block import CommitCertificate, CommittedBlock, sign_commit_vote
from node.config import P2pSection, PeerAddress
from node.crypto import SignatureVerifier, SigningKey
from node.genesis import Genesis, Validator, genesis_document, parse_genesis
from node.ledger import Ledger
from node.metrics import NodeMetrics
from node.p2p.transport import PeerTransport
from node.storage import ChainStore
from node.sync import BlockSync
from node.transaction import Transaction, sign_transaction

CHAIN_ID: Final = "chancery-bench-sync"
GENESIS_TIME_MS: Final = 1_700_000_000_000
BLOCK_INTERVAL_MS: Final = 1_000
VALIDATORS: Final = 4
CERTIFICATE_SIGNERS: Final = (0, 1, 2)  # 2f+1 = 3 of 4
SERVER, CLIENT, WITNESS = 0, 1, 2
HOST: Final = "127.0.0.1"
CONNECT_TIMEOUT_S: Final = 10.0
SERVER_START_TIMEOUT_S: Final = 30.0
PROGRESS_EVERY_BLOCKS: Final = 1000
# An organisation holds at most KEYS_PER_ORG_MAX keys, its admin's included: the benchmark
# spreads its add_member calls over as many organisations as it needs.
ADDS_PER_ORG_MAX: Final = KEYS_PER_ORG_MAX - 1
# Enough organisations for 10,000 blocks of 100 txs; a fixed count keeps the genesis (and
# so a --workdir source chain) the same across runs of different lengths.
ORGS_MIN: Final = 101


def key_from_label(label: str) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(f"bench-sync/{label}".encode()).digest())


@dataclass(frozen=True)
class BenchNetwork:
    genesis: Genesis
    admins: tuple[SigningKey, ...]
    validators: tuple[SigningKey, ...]


def bench_network(transactions: int) -> BenchNetwork:
    """Four validators and enough organisations for `transactions` add_member calls."""
    org_count = max(ORGS_MIN, -(-transactions // ADDS_PER_ORG_MAX))
    admins = tuple(key_from_label(f"org-{n}/admin") for n in range(org_count))
    validators = tuple(key_from_label(f"validator/{i}") for i in range(VALIDATORS))
    orgs = [
        OrganizationSpec(f"org-{n}", f"Org {n}", ("enterprise",), (admin.public_key,), ())
        for n, admin in enumerate(admins)
    ]
    specs = [Validator(i, "org-0", key.public_key) for i, key in enumerate(validators)]
    raw = genesis_document(CHAIN_ID, GENESIS_TIME_MS, orgs, specs)
    return BenchNetwork(parse_genesis(raw), admins, validators)


def certify(network: BenchNetwork, block_hash: bytes, height: int) -> CommitCertificate:
    votes = tuple(
        (i, sign_commit_vote(network.validators[i], CHAIN_ID, height, block_hash))
        for i in CERTIFICATE_SIGNERS
    )
    return CommitCertificate(block_hash=block_hash, height=height, signatures=votes)


def block_transactions(
    network: BenchNetwork, height: int, count: int, timestamp_ms: int
) -> list[Transaction]:
    """`count` distinct add_member calls, timestamped with their block (inside the window)."""
    transactions = []
    for i in range(count):
        serial = (height - 1) * count + i
        transactions.append(
            sign_transaction(
                network.admins[serial // ADDS_PER_ORG_MAX],
                CHAIN_ID,
                "membership",
                "add_member",
                {"public_key": hashlib.sha256(b"member/%d" % serial).digest(), "name": "m"},
                serial,
                timestamp_ms,
            )
        )
    return transactions


def build_source(network: BenchNetwork, path: Path, blocks: int, txs_per_block: int) -> Ledger:
    """Extend (or reuse) the source chain at `path` up to `blocks` blocks."""
    store = ChainStore.open(path, network.genesis)
    ledger = Ledger(network.genesis, store, builtin_registry())
    started_s = time.perf_counter()
    while store.height < blocks:
        height = store.height + 1
        timestamp_ms = GENESIS_TIME_MS + BLOCK_INTERVAL_MS * height
        transactions = block_transactions(network, height, txs_per_block, timestamp_ms)
        proposal = ledger.build_proposal(ledger.tip(), transactions, timestamp_ms, 0, 0)
        ledger.commit(proposal, certify(network, proposal.block_hash, height))
        if height % PROGRESS_EVERY_BLOCKS == 0:
            elapsed_s = time.perf_counter() - started_s
            print(f"  source: {height}/{blocks} blocks ({elapsed_s:.0f} s)", file=sys.stderr)
    return ledger


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def transport_for(
    network: BenchNetwork, index: int, ports: dict[int, int], metrics: NodeMetrics
) -> PeerTransport:
    peers = tuple(PeerAddress(index=i, host=HOST, port=p) for i, p in ports.items() if i != index)
    config = P2pSection(host=HOST, port=ports[index], peers=peers)
    return PeerTransport(
        index, network.validators[index], network.genesis, config, metrics, lambda *_: None
    )


def run_server(
    transactions: int, source_path: Path, ports: dict[int, int], ready: Any, stop: Any
) -> None:
    """Validator 0 (and 2, the witness, if it has a port), in a process of their own as
    real peers are: serve the source chain."""
    network = bench_network(transactions)
    store = ChainStore.open(source_path, network.genesis)
    ledger = Ledger(network.genesis, store, builtin_registry())
    verifier = SignatureVerifier(1)

    async def serve() -> None:
        servers = [index for index in (SERVER, WITNESS) if index in ports]
        transports = [transport_for(network, index, ports, NodeMetrics()) for index in servers]
        syncs = [BlockSync(t, ledger, verifier, t.metrics) for t in transports]
        for transport in transports:
            await transport.start()
        ready.set()
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        for transport, sync in zip(transports, syncs, strict=True):
            await transport.stop()
            sync.close()

    try:
        asyncio.run(serve())
    finally:
        verifier.close()
        store.close()


@dataclass(frozen=True)
class CatchUpResult:
    blocks: int
    transactions: int
    seconds: float
    state_root: bytes
    replayed_blocks: int


async def time_catch_up(
    network: BenchNetwork,
    ports: dict[int, int],
    client_path: Path,
    verifier: SignatureVerifier,
    target_height: int,
) -> CatchUpResult:
    """Time validator 1's catch-up from validator 0 (already serving) over TCP."""
    store = ChainStore.open(client_path, network.genesis)
    client = Ledger(network.genesis, store, builtin_registry())
    transport = transport_for(network, CLIENT, ports, NodeMetrics())
    applied_txs = [0]

    def count_txs(blocks: Sequence[CommittedBlock]) -> None:
        applied_txs[0] += sum(len(block.tx_ids) for block in blocks)

    sync = BlockSync(transport, client, verifier, transport.metrics, on_applied=count_txs)
    try:
        await transport.start()
        servers = set(ports) - {CLIENT}
        if not await transport.wait_until_connected(servers, CONNECT_TIMEOUT_S):
            raise RuntimeError(f"validator 1 could not connect to {sorted(servers)}")
        started_s = time.perf_counter()
        height = await sync.catch_up(target_height, [SERVER])
        seconds = time.perf_counter() - started_s
    finally:
        await transport.stop()
        sync.close()
    metric = "chancery_sync_blocks_applied_by_total"
    replayed = transport.metrics.registry.get_sample_value(metric, {"path": "replay"}) or 0
    result = CatchUpResult(height, applied_txs[0], seconds, store.state_root, int(replayed))
    store.close()
    return result


def catch_up_from_server_process(
    blocks: int,
    txs_per_block: int,
    source_path: Path,
    client_path: Path,
    verifier: SignatureVerifier,
    witness: bool,
) -> CatchUpResult:
    transactions = blocks * txs_per_block
    network = bench_network(transactions)
    ports = {index: free_port() for index in (SERVER, CLIENT, WITNESS)[: 3 if witness else 2]}
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    server = context.Process(
        target=run_server, args=(transactions, source_path, ports, ready, stop), daemon=True
    )
    server.start()
    try:
        if not ready.wait(SERVER_START_TIMEOUT_S):
            raise RuntimeError("the serving validator did not start")
        return asyncio.run(time_catch_up(network, ports, client_path, verifier, blocks))
    finally:
        stop.set()
        server.join(SERVER_START_TIMEOUT_S)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m node.bench_sync", description=__doc__)
    parser.add_argument("--blocks", type=int, default=1000, help="source chain length")
    parser.add_argument("--txs-per-block", type=int, default=100)
    parser.add_argument("--workdir", type=Path, help="keep and reuse the source chain here")
    parser.add_argument("--verify-threads", type=int, default=0, help="0: one per core")
    parser.add_argument(
        "--no-witness", action="store_true", help="no second validator: re-execute every block"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="chancery-bench-sync-"))
    transactions = args.blocks * args.txs_per_block
    source_path, client_path = workdir / "source", workdir / "client"
    shutil.rmtree(client_path, ignore_errors=True)
    verifier = SignatureVerifier(args.verify_threads)
    try:
        print(f"building {args.blocks} blocks x {args.txs_per_block} txs in {workdir}")
        build_started_s = time.perf_counter()
        source = build_source(
            bench_network(transactions), source_path, args.blocks, args.txs_per_block
        )
        # A reused source may be longer than this run: compare at the height caught up to.
        summary = source.store.get_block_summary(args.blocks)
        source_root = summary[0].state_root if summary is not None else b""
        source.store.close()  # LevelDB allows one process: the server opens it
        print(f"source ready in {time.perf_counter() - build_started_s:.1f} s; catching up")
        result = catch_up_from_server_process(
            args.blocks, args.txs_per_block, source_path, client_path, verifier, not args.no_witness
        )
    finally:
        verifier.close()
        shutil.rmtree(workdir if args.workdir is None else client_path, ignore_errors=True)
    root = "matches" if result.state_root == source_root else "DIFFERS"
    print(
        f"caught up {result.blocks} blocks / {result.transactions} txs in {result.seconds:.2f} s:"
        f" {result.blocks / result.seconds:.0f} blocks/s,"
        f" {result.transactions / result.seconds:.0f} tx/s"
        f" ({verifier.workers} verify threads; {result.replayed_blocks} blocks re-executed;"
        f" state root {root})"
    )
    return 0 if result.state_root == source_root else 1


if __name__ == "__main__":
    sys.exit(main())
