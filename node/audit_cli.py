"""`chancery audit`: replay a chain from genesis with the contracts and check every block.

    chancery audit --from URL --genesis genesis.json [--json]
    chancery audit --data DIR --genesis genesis.json [--json]

`--from` reads a node's export stream (`GET /v1/blocks`), `--data` a node's data directory
(left untouched: the audit opens a private snapshot of it, so the node may keep running).
What is checked, and in what order, is in `node/audit.py` and docs/audit.md.

Output: a progress bar on stderr (blocks/s, tx/s) while it runs, then either the summary
line `audited N blocks, M transactions in S s (R tx/s): clean`, or one paragraph naming the
first divergence (height, transaction, check, expected and found) and the summary.
`--json` prints one JSON report on stdout instead.

Exit codes: 0 clean, 1 divergent, 2 the audit could not run (bad arguments, an unreadable
genesis file, an unreachable node, an unreadable data directory, another chain's data),
with one `error: ...` line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Final

from tqdm import tqdm

from contracts.registry import builtin_registry
from node.audit import AuditResult, ChainAuditor
from node.audit_sources import AuditSourceError, audit_data_dir, audit_remote
from node.crypto import SignatureVerifier
from node.genesis import Genesis, GenesisError, load_genesis

EXIT_CLEAN: Final = 0
EXIT_DIVERGENT: Final = 1
EXIT_COULD_NOT_RUN: Final = 2
# How often the progress bar's tx/s figure is refreshed.
PROGRESS_REFRESH_S: Final = 0.5


class _Progress:
    """A tqdm bar on stderr (silent when stderr is not a terminal): tqdm's own rate gives
    blocks/s, the postfix tx/s."""

    def __init__(self) -> None:
        self._bar: tqdm | None = None
        self._transactions = 0
        self._started_s = time.perf_counter()
        self._refreshed_s = self._started_s

    def start(self, total_blocks: int) -> None:
        self._bar = tqdm(
            total=total_blocks,
            desc="audit",
            unit="block",
            file=sys.stderr,
            disable=None,
            leave=False,
            dynamic_ncols=True,
        )
        self._started_s = self._refreshed_s = time.perf_counter()

    def advance(self, blocks: int, transactions: int) -> None:
        if self._bar is None:
            return
        self._transactions += transactions
        now_s = time.perf_counter()
        if now_s - self._refreshed_s >= PROGRESS_REFRESH_S:
            rate = self._transactions / (now_s - self._started_s)
            self._bar.set_postfix_str(f"{self._transactions} tx, {rate:.0f} tx/s", refresh=False)
            self._refreshed_s = now_s
        self._bar.update(blocks)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def summary_line(result: AuditResult) -> str:
    verdict = "clean"
    if result.divergence is not None:
        verdict = f"divergent at height {result.divergence.height}"
    return (
        f"audited {result.blocks} blocks, {result.transactions} transactions in "
        f"{result.seconds:.2f} s ({result.tx_per_s:.0f} tx/s): {verdict}"
    )


def report_json(args: argparse.Namespace, genesis: Genesis, result: AuditResult) -> dict[str, Any]:
    """The machine-readable report (docs/audit.md)."""
    source = {"url": args.source_url} if args.source_url is not None else {"data": args.data}
    return {
        "result": "clean" if result.clean else "divergent",
        "chain_id": genesis.chain_id,
        "genesis_hash": genesis.genesis_hash.hex(),
        "source": source,
        "blocks": result.blocks,
        "transactions": result.transactions,
        "height": result.height,
        "seconds": round(result.seconds, 3),
        "tx_per_s": round(result.tx_per_s, 1),
        "divergence": None if result.divergence is None else result.divergence.to_json(),
    }


def _could_not_run(args: argparse.Namespace, message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    if args.json:
        print(json.dumps({"result": "error", "message": message}, indent=2))
    return EXIT_COULD_NOT_RUN


def _run_audit(args: argparse.Namespace, genesis: Genesis, progress: _Progress) -> AuditResult:
    """Raises: AuditSourceError when there is no chain to audit."""
    verifier = SignatureVerifier(args.threads)
    auditor = ChainAuditor(genesis, builtin_registry(), verifier.executor)
    try:
        if args.source_url is not None:
            return audit_remote(
                args.source_url,
                genesis,
                auditor,
                on_total=progress.start,
                on_progress=progress.advance,
            )
        return audit_data_dir(
            Path(args.data),
            genesis,
            auditor,
            on_total=progress.start,
            on_progress=progress.advance,
            snapshot_parent=None if args.snapshot_dir is None else Path(args.snapshot_dir),
        )
    finally:
        verifier.close()


def _audit(args: argparse.Namespace) -> int:
    if args.threads < 0:
        return _could_not_run(args, "--threads must be 0 (one per core) or more")
    try:
        genesis = load_genesis(Path(args.genesis))
    except GenesisError as exc:
        return _could_not_run(args, str(exc))
    progress = _Progress()
    try:
        result = _run_audit(args, genesis, progress)
    except AuditSourceError as exc:
        return _could_not_run(args, str(exc))
    finally:
        progress.close()
    if args.json:
        print(json.dumps(report_json(args, genesis, result), indent=2))
        print(summary_line(result), file=sys.stderr)
    else:
        if result.divergence is not None:
            print(result.divergence.describe())
        print(summary_line(result))
    return EXIT_CLEAN if result.clean else EXIT_DIVERGENT


def add_audit_command(commands: Any) -> None:
    """Add `chancery audit` to the CLI's subcommands."""
    audit = commands.add_parser(
        "audit", help="replay a chain from genesis and check every block (exit 0 clean)"
    )
    source = audit.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--from", dest="source_url", metavar="URL", help="a node's API URL (its export stream)"
    )
    source.add_argument(
        "--data", metavar="DIR", help="a node's data directory (read through a private snapshot)"
    )
    audit.add_argument("--genesis", required=True, metavar="FILE", help="the chain's genesis.json")
    audit.add_argument("--json", action="store_true", help="print a JSON report")
    audit.add_argument(
        "--threads", type=int, default=0, metavar="N", help="signature threads (0: one per core)"
    )
    audit.add_argument(
        "--snapshot-dir",
        metavar="DIR",
        help="where --data's snapshot goes (default: the system's temporary directory; on "
        "DIR's filesystem, table files are hard-linked instead of copied)",
    )
    audit.set_defaults(handler=_audit)
