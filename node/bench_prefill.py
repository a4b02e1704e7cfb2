"""Prefill a fresh benchmark network with an old chain, to measure whether age slows it.

Other ledgers degrade as their databases grow, so issue 5 asks for the figures on a chain
that already holds millions of transactions. Committing them through consensus would take
hours; instead this builds the chain offline, before the nodes start, the way the nodes
would have: `evidence.anchor` calls pre-signed by the organisations' member keys, each
block executed by the real ledger and certified with the commit votes of 2f+1 of the
network's own validator keys, then the data directory is copied to every node. The nodes
then start on a chain they can verify like any other.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Final

from consensus.quorum import quorum_size
from contracts.registry import builtin_registry
from node.bench_workload import presign
from node.block import CommitCertificate, sign_commit_vote
from node.config import load_config
from node.crypto import SigningKey, load_key_file
from node.genesis import load_genesis
from node.ledger import Ledger
from node.storage import ChainStore
from node.testnet import Testnet
from node.transaction import decode_envelope

PREFILL_BLOCK_TXS: Final = 1_000
PREFILL_SIGN_TXS: Final = 100_000  # signed per round, so memory does not grow with N
BLOCK_INTERVAL_MS: Final = 1_000
PROGRESS_EVERY_TXS: Final = 1_000_000


def _certify(
    keys: Sequence[SigningKey], chain_id: str, height: int, block_hash: bytes
) -> CommitCertificate:
    signatures = tuple(
        (index, sign_commit_vote(key, chain_id, height, block_hash))
        for index, key in enumerate(keys)
    )
    return CommitCertificate(block_hash, height, signatures)


def prefill(testnet: Testnet, transactions: int, processes: int) -> float:
    """Write `transactions` committed anchors into every node's (empty) data directory,
    the chain ending about now; returns the seconds it took. Call before the nodes start."""
    started_s = time.perf_counter()
    homes = [node.home for node in testnet.nodes]
    configs = [load_config(home) for home in homes]
    genesis = load_genesis(testnet.genesis_path)
    voters = [load_key_file(config.key_path) for config in configs]
    voters = voters[: quorum_size(len(voters))]
    signers = [load_key_file(org.member_key) for org in testnet.orgs]
    blocks = -(-transactions // PREFILL_BLOCK_TXS)
    # Timestamps run up to now so that the live run's blocks continue after them.
    first_ms = time.time_ns() // 1_000_000 - blocks * BLOCK_INTERVAL_MS
    store = ChainStore.open(configs[0].data_path, genesis)
    ledger = Ledger(genesis, store, builtin_registry())
    salt = os.urandom(16)
    try:
        done = 0
        while done < transactions:
            count = min(PREFILL_SIGN_TXS, transactions - done)
            timestamp_ms = first_ms + (done // PREFILL_BLOCK_TXS) * BLOCK_INTERVAL_MS
            # Every transaction of a round carries one timestamp; it must stay within the
            # genesis tx window of every block the round fills.
            signed = presign(
                "evidence",
                genesis.chain_id,
                signers,
                count,
                timestamp_ms,
                salt + done.to_bytes(8, "big"),
                processes,
            )
            for offset in range(0, count, PREFILL_BLOCK_TXS):
                txs = [decode_envelope(e) for _, e in signed[offset : offset + PREFILL_BLOCK_TXS]]
                height = store.height + 1
                clock_ms = first_ms + (height - 1) * BLOCK_INTERVAL_MS
                proposal = ledger.build_proposal(ledger.tip(), txs, clock_ms, 0, 0)
                ledger.commit(
                    proposal, _certify(voters, genesis.chain_id, height, proposal.block_hash)
                )
            done += count
            if done % PROGRESS_EVERY_TXS == 0 or done == transactions:
                elapsed_s = time.perf_counter() - started_s
                print(
                    f"  prefill: {done:,}/{transactions:,} transactions ({elapsed_s:.0f} s)",
                    file=sys.stderr,
                )
        # A chain that grew over months has had its compactions keep up; one written in
        # minutes has not. Settle it, so the run measures age and not a compaction debt.
        print("  prefill: compacting...", file=sys.stderr)
        store.compact()
    finally:
        store.close()
    for config in configs[1:]:
        shutil.rmtree(config.data_path, ignore_errors=True)
        shutil.copytree(configs[0].data_path, config.data_path)
    # The copies' dirty pages would otherwise be written back during the measured run,
    # slowing every synced commit.
    os.sync()
    return time.perf_counter() - started_s
