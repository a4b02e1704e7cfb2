"""`chancery evidence anchor|verify`: fingerprint files on the chain and prove it offline.

`anchor` hashes files locally (the files never leave the machine), anchors their SHA-256
with the `evidence` contract, waits for the commit and writes one proof bundle per file,
`FILE.proof.json`, next to it. With `--batch`, one `anchor_batch` transaction anchors the
RFC 6962 root over every file's hash, and each bundle adds that file's audit path.

`verify` checks a file against its bundle and a genesis file with `node.verifier`, offline,
and exits 0 only when every check passes.

Exit codes follow `node.cli`: 2 for usage errors (bad arguments, unreadable inputs, a bad
genesis or key file), 1 for runtime failures and for a bundle that does not verify.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from tqdm import tqdm

from contracts.runtime import IDENTIFIER_PATTERN
from node.block import Receipt, to_json_value
from node.client import DEFAULT_URL, AsyncClient, ClientError, coerce_args
from node.crypto import SigningKey, load_key_file
from node.encoding import EncodingError, canonical_packb
from node.merkle import leaf_hash, node_hash
from node.transaction import decode_envelope
from node.verifier import (
    GenesisFormatError,
    TrustRoot,
    VerificationReport,
    hash_file,
    read_genesis,
    verify_bundle,
    verify_bundle_bytes,
)

PROOF_SUFFIX: Final = ".proof.json"
KIND_DEFAULT: Final = "file"
URL_ENV_VAR: Final = "CHANCERY_URL"
# Single anchors in flight at once (each is one wait=commit request to the node).
SUBMIT_CONCURRENCY_MAX: Final = 32
# How long the node holds each wait=commit request (the API's maximum is 60000).
COMMIT_TIMEOUT_MS_DEFAULT: Final = 60_000
DUPLICATE_ERROR: Final = "evidence.duplicate"
EXIT_NOT_VERIFIED: Final = 1


def _usage_error(message: str) -> Exception:
    # node.cli imports this module to build its parser, so its errors are imported late.
    from node.cli import UsageError

    return UsageError(message)


def _command_failed(message: str) -> Exception:
    from node.cli import CommandFailed

    return CommandFailed(message)


def _progress(total: int, what: str) -> tqdm:
    """A progress bar on stderr (silent when stderr is not a terminal)."""
    return tqdm(total=total, desc=what, unit="file", file=sys.stderr, disable=None, leave=False)


# --- files ---------------------------------------------------------------------------------


def proof_path(path: Path) -> Path:
    return path.with_name(path.name + PROOF_SUFFIX)


def _is_anchorable(path: Path) -> bool:
    """Not a bundle, nor a bundle being written (so a second run does not anchor proofs)."""
    name = path.name
    return not (name.endswith(PROOF_SUFFIX) or (name.startswith(".") and name.endswith(".tmp")))


def expand_inputs(arguments: Sequence[str]) -> list[Path]:
    """The files to anchor: each FILE, and every regular file under each directory (sorted,
    recursively), skipping proof bundles. Each file once, in argument order.

    Raises:
        UsageError: an argument that does not exist, or nothing to anchor.
    """
    files: dict[Path, None] = {}
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted(Path(root) / name for root, _, names in os.walk(path) for name in names)
            files.update((p, None) for p in found if p.is_file() and _is_anchorable(p))
        elif path.is_file():
            files[path] = None
        else:
            raise _usage_error(f"{argument}: no such file or directory")
    if not files:
        raise _usage_error("no files to anchor")
    return list(files)


def hash_files(paths: Sequence[Path]) -> list[bytes]:
    """SHA-256 of each file, streamed (constant memory per file).

    Raises:
        UsageError: a file that cannot be read.
    """
    hashes = []
    with _progress(len(paths), "hashing") as bar:
        for path in paths:
            try:
                hashes.append(hash_file(path))
            except OSError as exc:
                raise _usage_error(f"{path}: cannot read ({exc.strerror or exc})") from None
            bar.update()
    return hashes


def write_bundle(path: Path, bundle: dict[str, Any]) -> None:
    """Write `bundle` as JSON to `path` atomically: a temporary file, then a rename."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(bundle, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# --- batches -------------------------------------------------------------------------------


