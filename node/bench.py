"""`chancery bench` (`make bench`): measure a Chancery network the way a buyer would.

Starts a fresh local network of `--validators N` real node processes, each with its own
LevelDB directory (or targets a running one with `--network network.json`), pre-signs the
whole workload in worker processes before timing starts, then drives load through the
batch route spread over every node: open loop at `--rate R` tx/s, or closed loop at the
maximum (about `--backlog` transactions submitted and not yet committed: each client sends
a batch, waits until it is committed, then sends the next). After `--warmup` seconds it
measures for `--duration` seconds, from the outside: committed tx/s and blocks/s from a
node's event stream, commit latency (submit to commit) p50/p90/p99/max, average block
size, view changes, and each node's CPU and peak resident memory from its `/metrics`.
Prints a table; `--json FILE` writes the figures; `--sweep` runs N = 1, 4, 7 at the
maximum and at fractions of it. Asserts nothing: these are figures, not tests.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import msgpack

from node.bench_invoice import ISSUER, prepare_network, sign_phase
from node.bench_prefill import prefill
from node.bench_probe import CommitLog, NodeSamples, follow_blocks, sample_nodes
from node.bench_workload import (
    SETUP_WORKLOADS,
    WORKLOADS,
    WorkloadError,
    lottery_project,
    presign,
)
from node.client import Client
from node.crypto import SigningKey, load_key_file
from node.localnet import LocalNetwork
from node.testnet import Testnet, load_network

BATCH_DEFAULT: Final = 500
# Closed loop: transactions submitted and not yet committed. Enough for the pipeline to
# never run dry (two full blocks of 2,000 and the admissions behind them), not so many
# that latency is mostly queueing: latency = backlog / throughput (Little's law).
BACKLOG_DEFAULT: Final = 6_000
# A closed-loop client whose batch never commits gives up on it after this long.
COMMIT_WAIT_S: Final = 30.0
# A closed-loop client whose whole batch was refused (mempool full) pauses this long.
REFUSED_PAUSE_S: Final = 0.2
# How many refusals the result quotes (it counts them all).
ERRORS_KEPT: Final = 5
DURATION_S_DEFAULT: Final = 20.0
WARMUP_S_DEFAULT: Final = 5.0
# Pre-signed budget per second of run when --txs is not given (closed loop), by size.
SOLO_BUDGET_TPS: Final = 12_000
NETWORK_BUDGET_TPS: Final = 5_000
OPEN_LOOP_INFLIGHT_MAX: Final = 256  # batch requests; beyond this the offered rate slips
DRAIN_TIMEOUT_S: Final = 60.0
REQUEST_TIMEOUT_S: Final = 120.0
SWEEP_VALIDATORS: Final = (1, 4, 7)
SWEEP_RATE_FRACTIONS: Final = (0.25, 0.5, 0.75)
MB: Final = 1024 * 1024
LOTTERY_SPONSOR: Final = "enterprise-a"
LOTTERY_NOTARY: Final = "notary"
SETUP_TIMEOUT_MS: Final = 30_000
TIMELINE_POINTS_MAX: Final = 120
INVOICE_NUMBERS: Final = 10**8


@dataclass(frozen=True)
class BenchPlan:
    """One run: what load, how long, how hard."""

    workload: str
    rate: float | None  # tx/s offered; None: closed loop at the maximum
    duration_s: float
    warmup_s: float
    batch: int
    backlog: int  # closed loop: transactions in flight, submitted and not yet committed
    txs: int | None  # pre-signed budget; None: sized from the run's length
    # Closed loop whose clients wait only for admission, never for the commit: overload.
    flood: bool = False


@dataclass
class NodeFigures:
    index: int
    url: str
    # The node's process and its verification worker processes together.
    cpu_percent: float
    rss_start_mb: float
    rss_end_mb: float
    rss_peak_mb: float
    view_changes: int
    height: int
    # The verification workers' share of cpu_percent.
    workers_cpu_percent: float = 0.0
    # RSS through the window, at most TIMELINE_POINTS_MAX evenly spaced readings: a flat
    # line or a climb, which start/end/peak alone cannot tell apart from a late spike.
    rss_series_mb: list[float] = field(default_factory=list)
    # The heap alone (RssAnon): RSS also counts table files LevelDB maps while reading.
    anonymous_series_mb: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class TimelineSecond:
    """One second of the window: what committed in it and how long those waited."""

    second: int
    committed: int
    blocks: int
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    longest_block_gap_ms: float


@dataclass
class BenchResult:
    """The figures of one run; `to_json` has the keys issue 5 names, and more."""

    validators: int
    workload: str
    mode: str
    offered_tps: float | None
    duration_s: float
    submitted: int
    refused: int
    committed_in_window: int
    committed_tps: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    not_committed: int
    blocks_per_s: float
    avg_block_txs: float
    view_changes: int
    ran_out_of_signed: bool
    nodes: list[NodeFigures] = field(default_factory=list)
    timeline: list[TimelineSecond] = field(default_factory=list)
    prefilled_txs: int = 0
    prefill_s: float = 0.0
    # The bench client's own CPU over the window: on one machine it shares the cores.
    client_cpu_percent: float = 0.0
    backlog_txs: int | None = None  # closed loop only
    # The first few refusals as the nodes answered them (what `refused` counts).
    first_refusals: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadState:
    """What the load driver did: when each transaction went out, what was refused."""

    submitted_at: dict[bytes, float] = field(default_factory=dict)
    refused: set[bytes] = field(default_factory=set)
    ran_out: bool = False
    inflight: int = 0
    errors: list[str] = field(default_factory=list)

    def note_error(self, error: str) -> None:
        if len(self.errors) < ERRORS_KEPT:
            self.errors.append(error)


class Batches:
    """The pre-signed transactions handed out a batch at a time, in order."""

    def __init__(self, signed: list[tuple[bytes, bytes]], size: int) -> None:
        self._signed = signed
        self._size = size
        self._next = 0

    def take(self) -> list[tuple[bytes, bytes]] | None:
        if self._next >= len(self._signed):
            return None
        batch = self._signed[self._next : self._next + self._size]
        self._next += self._size
        return batch


async def _post_batch(
    session: aiohttp.ClientSession, url: str, batch: list[tuple[bytes, bytes]], state: LoadState
) -> None:
    body = msgpack.packb([envelope for _, envelope in batch], use_bin_type=True)
    sent_at = time.monotonic()
    for tx_id, _ in batch:
        state.submitted_at[tx_id] = sent_at
    state.inflight += 1
    try:
        async with session.post(
            f"{url}/v1/transactions/batch",
            data=body,
            headers={"Content-Type": "application/msgpack"},
        ) as answer:
            results = await answer.json()
        if answer.status != 200 or not isinstance(results, list):
            state.refused.update(tx_id for tx_id, _ in batch)
            state.note_error(f"{url}: HTTP {answer.status} {str(results)[:200]}")
            return
        for (tx_id, _), result in zip(batch, results, strict=False):
            if "error" in result:
                state.refused.add(tx_id)
                state.note_error(f"{url}: {str(result)[:200]}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        state.refused.update(tx_id for tx_id, _ in batch)
        state.note_error(f"{url}: {exc!r}")
    finally:
        state.inflight -= 1


async def _closed_loop(
    session: aiohttp.ClientSession,
    urls: Sequence[str],
    batches: Batches,
    plan: BenchPlan,
    log: CommitLog,
    end_at: float,
    state: LoadState,
) -> None:
    """A fixed backlog (Hyperledger Caliper's `fixed-backlog`): `plan.backlog / plan.batch`
    clients spread over the nodes, each submitting a batch and waiting for its commit.

    Waiting for the commit, not for admission, is what makes the loop closed: a client
    that only waits for admission (`plan.flood`) floods the mempool with work the network
    cannot commit and measures the queue and how the network bears overload, not its
    throughput."""

    async def client(url: str) -> None:
        while time.monotonic() < end_at:
            batch = batches.take()
            if batch is None:
                state.ran_out = True
                return
            await _post_batch(session, url, batch, state)
            admitted = [tx_id for tx_id, _ in batch if tx_id not in state.refused]
            if not admitted:  # mempool full: back off, as Retry-After asks
                await asyncio.sleep(REFUSED_PAUSE_S)
                continue
            if plan.flood:
                continue
            deadline = min(end_at, time.monotonic() + COMMIT_WAIT_S)
            await log.wait_committed(admitted, deadline)

    clients = max(len(urls), -(-plan.backlog // plan.batch))
    targets = _round_robin(urls)
    await asyncio.gather(*(client(next(targets)) for _ in range(clients)))


async def _open_loop(
    session: aiohttp.ClientSession,
    urls: Sequence[str],
    batches: Batches,
    rate: float,
    batch_size: int,
    end_at: float,
    state: LoadState,
) -> None:
    interval_s = batch_size / rate
    next_at = time.monotonic()
    tasks: set[asyncio.Task[None]] = set()
    targets = _round_robin(urls)
    while next_at < end_at:
        if state.inflight < OPEN_LOOP_INFLIGHT_MAX:
            batch = batches.take()
            if batch is None:
                state.ran_out = True
                break
            task = asyncio.create_task(_post_batch(session, next(targets), batch, state))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        next_at += interval_s
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await asyncio.gather(*tasks)


def _round_robin(urls: Sequence[str]) -> Iterator[str]:
    while True:
        yield from urls


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure(
    urls: Sequence[str], signed: list[tuple[bytes, bytes]], plan: BenchPlan
) -> BenchResult:
    """Drive `plan` against `urls` with the pre-signed `signed` and gather the figures."""
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        async with session.get(f"{urls[0]}/v1/status") as answer:
            start_height = (await answer.json())["height"]
        log = CommitLog()
        follower = asyncio.create_task(follow_blocks(session, urls[0], start_height + 1, log))
        samples = [NodeSamples(url) for url in urls]
        stop_sampling = asyncio.Event()
        state = LoadState()
        batches = Batches(signed, plan.batch)
        started_at = time.monotonic()
        window_start = started_at + plan.warmup_s
        window_end = window_start + plan.duration_s
        if plan.rate is None:
            load = _closed_loop(session, urls, batches, plan, log, window_end, state)
        else:
            load = _open_loop(session, urls, batches, plan.rate, plan.batch, window_end, state)
        loading = asyncio.create_task(load)
        await asyncio.sleep(max(0.0, window_start - time.monotonic()))
        sampler = asyncio.create_task(sample_nodes(session, samples, stop_sampling))
        client_cpu_start_s = time.process_time()
        await asyncio.sleep(max(0.0, window_end - time.monotonic()))
        stop_sampling.set()
        client_cpu_s = time.process_time() - client_cpu_start_s
        await sampler
        await loading
        in_window = [
            tx_id
            for tx_id, at in state.submitted_at.items()
            if window_start <= at < window_end and tx_id not in state.refused
        ]
        drain_until = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < drain_until and any(t not in log.committed_at for t in in_window):
            await asyncio.sleep(0.2)
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
    result = _figures(plan, urls, state, log, samples, in_window, window_start, window_end)
    result.client_cpu_percent = round(100 * client_cpu_s / plan.duration_s, 1)
    return result


def _figures(
    plan: BenchPlan,
    urls: Sequence[str],
    state: LoadState,
    log: CommitLog,
    samples: Sequence[NodeSamples],
    in_window: Sequence[bytes],
    window_start: float,
    window_end: float,
) -> BenchResult:
    latencies = sorted(
        (log.committed_at[t] - state.submitted_at[t]) * 1000
        for t in in_window
        if t in log.committed_at
    )
    committed = sum(1 for at in log.committed_at.values() if window_start <= at < window_end)
    blocks = [txs for at, _, txs in log.blocks if window_start <= at < window_end]
    nodes = [
        NodeFigures(
            index=index,
            url=node.url,
            cpu_percent=round(node.cpu_percent, 1),
            workers_cpu_percent=round(node.workers_cpu_percent, 1),
            rss_start_mb=round(node.first.get("process_resident_memory_bytes", 0) / MB, 1),
            rss_end_mb=round(node.last.get("process_resident_memory_bytes", 0) / MB, 1),
            rss_peak_mb=round(node.rss_peak_bytes / MB, 1),
            view_changes=int(node.delta("chancery_view_changes_total")),
            height=int(node.last.get("chancery_block_height", 0)),
            rss_series_mb=_thinned([round(rss / MB, 1) for _, rss in node.rss_series]),
            anonymous_series_mb=_thinned([round(b / MB, 1) for _, b in node.anonymous_series]),
        )
        for index, node in enumerate(samples)
    ]
    return BenchResult(
        validators=len(urls),
        workload=plan.workload,
        mode=_mode(plan),
        offered_tps=plan.rate,
        duration_s=plan.duration_s,
        submitted=len(state.submitted_at),
        refused=len(state.refused),
        first_refusals=list(state.errors),
        committed_in_window=committed,
        committed_tps=round(committed / plan.duration_s, 1),
        latency_p50_ms=round(_percentile(latencies, 0.50), 1),
        latency_p90_ms=round(_percentile(latencies, 0.90), 1),
        latency_p99_ms=round(_percentile(latencies, 0.99), 1),
        latency_max_ms=round(latencies[-1], 1) if latencies else 0.0,
        not_committed=len(in_window) - len(latencies),
        blocks_per_s=round(len(blocks) / plan.duration_s, 1),
        avg_block_txs=round(statistics.fmean(blocks), 1) if blocks else 0.0,
        view_changes=max((node.view_changes for node in nodes), default=0),
        ran_out_of_signed=state.ran_out,
        nodes=nodes,
        timeline=_timeline(state, log, in_window, window_start, plan.duration_s),
        backlog_txs=plan.backlog if plan.rate is None and not plan.flood else None,
    )


def _mode(plan: BenchPlan) -> str:
    if plan.rate is not None:
        return "open loop"
    return "flood" if plan.flood else "closed loop"


def _thinned(values: list[float]) -> list[float]:
    """At most TIMELINE_POINTS_MAX of `values`, evenly spaced, the last one kept."""
    if len(values) <= TIMELINE_POINTS_MAX:
        return values
    step = len(values) / TIMELINE_POINTS_MAX
    return [values[int(i * step)] for i in range(TIMELINE_POINTS_MAX - 1)] + [values[-1]]


def _timeline(
    state: LoadState,
    log: CommitLog,
    in_window: Sequence[bytes],
    window_start: float,
    duration_s: float,
) -> list[TimelineSecond]:
    """Second by second: where in the run the latency tail and the stalls are."""
    seconds = max(1, int(duration_s))
    latencies: list[list[float]] = [[] for _ in range(seconds)]
    for tx_id in in_window:
        at = log.committed_at.get(tx_id)
        if at is not None and 0 <= int(at - window_start) < seconds:
            latencies[int(at - window_start)].append((at - state.submitted_at[tx_id]) * 1000)
    blocks = [0] * seconds
    gaps = [0.0] * seconds
    previous: float | None = None
    for at, _, _ in log.blocks:
        second = int(at - window_start)
        if 0 <= second < seconds:
            blocks[second] += 1
            if previous is not None:
                gaps[second] = max(gaps[second], (at - previous) * 1000)
        previous = at
    timeline = []
    for second, waited in enumerate(latencies):
        waited.sort()
        timeline.append(
            TimelineSecond(
                second=second,
                committed=len(waited),
                blocks=blocks[second],
                latency_p50_ms=round(_percentile(waited, 0.50), 1),
                latency_p99_ms=round(_percentile(waited, 0.99), 1),
                latency_max_ms=round(waited[-1], 1) if waited else 0.0,
                longest_block_gap_ms=round(gaps[second], 1),
            )
        )
    return timeline


def _budget(plan: BenchPlan, validators: int) -> int:
    if plan.txs is not None:
        return plan.txs
    seconds = plan.warmup_s + plan.duration_s
    if plan.rate is not None:
        return int(plan.rate * seconds * 1.1) + plan.batch
    per_s = SOLO_BUDGET_TPS if validators == 1 else NETWORK_BUDGET_TPS
    return int(per_s * seconds)


def _signers(testnet: Testnet) -> list[SigningKey]:
    """Every organisation's member key: the load comes from all of them."""
    return [load_key_file(org.member_key) for org in testnet.orgs]


def _presign_invoices(testnet: Testnet, count: int, processes: int) -> list[tuple[bytes, bytes]]:
    """Set the network up for invoices (encryption keys, an authorised issuer), then sign
    `count` sealed `invoice.issue` calls with fresh invoice numbers."""
    chain_id, keys, recipients = prepare_network(testnet, testnet.nodes[0].api_url)
    # Invoice numbers are 8 digits: a random base keeps reruns on one network apart.
    first = int.from_bytes(os.urandom(4), "big") % (INVOICE_NUMBERS - count)
    signed, _ = sign_phase(
        "issue", keys[ISSUER], chain_id, count, recipients, processes, first=first
    )
    return signed


def _open_lottery_project(testnet: Testnet, salt: bytes) -> SigningKey:
    """Create and approve the project the `lottery` workload adds participants to (the
    secrets are thrown away: a bench project is never drawn); returns the sponsor's key."""
    sponsor = load_key_file(testnet.org(LOTTERY_SPONSOR).member_key)
    notary = load_key_file(testnet.org(LOTTERY_NOTARY).member_key)
    project = lottery_project(salt)
    create = {
        "project_id": project,
        "title": "chancery bench",
        "rules": {},
        "notary_org": LOTTERY_NOTARY,
        "winners": 1,
        "sponsor_commit": hashlib.sha256(os.urandom(32)).digest(),
    }
    approve = {"project_id": project, "notary_commit": hashlib.sha256(os.urandom(32)).digest()}
    with Client(testnet.nodes[0].api_url) as client:
        for key, method, args in ((sponsor, "create", create), (notary, "approve", approve)):
            answer = client.submit("lottery", method, args, key, timeout_ms=SETUP_TIMEOUT_MS)
            if not answer["receipt"]["ok"]:
                raise WorkloadError(f"lottery setup: {method} failed: {answer['receipt']}")
    return sponsor


def run_on(testnet: Testnet, plan: BenchPlan) -> BenchResult:
    """Pre-sign for `plan`, then measure the running network `testnet` describes."""
    count = _budget(plan, len(testnet.nodes))
    print(f"pre-signing {count:,} {plan.workload} transactions...", file=sys.stderr)
    processes = os.cpu_count() or 1
    if plan.workload == "invoice":
        signed = _presign_invoices(testnet, count, processes)
    else:
        salt = os.urandom(16)
        signers = _signers(testnet)
        if plan.workload == "lottery":  # only the sponsor adds participants
            signers = [_open_lottery_project(testnet, salt)]
        signed = presign(
            plan.workload,
            testnet.chain_id,
            signers,
            count,
            time.time_ns() // 1_000_000 + int(plan.warmup_s * 1000),
            salt,
            processes,
        )
    urls = [node.api_url for node in testnet.nodes]
    print(f"measuring {plan.warmup_s:.0f} s warm-up + {plan.duration_s:.0f} s...", file=sys.stderr)
    return asyncio.run(measure(urls, signed, plan))


def run_fresh(validators: int, plan: BenchPlan, prefill_txs: int = 0) -> BenchResult:
    """Start a fresh local network of `validators` (its chain first prefilled with
    `prefill_txs` committed transactions), measure it, stop it."""
    with tempfile.TemporaryDirectory(prefix="chancery-bench-") as scratch:
        network = LocalNetwork.generate(Path(scratch) / "net", validators=validators)
        prefill_s = 0.0
        if prefill_txs:
            print(f"prefilling the chain with {prefill_txs:,} transactions...", file=sys.stderr)
            prefill_s = prefill(network.testnet, prefill_txs, os.cpu_count() or 1)
        print(f"starting {validators} validator(s)...", file=sys.stderr)
        network.start_all()
        try:
            result = run_on(network.testnet, plan)
        finally:
            network.stop_all()
    result.prefilled_txs, result.prefill_s = prefill_txs, round(prefill_s, 1)
    return result


def print_result(result: BenchResult) -> None:
    if result.offered_tps:
        offered = f"{result.offered_tps:,.0f} tx/s offered"
    elif result.backlog_txs is None:
        offered = "clients wait for admission only"
    else:
        offered = f"max, backlog {result.backlog_txs:,} txs"
    print(f"validators {result.validators}, workload {result.workload}, {result.mode} ({offered})")
    if result.prefilled_txs:
        print(f"  on a chain prefilled with {result.prefilled_txs:,} transactions")
    print(
        f"  committed        {result.committed_tps:>10,.0f} tx/s   ({result.blocks_per_s} blocks/s,"
        f" {result.avg_block_txs} tx/block)"
    )
    print(
        f"  commit latency   p50 {result.latency_p50_ms:,.0f} ms  p90 {result.latency_p90_ms:,.0f}"
        f" ms  p99 {result.latency_p99_ms:,.0f} ms  max {result.latency_max_ms:,.0f} ms"
    )
    print(
        f"  client CPU {result.client_cpu_percent:.0f} %; submitted {result.submitted:,},"
        f" refused {result.refused:,}, not committed after"
        f" the drain {result.not_committed:,}, view changes {result.view_changes}"
    )
    for refusal in result.first_refusals:
        print(f"  refused: {refusal}")
    if result.ran_out_of_signed:
        print("  (ran out of pre-signed transactions: raise --txs for a full window)")
    worst = sorted(result.timeline, key=lambda second: second.latency_p99_ms)[-3:]
    if worst:
        listed = ", ".join(
            f"s{w.second}: p99 {w.latency_p99_ms:,.0f} ms, gap {w.longest_block_gap_ms:,.0f} ms"
            for w in reversed(worst)
        )
        print(f"  worst seconds    {listed}")
    print("  node  cpu % (workers)   rss start/end/peak MB   heap start/end MB   height")
    for node in result.nodes:
        heap = node.anonymous_series_mb or [0.0]
        print(
            f"  {node.index:>4}  {node.cpu_percent:>5.0f} ({node.workers_cpu_percent:>5.0f})"
            f"   {node.rss_start_mb:>6.0f} /"
            f" {node.rss_end_mb:>5.0f} / {node.rss_peak_mb:>5.0f}   {heap[0]:>7.0f} /"
            f" {heap[-1]:>5.0f}       {node.height}"
        )


def _sweep(plan: BenchPlan) -> list[BenchResult]:
    results = []
    for validators in SWEEP_VALIDATORS:
        peak = run_fresh(validators, BenchPlan(**{**asdict(plan), "rate": None}))
        print_result(peak)
        results.append(peak)
        for fraction in SWEEP_RATE_FRACTIONS:
            rate = max(1.0, round(peak.committed_tps * fraction, -1))
            result = run_fresh(validators, BenchPlan(**{**asdict(plan), "rate": rate}))
            print_result(result)
            results.append(result)
    print("\nvalidators  mode         offered tx/s  committed tx/s  p50 ms  p99 ms")
    for r in results:
        offered = f"{r.offered_tps:,.0f}" if r.offered_tps else "max"
        print(
            f"{r.validators:>10}  {r.mode:<11}  {offered:>12}  {r.committed_tps:>14,.0f}"
            f"  {r.latency_p50_ms:>6,.0f}  {r.latency_p99_ms:>6,.0f}"
        )
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--validators", type=int, default=4, help="size of the fresh network")
    parser.add_argument(
        "--network",
        type=Path,
        metavar="network.json",
        help="measure this running network instead of a fresh one",
    )
    parser.add_argument(
        "--workload",
        default="evidence",
        choices=sorted([*WORKLOADS, *SETUP_WORKLOADS]),
    )
    parser.add_argument("--rate", type=float, help="open loop: offered tx/s (default: closed loop)")
    parser.add_argument("--duration", type=float, default=DURATION_S_DEFAULT, help="measured s")
    parser.add_argument("--warmup", type=float, default=WARMUP_S_DEFAULT, help="unmeasured s first")
    parser.add_argument("--batch", type=int, default=BATCH_DEFAULT, help="envelopes per request")
    parser.add_argument(
        "--backlog",
        type=int,
        default=BACKLOG_DEFAULT,
        metavar="TXS",
        help="closed loop: transactions submitted and not yet committed",
    )
    parser.add_argument(
        "--flood",
        action="store_true",
        help="overload: clients never wait for commits, only for admission (no --rate)",
    )
    parser.add_argument("--txs", type=int, help="transactions to pre-sign (default: sized)")
    parser.add_argument("--sweep", action="store_true", help="N = 1, 4, 7 at several rates")
    parser.add_argument(
        "--prefill",
        type=int,
        default=0,
        metavar="N",
        help="fresh network only: start on a chain already holding N transactions",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures here")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark `args` describe; prints the figures. Exit 0, or 2 if it cannot run."""
    if args.flood and (args.rate is not None or args.sweep):
        print("error: --flood is a closed loop: not with --rate or --sweep", file=sys.stderr)
        return 2
    plan = BenchPlan(
        args.workload,
        args.rate,
        args.duration,
        args.warmup,
        args.batch,
        args.backlog,
        args.txs,
        args.flood,
    )
    try:
        if args.sweep:
            results = _sweep(plan)
            document: Any = {"sweep": [r.to_json() for r in results]}
        else:
            if args.network is not None:
                if args.prefill:
                    print("error: --prefill needs a fresh network, not --network", file=sys.stderr)
                    return 2
                result = run_on(load_network(args.network.parent), plan)
            else:
                result = run_fresh(args.validators, plan, args.prefill)
            print_result(result)
            document = result.to_json()
    except WorkloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json is not None:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


def add_bench_command(commands: Any) -> None:
    """Add `chancery bench` to the CLI's subcommands."""
    parser = commands.add_parser("bench", help="measure a network: tx/s, latency, CPU, memory")
    add_arguments(parser)
    parser.set_defaults(handler=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.bench", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
