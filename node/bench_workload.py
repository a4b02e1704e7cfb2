"""Benchmark workloads: what the transactions call, pre-signed before any timing starts.

Signing costs about as much as verifying, so a benchmark that signed as it submitted
would measure its own client. Every transaction is signed up front, in worker processes
(one per core), by the member keys of every organisation in turn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Final

from cryptography.hazmat.primitives import serialization

from node.crypto import SigningKey
from node.transaction import sign_transaction

BATCH_ANCHOR_EVERY: Final = 10  # `mixed`: one anchor_batch per this many calls
BATCH_ANCHOR_COUNT: Final = 1_000  # items a benchmark anchor_batch claims to cover
SIGN_CHUNK_TXS: Final = 5_000  # transactions per job handed to a signing process
LOTTERY_ENTRIES_PER_CALL: Final = 10  # `lottery`: participants each add_participants lists

Call = tuple[str, str, dict[str, Any]]  # contract, method, args


def _digest(salt: bytes, index: int) -> bytes:
    return hashlib.sha256(salt + index.to_bytes(8, "big")).digest()


def evidence_call(salt: bytes, index: int) -> Call:
    """`evidence.anchor` of a fresh 32-byte hash (never a duplicate)."""
    return "evidence", "anchor", {"hash": _digest(salt, index), "kind": "bench"}


def mixed_call(salt: bytes, index: int) -> Call:
    """Mostly single anchors, every tenth call an `anchor_batch` of a 1,000-item root."""
    if index % BATCH_ANCHOR_EVERY == 0:
        args = {"count": BATCH_ANCHOR_COUNT, "kind": "bench-batch", "root": _digest(salt, index)}
        return "evidence", "anchor_batch", args
    return evidence_call(salt, index)


def lottery_project(salt: bytes) -> str:
    """The project a `lottery` run adds to (created and approved by node/bench.py)."""
    return f"bench-{salt.hex()[:16]}"


def lottery_call(salt: bytes, index: int) -> Call:
    """`lottery.add_participants` of LOTTERY_ENTRIES_PER_CALL fresh entries to one open
    project: a sponsor importing its list in small chunks, every call growing the list."""
    first = index * LOTTERY_ENTRIES_PER_CALL
    entries = [_digest(salt, first + n) for n in range(LOTTERY_ENTRIES_PER_CALL)]
    return "lottery", "add_participants", {"project_id": lottery_project(salt), "entries": entries}


WORKLOADS: Final[dict[str, Callable[[bytes, int], Call]]] = {
    "evidence": evidence_call,
    "mixed": mixed_call,
    "lottery": lottery_call,
}
# Workloads that need a setup step on the network first (node/bench.py runs it), and so
# are signed by their own code rather than `presign`.
SETUP_WORKLOADS: Final = ("invoice",)


class WorkloadError(Exception):
    """A workload that cannot run (unknown, or its contract does not exist yet)."""


@dataclass(frozen=True)
class SignJob:
    """One slice of the workload for one signing process (picklable)."""

    workload: str
    chain_id: str
    seeds: tuple[bytes, ...]
    salt: bytes
    first: int
    count: int
    timestamp_ms: int


def sign_slice(job: SignJob) -> list[tuple[bytes, bytes]]:
    """`(tx_id, envelope)` of calls `first .. first+count-1`, signers taken in turn."""
    make_call = WORKLOADS[job.workload]
    keys = [SigningKey.from_seed(seed) for seed in job.seeds]
    signed = []
    for index in range(job.first, job.first + job.count):
        contract, method, args = make_call(job.salt, index)
        key = keys[index % len(keys)]
        tx = sign_transaction(key, job.chain_id, contract, method, args, index, job.timestamp_ms)
        signed.append((tx.tx_id, tx.envelope))
    return signed


def seed_of(key: SigningKey) -> bytes:
    return key.private_key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def presign(
    workload: str,
    chain_id: str,
    signers: Sequence[SigningKey],
    count: int,
    timestamp_ms: int,
    salt: bytes,
    processes: int,
) -> list[tuple[bytes, bytes]]:
    """Sign `count` calls of `workload` on `processes` worker processes, in order.

    Raises:
        WorkloadError: an unknown workload, or one whose contract does not exist yet.
    """
    if workload in SETUP_WORKLOADS:
        raise WorkloadError(f"the {workload} workload is set up and signed by chancery bench")
    if workload not in WORKLOADS:
        known = sorted([*WORKLOADS, *SETUP_WORKLOADS])
        raise WorkloadError(f"unknown workload {workload!r}; choose from {known}")
    seeds = tuple(seed_of(key) for key in signers)
    jobs = [
        SignJob(
            workload, chain_id, seeds, salt, first, min(SIGN_CHUNK_TXS, count - first), timestamp_ms
        )
        for first in range(0, count, SIGN_CHUNK_TXS)
    ]
    with ProcessPoolExecutor(max_workers=processes, mp_context=get_context("spawn")) as pool:
        return [pair for chunk in pool.map(sign_slice, jobs) for pair in chunk]
