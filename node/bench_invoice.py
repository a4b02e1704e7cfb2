"""`python -m node.bench_invoice`: a tax-office-scale invoice run, measured.

Starts a fresh network of real node processes (4 validators by default) in a temporary
directory, registers the encryption keys of the taxoffice, enterprise-a and enterprise-b
members, has the tax office authorise enterprise-a, and then runs two phases:

1. issue: enterprise-a issues `--invoices` invoices to enterprise-b, each a valid VAT
   e-invoice document (node/invoice_document.py) sealed for the three organisations'
   keys (node/sealing.py; `--no-seal` sends the digest only);
2. reimburse: enterprise-b reimburses every one of them.

Each phase's transactions are built, sealed and signed beforehand in `--workers` processes
(so client work is not measured), then submitted through `POST /v1/transactions/batch`,
`--batch` envelopes per request, spread round-robin over every node with `--concurrency`
requests in flight per node. Commits are timestamped from node 0's event stream. A phase's
rate is its transactions divided by the time from its first submission to its last commit.
The run fails (exit 1) unless every transaction committed with a successful receipt and
every node reports the same tip and the same final record of a sample invoice.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import msgpack
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from node.client import AsyncClient, Client
from node.crypto import SigningKey, load_key_file
from node.invoice_cli import issue_args
from node.invoice_document import InvoiceDocument, parse_document
from node.localnet import LocalNetwork
from node.sealing import (
    encryption_key_path,
    load_encryption_key_file,
    public_key_bytes,
    write_encryption_key_file,
)
from node.testnet import Testnet
from node.transaction import sign_transaction

INVOICES_DEFAULT: Final = 100_000
BATCH_DEFAULT: Final = 1000
CONCURRENCY_PER_NODE_DEFAULT: Final = 2
VALIDATORS_DEFAULT: Final = 4
SIGNING_CHUNK: Final = 2000
COMMIT_TIMEOUT_S: Final = 1800.0
SETUP_TIMEOUT_MS: Final = 30_000
MEMPOOL_FULL_PAUSE_S: Final = 0.5
ISSUER: Final = "enterprise-a"
BUYER: Final = "enterprise-b"
TAX_OFFICE: Final = "taxoffice"
INVOICE_CODE: Final = "044031900111"


# --- building and signing (in worker processes) --------------------------------------------


def invoice_document(n: int) -> InvoiceDocument:
    """The n-th benchmark invoice: two lines, exact totals, a distinct number and check code."""
    quantity_milli = 1000 + n % 7 * 250
    unit_price_cents = 1999 + n % 113
    amount = (quantity_milli * unit_price_cents + 500) // 1000
    tax = (amount * 1300 + 5000) // 10000
    service_tax = (50_000 * 600 + 5000) // 10000
    return parse_document(
        {
            "invoice_code": INVOICE_CODE,
            "invoice_number": f"{n:08d}",
            "issue_date": "2026-03-14",
            "seller": {"name": "深圳甲科技有限公司", "tax_id": "91440300MA5FXXXX1A"},
            "buyer": {"name": "上海乙贸易有限公司", "tax_id": "91310000MA1KYYYY2B"},
            "items": [
                {
                    "name": "*电子计算机*服务器配件",
                    "unit": "件",
                    "quantity_milli": quantity_milli,
                    "unit_price_cents": unit_price_cents,
                    "amount_cents": amount,
                    "tax_rate_bp": 1300,
                    "tax_cents": tax,
                },
                {
                    "name": "*信息技术服务*安装调试",
                    "quantity_milli": 1000,
                    "unit_price_cents": 50_000,
                    "amount_cents": 50_000,
                    "tax_rate_bp": 600,
                    "tax_cents": service_tax,
                },
            ],
            "total_amount_cents": amount + 50_000,
            "total_tax_cents": tax + service_tax,
            "total_with_tax_cents": amount + 50_000 + tax + service_tax,
            "check_code": f"{n * 7919 % 10**20:020d}",
        }
    )


def invoice_no(n: int) -> str:
    return f"{INVOICE_CODE}-{n:08d}"


@dataclass(frozen=True)
class SigningJob:
    """One worker's share of a phase: invoices `first` .. `first + count - 1`."""

    phase: str  # "issue" or "reimburse"
    seed: bytes  # the signer's Ed25519 private key bytes
    chain_id: str
    first: int
    count: int
    timestamp_ms: int
    recipients: tuple[bytes, ...]  # empty: issue without a sealed document