class BatchTree:
    """Every level of the RFC 6962 tree over a batch's file hashes, so that each of many
    audit paths costs O(log n) instead of rebuilding the tree.

    Levels are built bottom up, an unpaired last node promoted unchanged, which is the
    RFC's split at the largest power of two below n (see node/merkle.py).
    """

    def __init__(self, file_hashes: Sequence[bytes]) -> None:
        if not file_hashes:
            raise ValueError("a batch needs at least one file")
        level = [leaf_hash(file_hash) for file_hash in file_hashes]
        self.levels = [level]
        while len(level) > 1:
            upper = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                upper.append(level[-1])
            self.levels.append(upper)
            level = upper

    @property
    def size(self) -> int:
        return len(self.levels[0])

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def audit_path(self, index: int) -> list[bytes]:
        """The siblings of leaf `index` from the leaf upward."""
        path = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            index >>= 1
        return path


def batch_section(tree: BatchTree, file_hash: bytes, index: int) -> dict[str, Any]:
    return {
        "leaf": file_hash.hex(),
        "index": index,
        "size": tree.size,
        "path": [sibling.hex() for sibling in tree.audit_path(index)],
    }


# --- bundles -------------------------------------------------------------------------------


def evidence_section(bundle: dict[str, Any]) -> dict[str, Any]:
    """The `evidence` section of a transaction's proof bundle, read from the signed body,
    the receipt and the header it carries (what the API's anchor proof route returns)."""
    transaction = decode_envelope(bytes.fromhex(bundle["tx"]["envelope"]))
    body, args = transaction.body, transaction.body.args
    result = Receipt.decode(bytes.fromhex(bundle["receipt"])).result
    header = bundle["block"]["header"]
    section: dict[str, Any] = {
        "contract": body.contract,
        "method": body.method,
        "org": result["org"],
        "signer": transaction.signer.hex(),
        "height": header["height"],
        "timestamp": header["timestamp"],
        "kind": args["kind"],
        "meta": to_json_value(args.get("meta")),
        "tx_id": transaction.tx_id.hex(),
    }
    if body.method == "anchor_batch":
        section.update(root=args["root"].hex(), count=args["count"])
    else:
        section.update(hash=args["hash"].hex(), subject=args.get("subject"))
    return section


@dataclass(frozen=True)
class Anchored:
    """An anchor transaction's bundle (with its evidence section) and how it came to be."""

    bundle: dict[str, Any]
    duplicate: bool

    @property
    def evidence(self) -> dict[str, Any]:
        return self.bundle["evidence"]

    def describe(self) -> str:
        e = self.evidence
        what = "already anchored" if self.duplicate else "anchored"
        return f"{what} by {e['org']} at height {e['height']} (tx {e['tx_id']})"


@dataclass(frozen=True)
class AnchorRequest:
    """What to anchor: the signer, the contract method and its wire arguments."""

    key: SigningKey
    method: str
    args: dict[str, Any]
    timeout_ms: int


async def anchor_one(client: AsyncClient, request: AnchorRequest) -> Anchored:
    """Submit one anchor and wait for its commit; on `evidence.duplicate` (this
    organisation anchored the hash before) take the earlier anchor instead.

    Raises:
        CommandFailed: the anchor failed, or is still pending after the wait.
        ClientError: the node refused the transaction or could not be reached.
    """
    try:
        answer = await client.submit(
            "evidence", request.method, request.args, request.key, timeout_ms=request.timeout_ms
        )
    except ClientError as exc:
        if exc.code != "tx.commit_timeout":
            raise
        tx_id = exc.details.get("tx_id", "?")
        raise _command_failed(
            f"tx {tx_id} is not committed after {request.timeout_ms} ms and stays pending; "
            "run the same command again later to fetch its proof"
        ) from None
    receipt = answer["receipt"]
    duplicate = not receipt["ok"] and receipt["error"] == DUPLICATE_ERROR
    if not receipt["ok"] and not duplicate:
        details = f" {json.dumps(receipt['result'])}" if receipt["result"] else ""
        raise _command_failed(f"the anchor failed: {receipt['error']}{details}")
    tx_id = receipt["result"]["tx_id"] if duplicate else answer["tx_id"]
    bundle = await client.transaction(tx_id, proof=True)
    section = evidence_section(bundle)
    if section["method"] != request.method:  # hashes and batch roots share one index
        raise _command_failed(
            f"this organisation anchored this value with evidence.{section['method']} "
            f"(tx {tx_id}), not evidence.{request.method}"
        )
    return Anchored({**bundle, "evidence": section}, duplicate)


