"""`chancery ranking ...`: "first N paid orders win" campaigns (docs/ranking.md).

    merchant     create CAMPAIGN --title T --winners N --window-start TIME --window-end TIME
                 import CAMPAIGN FILE.csv --salt-file S
                 close CAMPAIGN
    anyone       check CAMPAIGN --order NO --salt-file S

`import` reads the CSV as a stream: one order a row, the order number in the first column
and the payment time in the second, as integer milliseconds since the Unix epoch or an
ISO-8601 time with a UTC offset (`2026-11-11T00:00:00.123+08:00`, `...Z`); a first row
whose time does not parse is taken for a header and skipped. Each order number is hashed
locally, `order_digest = SHA-256(salt || order number as UTF-8)`, where the salt is the
salt file's bytes without trailing CR/LF; only digests and times reach the chain. Chunks
of up to 10,000 orders go one transaction at a time, each waited for, with a progress bar
on stderr. Resuming is asking the chain: the campaign's `order_count` is how many rows of
the file are already on chain (chunks commit whole or not at all, in file order), so a
second run skips exactly those and continues. The same file must be given again.

`close` repeats `ranking.close` until the campaign is `closed` (each call ranks up to
65,536 orders). `check` hashes the order number the same way, asks the node for the
order's rank and audit path, and verifies the path against the campaign's `ranking_root`
locally (node/merkle.py); exit code 1 unless the proof verifies.

Common options (`--key`, `--url`, `--chain-id`, `--genesis`, `--timeout-ms`) and exit codes
follow `chancery invoice`: 2 for usage errors, 1 for runtime failures.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from tqdm import tqdm

from contracts import ranking
from node.client import Client
from node.crypto import SigningKey, load_key_file
from node.invoice_cli import COMMIT_TIMEOUT_MS_DEFAULT, open_client
from node.merkle import InclusionProof, MerkleError, verify_inclusion

CHUNK_ORDERS_MAX: Final = ranking.ORDERS_PER_CALL_MAX
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS: Final = timedelta(milliseconds=1)


def _usage_error(message: str) -> Exception:
    from node.cli import UsageError

    return UsageError(message)


def _command_failed(message: str) -> Exception:
    from node.cli import CommandFailed

    return CommandFailed(message)


# --- orders --------------------------------------------------------------------------------


def read_salt(path: Path) -> bytes:
    """The salt: the file's bytes without trailing CR/LF. Raises: UsageError."""
    try:
        salt = path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise _usage_error(f"--salt-file {path}: {exc}") from None
    if not salt:
        raise _usage_error(f"--salt-file {path}: the salt is empty")
    return salt


def order_digest(salt: bytes, order_number: str) -> bytes:
    return hashlib.sha256(salt + order_number.encode()).digest()


def parse_time_ms(value: str) -> int:
    """Integer milliseconds since the epoch, or ISO-8601 with an offset (truncated to ms).

    Raises:
        ValueError: anything else, including an ISO time without a UTC offset.
    """
    text = value.strip()
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"time {value!r} has no UTC offset")
    milliseconds = (moment - EPOCH) // ONE_MS
    if milliseconds < 0:
        raise ValueError(f"time {value!r} is before 1970")
    return milliseconds


def read_orders(path: Path) -> Iterator[tuple[str, int]]:
    """(order number, paid_at_ms) for each data row of the CSV, streamed.

    Raises:
        UsageError: a row without two fields or with a time that does not parse (a first
            row excepted: that is a header).
    """
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            for line, row in enumerate(csv.reader(stream), start=1):
                if not row or not any(field.strip() for field in row):
                    continue
                if len(row) < 2 or not row[0].strip():
                    raise _usage_error(f"{path}:{line}: expected ORDER_NUMBER,PAYMENT_TIME")
                try:
                    paid_at_ms = parse_time_ms(row[1])
                except ValueError as exc:
                    if line == 1:
                        continue  # a header row
                    raise _usage_error(f"{path}:{line}: {exc}") from None
                yield row[0].strip(), paid_at_ms
    except OSError as exc:
        raise _usage_error(f"{path}: {exc}") from None


def count_orders(path: Path) -> int:
    return sum(1 for _ in read_orders(path))