def _wire_args(job: SigningJob, n: int) -> tuple[str, dict[str, Any]]:
    if job.phase == "reimburse":
        return "reimburse", {"id": f"{ISSUER}/{invoice_no(n)}", "claim_ref": f"EXP-{n}"}
    document = invoice_document(n)
    if not job.recipients:
        return "issue", {
            "invoice_no": invoice_no(n),
            "buyer_org": BUYER,
            "digest": document.digest(),
        }
    return "issue", issue_args(document, invoice_no(n), ISSUER, BUYER, list(job.recipients))


def sign_chunk(job: SigningJob) -> list[tuple[bytes, bytes]]:
    """(tx_id, envelope) of each transaction of the job, in invoice order."""
    key = SigningKey.from_seed(job.seed)
    signed = []
    for n in range(job.first, job.first + job.count):
        method, args = _wire_args(job, n)
        tx = sign_transaction(key, job.chain_id, "invoice", method, args, n, job.timestamp_ms)
        signed.append((tx.tx_id, tx.envelope))
    return signed


def sign_phase(
    phase: str,
    key: SigningKey,
    chain_id: str,
    count: int,
    recipients: tuple[bytes, ...],
    workers: int,
    first: int = 0,
) -> tuple[list[tuple[bytes, bytes]], float]:
    """Every transaction of a phase (invoices `first` .. `first + count - 1`), signed in
    `workers` processes; and the seconds it took."""
    seed = key.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    now_ms = time.time_ns() // 1_000_000
    jobs = [
        SigningJob(
            phase,
            seed,
            chain_id,
            start,
            min(SIGNING_CHUNK, first + count - start),
            now_ms,
            recipients,
        )
        for start in range(first, first + count, SIGNING_CHUNK)
    ]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        chunks = list(pool.map(sign_chunk, jobs))
    return [item for chunk in chunks for item in chunk], time.perf_counter() - started


# --- submitting and following --------------------------------------------------------------


@dataclass
class PhaseResult:
    phase: str
    transactions: int
    signing_s: float
    started: float = 0.0
    finished: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    heights: set[int] = field(default_factory=set)
    mempool_full_retries: int = 0

    @property
    def seconds(self) -> float:
        return self.finished - self.started

    @property
    def committed(self) -> int:
        return sum(self.outcomes.values())

    @property
    def tx_per_s(self) -> float:
        return self.committed / self.seconds if self.seconds > 0 else 0.0


async def _follow(url: str, from_height: int, wanted: set[str], result: PhaseResult) -> None:
    """Count each wanted transaction's receipt as node `url` announces its commit."""
    async with AsyncClient(url) as client:
        async for event in client.events(from_height=from_height):
            data = event["data"]
            if event["event"] != "tx" or data["tx_id"] not in wanted:
                continue
            wanted.discard(data["tx_id"])
            result.outcomes["ok" if data["ok"] else data["error"]] += 1
            result.heights.add(data["height"])
            if not wanted:
                result.finished = time.perf_counter()
                return


