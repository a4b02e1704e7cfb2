"""`python -m node.bench_audit`: how fast `chancery audit --data` replays a chain.

Builds a chain with the real ledger exactly as `node.bench_sync` does (4 genesis validators,
every block certified by 3 of them, `membership.add_member` transactions), then times the
audit of its data directory: the snapshot, every check of node/audit.py and the replay with
the contracts. Prints blocks/s and tx/s of the replay and of the whole run. `--lookahead 1`
verifies each block's signatures only when the replay reaches it (no overlap), to measure
what the overlap buys; `--pool processes` verifies on processes instead of threads.

`--workdir DIR` keeps the chain in DIR/source and reuses it on the next run (the same
layout as `node.bench_sync --workdir`, so one chain serves both benchmarks).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path

from contracts.registry import builtin_registry
from node.audit import LOOKAHEAD_BLOCKS_DEFAULT, ChainAuditor
from node.audit_sources import audit_data_dir
from node.bench_sync import bench_network, build_source
from node.crypto import SignatureVerifier


def verify_processes(workers: int) -> ProcessPoolExecutor:
    """A process pool for the signature checks (`--pool processes`), to compare with the
    thread pool `chancery audit` uses: processes do not share the replay's interpreter lock,
    but on a machine whose cores are all busy they bring nothing (see docs/audit.md)."""
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m node.bench_audit", description=__doc__)
    parser.add_argument("--blocks", type=int, default=1000, help="chain length")
    parser.add_argument("--txs-per-block", type=int, default=100)
    parser.add_argument("--workdir", type=Path, help="keep and reuse the chain here")
    parser.add_argument("--workers", type=int, default=0, help="verify workers (0: one per core)")
    parser.add_argument(
        "--pool", choices=("processes", "threads"), default="threads", help="verify pool kind"
    )
    parser.add_argument(
        "--lookahead",
        type=int,
        default=LOOKAHEAD_BLOCKS_DEFAULT,
        help=f"blocks verified ahead of the replay (default {LOOKAHEAD_BLOCKS_DEFAULT})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="chancery-bench-audit-"))
    network = bench_network(args.blocks * args.txs_per_block)
    source_path = workdir / "source"
    try:
        print(f"building {args.blocks} blocks x {args.txs_per_block} txs in {workdir}")
        build_started_s = time.perf_counter()
        build_source(network, source_path, args.blocks, args.txs_per_block).store.close()
        print(f"chain ready in {time.perf_counter() - build_started_s:.1f} s; auditing")
        started_s = time.perf_counter()
        if args.pool == "threads":
            verifier = SignatureVerifier(args.workers)
            executor: Executor = verifier.executor
            workers = verifier.workers
        else:
            workers = args.workers or os.cpu_count() or 1
            executor = verify_processes(workers)
        auditor = ChainAuditor(
            network.genesis, builtin_registry(), executor, lookahead_blocks=args.lookahead
        )
        try:
            result = audit_data_dir(source_path, network.genesis, auditor)
        finally:
            executor.shutdown()
        total_s = time.perf_counter() - started_s
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    verdict = "clean" if result.clean else f"DIVERGENT: {result.divergence}"
    print(
        f"audited {result.blocks} blocks / {result.transactions} txs: replay {result.seconds:.2f} s"
        f" ({result.blocks / result.seconds:.0f} blocks/s, {result.tx_per_s:.0f} tx/s);"
        f" whole run with snapshot and state check {total_s:.2f} s"
        f" ({result.transactions / total_s:.0f} tx/s); {workers} verify {args.pool},"
        f" lookahead {args.lookahead}; {verdict}"
    )
    return 0 if result.clean else 1


if __name__ == "__main__":
    sys.exit(main())