def chunks(
    orders: Iterator[tuple[str, int]], salt: bytes, skip: int, size: int
) -> Iterator[list[list[Any]]]:
    """Wire chunks `[[digest, paid_at_ms], ...]` of the orders after the first `skip`."""
    chunk: list[list[Any]] = []
    for position, (number, paid_at_ms) in enumerate(orders):
        if position < skip:
            continue
        chunk.append([order_digest(salt, number), paid_at_ms])
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --- talking to the node -------------------------------------------------------------------


def _submit(
    client: Client, key: SigningKey, method: str, wire: dict[str, Any], timeout_ms: int
) -> dict[str, Any]:
    """Submit a ranking call and wait for its commit.

    Raises:
        CommandFailed: committed with a failed receipt (naming code and details).
        ClientError: refused, unreachable, or not committed in time.
    """
    answer = client.submit(ranking.NAME, method, wire, key, timeout_ms=timeout_ms)
    receipt = answer["receipt"]
    if not receipt["ok"]:
        details = f" {json.dumps(receipt['result'], default=str)}" if receipt["result"] else ""
        raise _command_failed(
            f"ranking.{method} refused: {receipt['error']}{details} "
            f"(tx {answer['tx_id']}, height {answer['height']})"
        )
    return answer


def _campaign(client: Client, campaign_id: str) -> dict[str, Any]:
    return client.query(ranking.NAME, "campaigns", campaign_id)


def _campaign_id(value: str) -> str:
    if not ranking.IDENTIFIER_PATTERN.fullmatch(value):
        raise _usage_error(f"CAMPAIGN {value!r}: 1..64 characters of [A-Za-z0-9._:-]")
    return value


def _time_argument(value: str, option: str) -> int:
    try:
        return parse_time_ms(value)
    except ValueError as exc:
        raise _usage_error(f"{option}: {exc}") from None


# --- commands ------------------------------------------------------------------------------


def _create(args: argparse.Namespace) -> int:
    key = load_key_file(Path(args.key))
    wire = {
        "campaign_id": _campaign_id(args.campaign),
        "title": args.title,
        "winners": args.winners,
        "window_start_ms": _time_argument(args.window_start, "--window-start"),
        "window_end_ms": _time_argument(args.window_end, "--window-end"),
    }
    with open_client(args, key) as client:
        answer = _submit(client, key, "create", wire, args.timeout_ms)
    print(json.dumps({"tx_id": answer["tx_id"], "height": answer["height"]}, indent=2))
    return 0


def _import(args: argparse.Namespace) -> int:
    key = load_key_file(Path(args.key))
    campaign_id = _campaign_id(args.campaign)
    salt = read_salt(Path(args.salt_file))
    path = Path(args.file)
    if not 0 < args.chunk <= CHUNK_ORDERS_MAX:
        raise _usage_error(f"--chunk must be 1..{CHUNK_ORDERS_MAX}")
    total = count_orders(path)
    with open_client(args, key) as client:
        already = _campaign(client, campaign_id)["order_count"]
        if already > total:
            raise _command_failed(
                f"the campaign has {already} orders but {path} has only {total}: another file?"
            )
        bar = tqdm(
            total=total, initial=already, desc="orders", unit="order", file=sys.stderr, disable=None
        )
        with bar:
            for chunk in chunks(read_orders(path), salt, already, args.chunk):
                wire = {"campaign_id": campaign_id, "orders": chunk}
                _submit(client, key, "add_orders", wire, args.timeout_ms)
                bar.update(len(chunk))
        campaign = _campaign(client, campaign_id)
    summary = {
        "campaign_id": campaign_id,
        "resumed_after": already,
        "imported": total - already,
        "order_count": campaign["order_count"],
        "window_count": campaign["window_count"],
    }
    print(json.dumps(summary, indent=2))
    return 0


def _close(args: argparse.Namespace) -> int:
    key = load_key_file(Path(args.key))
    campaign_id = _campaign_id(args.campaign)
    with open_client(args, key) as client:
        while True:
            answer = _submit(client, key, "close", {"campaign_id": campaign_id}, args.timeout_ms)
            result = answer["receipt"]["result"]
            print(
                f"ranked {result['ranked_count']}/{result['window_count']}",
                file=sys.stderr,
            )
            if result["status"] == ranking.STATUS_CLOSED:
                break
        campaign = _campaign(client, campaign_id)
    print(json.dumps(campaign, indent=2))
    return 0