async def _post_batch(
    session: aiohttp.ClientSession, url: str, batch: list[bytes], result: PhaseResult
) -> None:
    """Submit one batch; envelopes refused for a full mempool are sent again after a pause.

    Raises:
        RuntimeError: any other refusal (the benchmark's transactions are all valid).
    """
    while batch:
        body = msgpack.packb(batch, use_bin_type=True)
        async with session.post(
            f"{url}/v1/transactions/batch",
            data=body,
            headers={"Content-Type": "application/msgpack"},
        ) as answer:
            if answer.status == 429:
                result.mempool_full_retries += 1
                await asyncio.sleep(MEMPOOL_FULL_PAUSE_S)
                continue
            results = await answer.json()
            if answer.status != 200:
                raise RuntimeError(f"batch refused: HTTP {answer.status} {str(results)[:300]}")
        retry = []
        for envelope, item in zip(batch, results, strict=True):
            code = item.get("error", {}).get("code") if "error" in item else None
            if code == "mempool.full":
                retry.append(envelope)
            elif code not in (None, "tx.duplicate"):
                raise RuntimeError(f"envelope refused: {item}")
        if retry:
            result.mempool_full_retries += 1
            await asyncio.sleep(MEMPOOL_FULL_PAUSE_S)
        batch = retry


async def _submit(
    urls: Sequence[str],
    envelopes: list[bytes],
    batch_size: int,
    concurrency: int,
    result: PhaseResult,
) -> None:
    """Batches dealt round-robin to the nodes; `concurrency` requests in flight per node."""
    batches = [envelopes[i : i + batch_size] for i in range(0, len(envelopes), batch_size)]
    queues: list[asyncio.Queue[list[bytes]]] = [asyncio.Queue() for _ in urls]
    for index, batch in enumerate(batches):
        queues[index % len(urls)].put_nowait(batch)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker(url: str, queue: asyncio.Queue[list[bytes]]) -> None:
            while not queue.empty():
                await _post_batch(session, url, queue.get_nowait(), result)

        await asyncio.gather(
            *(
                worker(url, queue)
                for url, queue in zip(urls, queues, strict=True)
                for _ in range(concurrency)
            )
        )


async def run_phase(
    urls: Sequence[str],
    signed: list[tuple[bytes, bytes]],
    result: PhaseResult,
    batch_size: int,
    concurrency: int,
) -> PhaseResult:
    async with AsyncClient(urls[0]) as client:
        from_height = (await client.status())["height"] + 1
    wanted = {tx_id.hex() for tx_id, _ in signed}
    follower = asyncio.create_task(_follow(urls[0], from_height, wanted, result))
    await asyncio.sleep(0.2)  # the event stream is open before the first commit
    result.started = time.perf_counter()
    await _submit(urls, [envelope for _, envelope in signed], batch_size, concurrency, result)
    try:
        await asyncio.wait_for(follower, COMMIT_TIMEOUT_S)
    except TimeoutError:
        result.finished = time.perf_counter()
        print(f"{result.phase}: timed out, {len(wanted)} not committed", file=sys.stderr)
    return result


# --- the network ---------------------------------------------------------------------------


def _require_ok(answer: dict[str, Any]) -> None:
    if not answer["receipt"]["ok"]:
        raise RuntimeError(f"setup transaction failed: {answer['receipt']}")


def prepare_network(
    testnet: Testnet, url: str
) -> tuple[str, dict[str, SigningKey], tuple[bytes, ...]]:
    """Register the three members' encryption keys and authorise the issuer, through the
    node at `url`; returns the chain id, the member keys by org and the sealing recipients."""
    keys = {org: load_key_file(testnet.org(org).member_key) for org in (TAX_OFFICE, ISSUER, BUYER)}
    recipients = []
    with Client(url) as client:
        for org, key in keys.items():
            path = encryption_key_path(testnet.org(org).member_key)
            if path.exists():  # a running network measured again keeps its members' keys
                private = load_encryption_key_file(path)
            else:
                private = X25519PrivateKey.generate()
                write_encryption_key_file(path, private)
            public = public_key_bytes(private)
            recipients.append(public)
            answer = client.submit(
                "membership",
                "set_encryption_key",
                {"encryption_key": public},
                key,
                timeout_ms=SETUP_TIMEOUT_MS,
            )
            _require_ok(answer)
        answer = client.submit(
            "invoice",
            "authorize_issuer",
            {"org": ISSUER},
            keys[TAX_OFFICE],
            timeout_ms=SETUP_TIMEOUT_MS,
        )
        _require_ok(answer)
        chain_id = client.chain_id()
    return chain_id, keys, tuple(sorted(recipients))