def _check_bundle(bundle: dict[str, Any], trust: TrustRoot, file_hash: bytes) -> None:
    """Verify a bundle before writing it, against the node's own genesis file: this
    catches a node or tool error, not a dishonest node (the auditor's genesis does that).

    Raises:
        CommandFailed: naming the checks that failed.
    """
    report = verify_bundle(bundle, trust, file_hash=file_hash)
    if not report.ok:
        raise _command_failed(f"the node's proof does not verify: {', '.join(report.failed())}")


async def anchor_batch(
    client: AsyncClient, request: AnchorRequest, paths: Sequence[Path], hashes: list[bytes]
) -> Anchored:
    """One `anchor_batch` of every file's hash; one bundle per file, each with its path."""
    tree = BatchTree(hashes)
    args = {**request.args, "root": tree.root, "count": tree.size}
    batch = AnchorRequest(request.key, "anchor_batch", args, request.timeout_ms)
    anchored = await anchor_one(client, batch)
    trust = read_genesis(await client.genesis_bytes())
    first = {**anchored.bundle, "batch": batch_section(tree, hashes[0], 0)}
    _check_bundle(first, trust, hashes[0])
    with _progress(len(paths), "writing proofs") as bar:
        for index, (path, file_hash) in enumerate(zip(paths, hashes, strict=True)):
            bundle = {**anchored.bundle, "batch": batch_section(tree, file_hash, index)}
            write_bundle(proof_path(path), bundle)
            bar.update()
    return anchored


async def anchor_each(
    client: AsyncClient, request: AnchorRequest, paths: Sequence[Path], hashes: list[bytes]
) -> dict[bytes, Anchored]:
    """One `anchor` per distinct hash, SUBMIT_CONCURRENCY_MAX in flight; files with the
    same content share one anchor. Writes every file's bundle.

    Raises:
        CommandFailed, ClientError: the first anchor that failed (the others are cancelled).
    """
    files_by_hash: dict[bytes, list[Path]] = {}
    for path, file_hash in zip(paths, hashes, strict=True):
        files_by_hash.setdefault(file_hash, []).append(path)
    trust = read_genesis(await client.genesis_bytes())
    results: dict[bytes, Anchored] = {}
    waiting = iter(files_by_hash)  # shared by the workers: each takes the next hash

    async def worker(bar: tqdm) -> None:
        for file_hash in waiting:
            args = {**request.args, "hash": file_hash}
            one = AnchorRequest(request.key, "anchor", args, request.timeout_ms)
            anchored = await anchor_one(client, one)
            _check_bundle(anchored.bundle, trust, file_hash)
            for path in files_by_hash[file_hash]:
                write_bundle(proof_path(path), anchored.bundle)
                bar.update()
            results[file_hash] = anchored

    workers = min(SUBMIT_CONCURRENCY_MAX, len(files_by_hash))
    with _progress(len(paths), "anchoring") as bar:
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(worker(bar))
        except ExceptionGroup as failures:
            raise failures.exceptions[0] from None
    return results


# --- commands ------------------------------------------------------------------------------


def _identifier(value: str | None, option: str) -> None:
    if value is not None and not IDENTIFIER_PATTERN.fullmatch(value):
        raise _usage_error(f"{option} must be 1..64 characters of [A-Za-z0-9._:-], got {value!r}")


