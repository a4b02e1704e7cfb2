"""The benchmark's parts that can be wrong without being slow: workloads and probes.

(How fast things are is what the benchmark prints, not what tests assert.)
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from contracts import lottery
from contracts.registry import builtin_registry
from node import bench, bench_probe
from node.bench import TIMELINE_POINTS_MAX, LoadState, _thinned, _timeline
from node.bench import main as bench_main
from node.bench_invoice import BUYER, ISSUER, TAX_OFFICE, SigningJob, sign_chunk
from node.bench_probe import CommitLog, NodeSamples, _record_block, parse_metrics, sample_nodes
from node.bench_workload import (
    LOTTERY_ENTRIES_PER_CALL,
    SignJob,
    WorkloadError,
    lottery_project,
    presign,
    seed_of,
    sign_slice,
)
from node.crypto import DOMAIN_TX, SigningKey, verify
from node.execution import BlockContext, execute_block
from node.metrics import NodeMetrics
from node.sealing import public_key_bytes
from node.transaction import Transaction, decode_envelope
from tests.contract_harness import ContractHarness
from tests.unit.conftest import NO_HISTORY

if TYPE_CHECKING:
    from tests.unit.conftest import Consortium

EXPOSITION = """# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
process_resident_memory_bytes 1.048576e+08
chancery_process_anonymous_memory_bytes 5.24288e+07
chancery_view_changes_total 3.0
chancery_block_height 42.0
chancery_rejected_txs_total{code="tx.duplicate"} 7.0
"""


def test_metrics_are_read_from_the_exposition() -> None:
    assert parse_metrics(EXPOSITION) == {
        "process_cpu_seconds_total": 12.5,
        "process_resident_memory_bytes": 104857600.0,
        "chancery_process_anonymous_memory_bytes": 52428800.0,
        "chancery_view_changes_total": 3.0,
        "chancery_block_height": 42.0,
    }


def test_a_node_exports_its_heap_apart_from_mapped_files() -> None:
    """The bench reads RssAnon beside RSS: on Linux it is the heap, never above RSS."""
    metrics = parse_metrics(NodeMetrics().render().decode())
    heap = metrics["chancery_process_anonymous_memory_bytes"]
    assert 0 < heap <= metrics["process_resident_memory_bytes"]


async def test_a_scrape_that_times_out_is_skipped_not_fatal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An overloaded node that answers /metrics too late costs the benchmark one sample of
    it; the other node is still read, and the run goes on to print its figures."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.Response(text=EXPOSITION)

    async def prompt(request: web.Request) -> web.Response:
        return web.Response(text=EXPOSITION)

    slow_app, prompt_app = web.Application(), web.Application()
    slow_app.router.add_get("/metrics", slow)
    prompt_app.router.add_get("/metrics", prompt)
    monkeypatch.setattr(bench_probe, "SAMPLE_TIMEOUT", aiohttp.ClientTimeout(total=0.05))
    async with TestServer(slow_app) as slow_server, TestServer(prompt_app) as prompt_server:
        samples = [
            NodeSamples(str(slow_server.make_url("")).rstrip("/")),
            NodeSamples(str(prompt_server.make_url("")).rstrip("/")),
        ]
        stop = asyncio.Event()
        stop.set()  # one round, then return
        async with aiohttp.ClientSession() as session:
            await sample_nodes(session, samples, stop)
    assert samples[0].first == {} and samples[1].first["chancery_block_height"] == 42


def test_node_samples_give_cpu_share_and_peak_memory() -> None:
    node = NodeSamples("http://node")
    node.record({"process_cpu_seconds_total": 10.0, "process_resident_memory_bytes": 5.0}, 100.0)
    node.record({"process_cpu_seconds_total": 13.0, "process_resident_memory_bytes": 9.0}, 102.0)
    node.record({"process_cpu_seconds_total": 14.0, "process_resident_memory_bytes": 7.0}, 104.0)
    assert node.cpu_percent == pytest.approx(100.0)
    assert node.rss_peak_bytes == 9.0


def test_a_block_event_times_every_transaction_it_lists() -> None:
    log = CommitLog()
    _record_block({"height": 5, "hash": "00", "tx_ids": ["aa" * 32, "bb" * 32]}, log)
    assert set(log.committed_at) == {bytes.fromhex("aa" * 32), bytes.fromhex("bb" * 32)}
    assert [(height, txs) for _, height, txs in log.blocks] == [(5, 2)]


def test_the_timeline_puts_each_commit_and_block_gap_in_its_second() -> None:
    """Two seconds of a window: a quick block, then a stall of 1.5 s before the next."""
    state, log = LoadState(), CommitLog()
    start = 100.0
    state.submitted_at = {b"a": start + 0.1, b"b": start + 0.2, b"c": start + 0.3}
    log.committed_at = {b"a": start + 0.2, b"b": start + 1.8, b"c": start + 1.8}
    log.blocks = [(start + 0.2, 5, 1), (start + 1.8, 6, 2)]
    first, second = _timeline(state, log, [b"a", b"b", b"c"], start, 2.0)
    assert (first.second, first.committed, first.blocks) == (0, 1, 1)
    assert first.latency_max_ms == pytest.approx(100, abs=0.5)
    assert first.longest_block_gap_ms == 0
    assert (second.committed, second.blocks) == (2, 1)
    assert second.latency_p50_ms == pytest.approx(1600, abs=0.5)  # the upper median
    assert second.latency_max_ms == pytest.approx(1600, abs=0.5)
    assert second.longest_block_gap_ms == pytest.approx(1600, abs=0.5)


def test_long_series_are_thinned_keeping_the_last_reading() -> None:
    thinned = _thinned([float(n) for n in range(1000)])
    assert len(thinned) == TIMELINE_POINTS_MAX
    assert thinned[0] == 0.0 and thinned[-1] == 999.0
    assert thinned == sorted(thinned)
    assert _thinned([1.0, 2.0]) == [1.0, 2.0]


@pytest.mark.parametrize("workload", ["evidence", "mixed"])
def test_presigned_workloads_are_valid_distinct_and_spread_over_signers(workload: str) -> None:
    signers = [SigningKey.generate() for _ in range(3)]
    signed = presign(workload, "chancery-test", signers, 25, 1_700_000_000_000, b"salt", 2)
    assert len(signed) == 25
    assert len({tx_id for tx_id, _ in signed}) == 25
    transactions = [decode_envelope(envelope) for _, envelope in signed]
    assert [tx.tx_id for tx in transactions] == [tx_id for tx_id, _ in signed]
    assert all(verify(tx.signer, DOMAIN_TX, tx.body_bytes, tx.signature) for tx in transactions)
    assert {tx.signer for tx in transactions} == {key.public_key for key in signers}
    methods = {tx.body.method for tx in transactions}
    assert methods == ({"anchor"} if workload == "evidence" else {"anchor", "anchor_batch"})


def test_unknown_and_separately_signed_workloads_are_refused_by_name() -> None:
    with pytest.raises(WorkloadError, match="unknown workload 'nonsense'"):
        presign("nonsense", "c", [SigningKey.generate()], 1, 0, b"", 1)
    with pytest.raises(WorkloadError, match="invoice workload is set up and signed"):
        presign("invoice", "c", [SigningKey.generate()], 1, 0, b"", 1)


def test_lottery_workload_calls_grow_the_benchs_open_project(consortium: Consortium) -> None:
    """Once the project is created and approved (as `chancery bench` does), every pre-signed
    `add_participants` call commits and adds its own fresh entries."""
    harness = ContractHarness(consortium, lottery)
    salt = b"bench salt"
    project = lottery_project(salt)
    commit = {"sponsor_commit": hashlib.sha256(b"s").digest(), "rules": {}, "winners": 1}
    create = {"project_id": project, "title": "t", "notary_org": "notary", **commit}
    harness.ok("create", create, "enterprise-a")
    approve = {"project_id": project, "notary_commit": hashlib.sha256(b"n").digest()}
    harness.ok("approve", approve, "notary")
    sponsor = seed_of(consortium.members["enterprise-a"])
    job = SignJob("lottery", consortium.chain_id, (sponsor,), salt, 0, 30, harness.block_time)
    transactions = [decode_envelope(envelope) for _, envelope in sign_slice(job)]
    assert all(receipt.ok for receipt in harness.commit(transactions).receipts)
    count = harness.query(f"projects/{project}")["count"]
    assert count == 30 * LOTTERY_ENTRIES_PER_CALL


def test_invoice_workload_transactions_commit_after_its_setup(consortium: Consortium) -> None:
    """The `invoice` workload's setup (encryption keys, an authorised issuer) and its
    pre-signed sealed `issue` and `reimburse` calls, through the real execution path."""
    genesis = consortium.genesis
    state: dict[bytes, bytes | None] = dict(genesis.genesis_writes())
    root = genesis.genesis_block().header.state_root
    timestamp_ms = genesis.genesis_time + 1_000

    def commit(height: int, transactions: list[Transaction]) -> list[bool]:
        nonlocal root
        context = BlockContext(height, timestamp_ms, genesis.genesis_hash, 600_000, NO_HISTORY)
        output = execute_block(builtin_registry(), state, root, context, transactions)
        state.update(output.writes)
        root = output.state_root
        return [receipt.ok for receipt in output.receipts]

    recipients = []
    setup = []
    for nonce, org in enumerate((TAX_OFFICE, ISSUER, BUYER)):
        public = public_key_bytes(X25519PrivateKey.generate())
        recipients.append(public)
        key = consortium.members[org]
        args = {"encryption_key": public}
        setup.append(
            consortium.sign(
                key, "membership", "set_encryption_key", args, nonce=nonce, timestamp=timestamp_ms
            )
        )
    authorize = {"org": ISSUER}
    setup.append(
        consortium.sign(
            consortium.members[TAX_OFFICE],
            "invoice",
            "authorize_issuer",
            authorize,
            nonce=9,
            timestamp=timestamp_ms,
        )
    )
    assert commit(1, setup) == [True] * 4

    for height, (phase, org) in enumerate((("issue", ISSUER), ("reimburse", BUYER)), start=2):
        job = SigningJob(
            phase,
            seed_of(consortium.members[org]),
            consortium.chain_id,
            first=5,
            count=3,
            timestamp_ms=timestamp_ms,
            recipients=tuple(sorted(recipients)),
        )
        signed = sign_chunk(job)
        transactions = [decode_envelope(envelope) for _, envelope in signed]
        assert [tx.tx_id for tx in transactions] == [tx_id for tx_id, _ in signed]
        assert commit(height, transactions) == [True] * 3


async def test_waiting_for_commits_ends_when_the_last_one_is_in_a_block() -> None:
    log = CommitLog()
    waiter = asyncio.create_task(log.wait_committed([b"a", b"b"], time.monotonic() + 5))
    await asyncio.sleep(0)
    log.record_block(1.0, 7, [b"a"])
    await asyncio.sleep(0)
    assert not waiter.done()
    log.record_block(2.0, 8, [b"x", b"b"])
    assert await waiter == 0
    assert log.blocks == [(1.0, 7, 1), (2.0, 8, 2)]


async def test_waiting_for_commits_gives_up_at_the_deadline() -> None:
    log = CommitLog()
    log.record_block(1.0, 7, [b"a"])
    assert await log.wait_committed([b"a", b"never"], time.monotonic() + 0.05) == 1


@pytest.mark.parametrize("extra", [["--rate", "100"], ["--sweep"]])
def test_flood_is_refused_with_an_open_loop_or_a_sweep(extra: list[str]) -> None:
    assert bench_main(["--flood", *extra]) == 2


async def _drive_closed_loop(monkeypatch: pytest.MonkeyPatch, *, flood: bool, commit: bool) -> int:
    """Run `_closed_loop` for 0.3 s against a fake node; returns how many batches it sent.
    With `commit`, each batch is committed at once (a block event for its tx ids)."""
    log, state, posted = CommitLog(), LoadState(), []

    async def fake_post(session: object, url: str, batch: list, load: LoadState) -> None:
        posted.append(batch)
        if commit:
            log.record_block(time.monotonic(), len(posted), [tx_id for tx_id, _ in batch])
        await asyncio.sleep(0.001)

    monkeypatch.setattr(bench, "_post_batch", fake_post)
    signed = [(i.to_bytes(8, "big"), b"envelope") for i in range(100_000)]
    plan = bench.BenchPlan("evidence", None, 1.0, 0.0, batch=50, backlog=100, txs=None, flood=flood)
    end_at = time.monotonic() + 0.3
    await bench._closed_loop(
        None, ["http://n"], bench.Batches(signed, 50), plan, log, end_at, state
    )  # type: ignore[arg-type]
    return len(posted)


async def test_a_closed_loop_client_sends_again_only_after_its_batch_commits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # backlog 100 / batch 50: two clients, each stuck on a batch that never commits.
    assert await _drive_closed_loop(monkeypatch, flood=False, commit=False) == 2
    # Committed at once, the same two clients keep sending.
    assert await _drive_closed_loop(monkeypatch, flood=False, commit=True) > 10


async def test_a_flood_does_not_wait_for_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    assert await _drive_closed_loop(monkeypatch, flood=True, commit=False) > 10
