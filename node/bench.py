"""`python -m node.bench` (`make bench`): committed tx/s and commit latency, measured.

Starts its own network of real node processes in a temporary directory (or targets a
running node with --url and --key), pre-signs every transaction so client signing is not
measured, submits them in batches over HTTP, and timestamps each commit from the node's
event stream. Prints the figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from node.client import AsyncClient
from node.crypto import SigningKey, load_key_file
from node.localnet import LocalNetwork
from node.transaction import sign_transaction

HEALTH_TIMEOUT_S = 30.0
COMMIT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class BenchResult:
    transactions: int
    committed: int
    seconds: float
    latency_p50_ms: float
    latency_p99_ms: float
    blocks: int

    @property
    def tx_per_s(self) -> float:
        return self.committed / self.seconds if self.seconds else 0.0


def _sign_all(key: SigningKey, chain_id: str, count: int) -> list[tuple[bytes, bytes]]:
    now_ms = time.time_ns() // 1_000_000
    signed = []
    for nonce in range(count):
        tx = sign_transaction(
            key,
            chain_id,
            "membership",
            "add_member",
            {"name": f"bench-{nonce}", "public_key": os.urandom(32)},
            nonce,
            now_ms,
        )
        signed.append((tx.tx_id, tx.envelope))
    return signed


async def _follow_commits(
    url: str,
    from_height: int,
    wanted: set[bytes],
    committed_at: dict[bytes, float],
    heights: set[int],
) -> None:
    """Timestamp each wanted transaction's commit as the node's event stream announces it."""
    async with AsyncClient(url) as client:
        async for event in client.events(from_height=from_height):
            if event["event"] != "tx":
                continue
            tx_id = bytes.fromhex(event["data"]["tx_id"])
            if tx_id in wanted:
                committed_at[tx_id] = time.monotonic()
                heights.add(event["data"]["height"])
                if len(committed_at) == len(wanted):
                    return


async def _submit(
    session: aiohttp.ClientSession,
    url: str,
    batches: list[list[tuple[bytes, bytes]]],
    concurrency: int,
    submitted_at: dict[bytes, float],
) -> None:
    import msgpack

    queue: asyncio.Queue[list[tuple[bytes, bytes]]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)

    async def worker() -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            body = msgpack.packb([envelope for _, envelope in batch], use_bin_type=True)
            started = time.monotonic()
            for tx_id, _ in batch:
                submitted_at[tx_id] = started
            async with session.post(
                f"{url}/v1/transactions/batch",
                data=body,
                headers={"Content-Type": "application/msgpack"},
            ) as answer:
                results = await answer.json()
                if answer.status != 200 or any("error" in r for r in results):
                    raise RuntimeError(f"submission refused: {answer.status} {str(results)[:300]}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def run_benchmark(
    url: str, key: SigningKey, count: int, batch_size: int, concurrency: int
) -> BenchResult:
    """Submit `count` pre-signed transactions to `url` and time their commits."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/v1/status") as answer:
            status = await answer.json()
        print(f"signing {count} transactions...", file=sys.stderr)
        signed = _sign_all(key, status["chain_id"], count)
        wanted = {tx_id for tx_id, _ in signed}
        committed_at: dict[bytes, float] = {}
        submitted_at: dict[bytes, float] = {}
        heights: set[int] = set()
        follower = asyncio.create_task(
            _follow_commits(url, status["height"] + 1, wanted, committed_at, heights)
        )
        await asyncio.sleep(0.2)
        batches = [signed[i : i + batch_size] for i in range(0, count, batch_size)]
        started = time.monotonic()
        await _submit(session, url, batches, concurrency, submitted_at)
        try:
            await asyncio.wait_for(follower, COMMIT_TIMEOUT_S)
        except TimeoutError:
            print("timed out waiting for commits", file=sys.stderr)
        finished = max(committed_at.values(), default=time.monotonic())
    latencies = sorted((committed_at[t] - submitted_at[t]) * 1000 for t in committed_at)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return BenchResult(
        count, len(committed_at), finished - started, quantiles[49], quantiles[98], len(heights)
    )


def _start_local_network(directory: Path, validators: int) -> tuple[str, SigningKey, LocalNetwork]:
    network = LocalNetwork.generate(directory, validators=validators)
    network.start_all()
    return network.url(0), load_key_file(network.testnet.org("notary").admin_key), network


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.bench", description=__doc__)
    parser.add_argument("--txs", type=int, default=40_000, help="transactions to submit")
    parser.add_argument("--batch", type=int, default=1000, help="envelopes per batch request")
    parser.add_argument("--concurrency", type=int, default=4, help="batch requests in flight")
    parser.add_argument("--validators", type=int, default=4, help="validators of the local network")
    parser.add_argument("--url", help="benchmark a running node instead of a fresh local network")
    parser.add_argument("--key", type=Path, help="with --url: an org admin key file")
    args = parser.parse_args(argv)
    network: LocalNetwork | None = None
    with tempfile.TemporaryDirectory(prefix="chancery-bench-") as scratch:
        if args.url:
            if args.key is None:
                parser.error("--url needs --key")
            url, key = args.url, load_key_file(args.key)
        else:
            url, key, network = _start_local_network(Path(scratch) / "net", args.validators)
        try:
            result = asyncio.run(run_benchmark(url, key, args.txs, args.batch, args.concurrency))
        finally:
            if network is not None:
                network.stop_all()
    print(f"validators:          {args.validators if not args.url else '(remote)'}")
    print(f"transactions:        {result.transactions} submitted, {result.committed} committed")
    print(f"blocks:              {result.blocks}")
    print(f"duration:            {result.seconds:.2f} s")
    print(f"committed tx/s:      {result.tx_per_s:,.0f}")
    print(f"commit latency p50:  {result.latency_p50_ms:.0f} ms")
    print(f"commit latency p99:  {result.latency_p99_ms:.0f} ms")
    return 0 if result.committed == result.transactions else 1


if __name__ == "__main__":
    raise SystemExit(main())