def _anchor_args(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments every anchor shares: kind, and meta and subject when given."""
    _identifier(args.kind, "--kind")
    _identifier(args.subject, "--subject")
    if args.batch and args.subject is not None:
        raise _usage_error("--subject anchors single files; it cannot be used with --batch")
    shared: dict[str, Any] = {"kind": args.kind}
    if args.meta is not None:
        try:
            meta = json.loads(args.meta)
            coerce_args("evidence", "anchor", {"meta": meta})  # refuses floats
        except ValueError as exc:
            raise _usage_error(f"--meta: {exc}") from None
        if not isinstance(meta, dict):
            raise _usage_error("--meta must be a JSON object")
        try:
            canonical_packb(meta)
        except EncodingError as exc:  # e.g. an integer beyond 64 bits
            raise _usage_error(f"--meta cannot be encoded: {exc}") from None
        shared["meta"] = meta
    if args.subject is not None:
        shared["subject"] = args.subject
    return shared


async def _anchor_async(
    args: argparse.Namespace, request: AnchorRequest, paths: list[Path], hashes: list[bytes]
) -> None:
    url = args.url or os.environ.get(URL_ENV_VAR) or DEFAULT_URL
    try:
        client = AsyncClient(url)
    except ValueError as exc:
        raise _usage_error(f"--url: {exc}") from None
    async with client:
        if args.batch:
            anchored = await anchor_batch(client, request, paths, hashes)
            print(f"{len(paths)} file(s) as one batch, root {anchored.evidence['root']}:")
            print(f"  {anchored.describe()}")
            print(f"  proofs: FILE{PROOF_SUFFIX} next to each file")
            return
        results = await anchor_each(client, request, paths, hashes)
    for path, file_hash in zip(paths, hashes, strict=True):
        print(f"{path}: {results[file_hash].describe()} -> {proof_path(path)}")


def _anchor(args: argparse.Namespace) -> int:
    shared = _anchor_args(args)
    key = load_key_file(Path(args.key))
    paths = expand_inputs(args.files)
    hashes = hash_files(paths)
    method = "anchor_batch" if args.batch else "anchor"
    request = AnchorRequest(key, method, shared, args.timeout_ms)
    asyncio.run(_anchor_async(args, request, paths, hashes))
    return 0


def _read_bytes(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise _usage_error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None


def _summary(file: str, proof: bytes) -> str:
    """What a passing report proves about the file, in one sentence."""
    evidence = json.loads(proof)["evidence"]
    when = datetime.fromtimestamp(evidence["timestamp"] / 1000, tz=UTC)
    return (
        f"verified: {file} was anchored by {evidence['org']} (key {evidence['signer']}) "
        f"in block {evidence['height']} at {when.isoformat(timespec='milliseconds')}, "
        f"tx {evidence['tx_id']}"
    )


def _print_report(report: VerificationReport, file: str, proof: bytes) -> None:
    for name, passed, detail in report.checks:
        print(f"{'ok  ' if passed else 'FAIL'}  {name}" + (f": {detail}" if detail else ""))
    if report.ok:
        print(_summary(file, proof))
    else:
        failed = report.failed()
        print(f"NOT verified: {len(failed)} check(s) failed: {'; '.join(failed)}")


def _verify(args: argparse.Namespace) -> int:
    try:
        trust = read_genesis(_read_bytes(args.genesis, "genesis file"))
    except GenesisFormatError as exc:
        raise _usage_error(f"{args.genesis}: {exc}") from None
    try:
        file_hash = hash_file(args.file)
    except OSError as exc:
        raise _usage_error(f"{args.file}: cannot read ({exc.strerror or exc})") from None
    proof = _read_bytes(args.proof, "proof")
    report = verify_bundle_bytes(proof, trust, file_hash=file_hash)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print_report(report, args.file, proof)
    return 0 if report.ok else EXIT_NOT_VERIFIED


def add_evidence_commands(commands: Any) -> None:
    """Add `chancery evidence anchor|verify` to the CLI's subcommands."""
    evidence = commands.add_parser(
        "evidence", help="anchor files' fingerprints and verify them offline"
    ).add_subparsers(dest="evidence_command", required=True, metavar="{anchor,verify}")

    anchor = evidence.add_parser("anchor", help="anchor files' SHA-256 and write their proofs")
    anchor.add_argument("files", nargs="+", metavar="FILE", help="files or directories")
    anchor.add_argument("--key", required=True, metavar="FILE", help="signer's key file")
    anchor.add_argument("--kind", default=KIND_DEFAULT, help=f"default: {KIND_DEFAULT}")
    anchor.add_argument("--subject", metavar="S", help="thread single anchors into a timeline")
    anchor.add_argument("--meta", metavar="JSON", help="a JSON object recorded with the anchor")
    anchor.add_argument(
        "--batch", action="store_true", help="one transaction anchoring the files' RFC 6962 root"
    )
    anchor.add_argument(
        "--timeout-ms",
        type=int,
        default=COMMIT_TIMEOUT_MS_DEFAULT,
        metavar="MS",
        help=f"wait for the commit this long (default {COMMIT_TIMEOUT_MS_DEFAULT})",
    )
    anchor.add_argument("--url", help=f"node API URL (default: ${URL_ENV_VAR}, else {DEFAULT_URL})")
    anchor.set_defaults(handler=_anchor)

    verify = evidence.add_parser("verify", help="check a file against its proof, offline")
    verify.add_argument("file", metavar="FILE")
    verify.add_argument("proof", metavar="PROOF.json")
    verify.add_argument("--genesis", required=True, metavar="FILE", help="the chain's genesis.json")
    verify.add_argument("--json", action="store_true", help="the report as JSON")
    verify.set_defaults(handler=_verify)