def check_agreement(urls: Sequence[str], count: int) -> list[str]:
    """Problems found: nodes at different tips, or a sample invoice that differs or is not
    reimbursed on some node."""
    problems = []
    samples = sorted({0, count // 2, count - 1})
    deadline = time.monotonic() + 30
    while True:
        tips = []
        for url in urls:
            with Client(url) as client:
                status = client.status()
                tips.append((status["height"], status["last_block_hash"]))
        if len(set(tips)) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if len(set(tips)) != 1:
        problems.append(f"nodes disagree on the tip: {tips}")
    with Client(urls[0]) as client:
        print(f"final height {tips[0][0]}, view {client.status()['view']}")
    for n in samples:
        records = []
        for url in urls:
            with Client(url) as client:
                records.append(client.query("invoice", "invoices", ISSUER, invoice_no(n)))
        if any(record != records[0] for record in records):
            problems.append(f"invoice {n} differs between nodes")
        if records[0]["status"] != "reimbursed":
            problems.append(f"invoice {n} is {records[0]['status']}")
    return problems


def _report(result: PhaseResult) -> None:
    outcomes = ", ".join(f"{code} {count}" for code, count in sorted(result.outcomes.items()))
    print(
        f"{result.phase:<10} {result.transactions} txs signed in {result.signing_s:.1f} s; "
        f"committed {result.committed} ({outcomes}) in {result.seconds:.1f} s over "
        f"{len(result.heights)} blocks: {result.tx_per_s:,.0f} tx/s"
        + (
            f"; mempool-full retries {result.mempool_full_retries}"
            if result.mempool_full_retries
            else ""
        )
    )


def run(args: argparse.Namespace, directory: Path) -> int:
    network = LocalNetwork.generate(directory / "net", validators=args.validators)
    network.start_all()
    try:
        urls = [network.url(i) for i in range(args.validators)]
        chain_id, keys, recipients = prepare_network(network.testnet, network.url(0))
        sealed_for = () if args.no_seal else recipients
        results = []
        for phase, key in (("issue", keys[ISSUER]), ("reimburse", keys[BUYER])):
            signed, signing_s = sign_phase(
                phase, key, chain_id, args.invoices, sealed_for, args.workers
            )
            result = PhaseResult(phase, len(signed), signing_s)
            print(
                f"{phase}: {len(signed)} signed in {signing_s:.1f} s; submitting", file=sys.stderr
            )
            asyncio.run(run_phase(urls, signed, result, args.batch, args.concurrency))
            del signed
            results.append(result)
            _report(result)
        problems = check_agreement(urls, args.invoices)
    finally:
        network.stop_all()
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"validators {args.validators}, cores {os.cpu_count()}, load average after the run {load}"
    )
    for problem in problems:
        print(f"PROBLEM: {problem}")
    complete = all(r.outcomes == Counter({"ok": args.invoices}) for r in results)
    return 0 if complete and not problems else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.bench_invoice", description=__doc__)
    parser.add_argument("--invoices", type=int, default=INVOICES_DEFAULT, help="invoices to issue")
    parser.add_argument("--batch", type=int, default=BATCH_DEFAULT, help="envelopes per request")
    parser.add_argument(
        "--concurrency", type=int, default=CONCURRENCY_PER_NODE_DEFAULT, help="requests per node"
    )
    parser.add_argument("--validators", type=int, default=VALIDATORS_DEFAULT)
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="signing processes"
    )
    parser.add_argument("--no-seal", action="store_true", help="issue digests without documents")
    args = parser.parse_args(argv)
    if args.invoices < 1 or args.batch < 1 or args.concurrency < 1 or args.workers < 1:
        parser.error("--invoices, --batch, --concurrency and --workers must be >= 1")
    with tempfile.TemporaryDirectory(prefix="chancery-bench-invoice-") as scratch:
        return run(args, Path(scratch))


if __name__ == "__main__":
    raise SystemExit(main())