def verify_order_answer(order: bytes, answer: dict[str, Any], ranking_root_hex: str) -> bool:
    """Whether the answer's audit path leads from `order` to the campaign's root."""
    if answer["proof"] is None or answer["ranking_root"] != ranking_root_hex:
        return False
    try:
        proof = InclusionProof.from_json(answer["proof"])
    except MerkleError:
        return False
    return verify_inclusion(order, proof, bytes.fromhex(ranking_root_hex))


def _check(args: argparse.Namespace) -> int:
    key = load_key_file(Path(args.key))
    campaign_id = _campaign_id(args.campaign)
    order = order_digest(read_salt(Path(args.salt_file)), args.order)
    with open_client(args, key) as client:
        campaign = _campaign(client, campaign_id)
        answer = client.query(ranking.NAME, "campaigns", campaign_id, "orders", order.hex())
    report: dict[str, Any] = {
        "campaign_id": campaign_id,
        "order_digest": order.hex(),
        "status": campaign["status"],
        "in_window": answer["in_window"],
        "rank": answer["rank"],
        "won": answer["won"],
        "ranking_root": campaign["ranking_root"],
        "verified": False,
    }
    if campaign["status"] == ranking.STATUS_CLOSED and answer["in_window"]:
        report["verified"] = verify_order_answer(order, answer, campaign["ranking_root"])
        report["won"] = report["verified"] and answer["proof"]["index"] < campaign["winners"]
    print(json.dumps(report, indent=2))
    return 0 if report["verified"] else 1


# --- the parser ----------------------------------------------------------------------------


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", required=True, metavar="FILE", help="signer's key file")
    parser.add_argument("--url", help="node API URL (default: $CHANCERY_URL)")
    parser.add_argument("--chain-id", metavar="ID", help="chain id for signed reads")
    parser.add_argument("--genesis", metavar="FILE", help="read the chain id from genesis.json")
    parser.add_argument(
        "--timeout-ms",
        type=int,
        default=COMMIT_TIMEOUT_MS_DEFAULT,
        metavar="MS",
        help=f"wait for each commit this long (default {COMMIT_TIMEOUT_MS_DEFAULT})",
    )


def add_ranking_commands(commands: Any) -> None:
    """Add `chancery ranking ...` to the CLI's subcommands."""
    ranking_commands = commands.add_parser(
        "ranking", help='"first N paid orders win" campaigns: create, import, close, check'
    ).add_subparsers(dest="ranking_command", required=True, metavar="COMMAND")

    create = ranking_commands.add_parser("create", help="merchant: open a campaign")
    create.add_argument("campaign", metavar="CAMPAIGN")
    create.add_argument("--title", required=True)
    create.add_argument("--winners", required=True, type=int, metavar="N")
    create.add_argument("--window-start", required=True, metavar="TIME", help="ms or ISO-8601")
    create.add_argument("--window-end", required=True, metavar="TIME", help="exclusive")
    _add_common(create)
    create.set_defaults(handler=_create)

    imports = ranking_commands.add_parser("import", help="merchant: add orders from a CSV")
    imports.add_argument("campaign", metavar="CAMPAIGN")
    imports.add_argument("file", metavar="FILE.csv", help="ORDER_NUMBER,PAYMENT_TIME rows")
    imports.add_argument("--salt-file", required=True, metavar="FILE")
    imports.add_argument(
        "--chunk", type=int, default=CHUNK_ORDERS_MAX, metavar="N", help="orders per tx"
    )
    _add_common(imports)
    imports.set_defaults(handler=_import)

    close = ranking_commands.add_parser("close", help="merchant: rank and close")
    close.add_argument("campaign", metavar="CAMPAIGN")
    _add_common(close)
    close.set_defaults(handler=_close)

    check = ranking_commands.add_parser("check", help="anyone: an order's rank, verified")
    check.add_argument("campaign", metavar="CAMPAIGN")
    check.add_argument("--order", required=True, metavar="NO", help="the order number")
    check.add_argument("--salt-file", required=True, metavar="FILE")
    _add_common(check)
    check.set_defaults(handler=_check)
