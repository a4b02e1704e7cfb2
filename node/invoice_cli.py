"""`chancery invoice ...`: electronic invoices for each party (docs/invoices.md).

    tax office   authorize ORG [--max-invoices N] [--valid-until-ms MS] | revoke ORG | void
    enterprise   keygen | register-encryption-key | issue FILE --buyer ORG | transfer |
                 lock | unlock | reimburse | void | show
    anyone       show ID [--attempts]

Every command signs with `--key` (an Ed25519 member key file). A member's X25519 key for
sealing lives next to it (`member.key` -> `member.x25519.key`, PEM PKCS#8, mode 0600;
`--encryption-key` to put it elsewhere): `keygen` creates it, `register-encryption-key`
creates it if needed and registers its public half with `membership.set_encryption_key`.

`issue` validates the JSON document (node/invoice_document.py), seals it (node/sealing.py)
for every registered encryption key of the issuer, the buyer and every tax office, binds
the seal to the invoice id, submits `invoice.issue`, waits for the commit and prints the
id. `show` fetches the record, unseals what the caller's encryption key can open and
checks the document against the chain's digest (the sealed document is read from the
issuing transaction; the record holds its SHA-256); `--attempts` adds every transaction that
named the invoice, refused ones included, by scanning the blocks since its issuance.

Reads are signed with `--key` (API.md "Access"), so the commands work against nodes with
`api.read_access = "members"` too; the chain id that signatures cover comes from
`--chain-id`, `$CHANCERY_CHAIN_ID`, `--genesis FILE`, or else the node's open status route.

Exit codes follow `node.cli`: 2 for usage errors (arguments, documents, key files), 1 for
runtime failures: the node refused or is unreachable, a transaction was committed with a
failed receipt (the code and details are printed), or `show` found a document that does
not match the chain's digest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from contracts import invoice
from node.block import BlockHeader, Receipt, to_json_value
from node.client import DEFAULT_URL, Client, ClientError
from node.crypto import SigningKey, load_key_file
from node.invoice_document import (
    InvoiceDocument,
    InvoiceDocumentError,
    canonical_json,
    document_from_bytes,
    load_document,
)
from node.sealing import (
    SealError,
    encryption_key_path,
    load_encryption_key_file,
    public_key_bytes,
    seal,
    sealed_recipients,
    unseal,
    write_encryption_key_file,
)
from node.transaction import decode_envelope

URL_ENV_VAR: Final = "CHANCERY_URL"
CHAIN_ID_ENV_VAR: Final = "CHANCERY_CHAIN_ID"
COMMIT_TIMEOUT_MS_DEFAULT: Final = 30_000
# What a seal is bound to: the invoice id, so a sealed document cannot be passed off as
# another invoice's.
SEAL_CONTEXT_DOMAIN: Final = b"chancery/invoice/v1\n"
# Blocks per export request while `show --attempts` scans the chain.
ATTEMPT_SCAN_BLOCKS_PER_REQUEST: Final = 200
EXIT_DIGEST_MISMATCH: Final = 1


def _usage_error(message: str) -> Exception:
    # node.cli imports this module to build its parser, so its errors are imported late.
    from node.cli import UsageError

    return UsageError(message)


def _command_failed(message: str) -> Exception:
    from node.cli import CommandFailed

    return CommandFailed(message)


def seal_context(invoice_id: str) -> bytes:
    return SEAL_CONTEXT_DOMAIN + invoice_id.encode()


# --- talking to the node -------------------------------------------------------------------


def _chain_id(args: argparse.Namespace, url: str) -> str:
    """The chain id reads are signed for.

    Raises:
        UsageError: a bad genesis file, or a node that requires signed reads and no way
            to learn its chain id.
    """
    chain_id = args.chain_id or os.environ.get(CHAIN_ID_ENV_VAR)
    if chain_id:
        return chain_id
    if args.genesis:
        try:
            return json.loads(Path(args.genesis).read_bytes())["chain_id"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _usage_error(f"--genesis {args.genesis}: no chain_id ({exc})") from None
    with Client(url) as probe:
        try:
            return probe.chain_id()
        except ClientError as exc:
            if exc.code != "request.unauthenticated":
                raise
    raise _usage_error(
        "this node requires signed reads: pass --genesis genesis.json or --chain-id ID "
        f"(or set ${CHAIN_ID_ENV_VAR})"
    )


def open_client(args: argparse.Namespace, key: SigningKey) -> Client:
    """A client that signs every read with `key`. Raises: UsageError for a bad --url."""
    url = args.url or os.environ.get(URL_ENV_VAR) or DEFAULT_URL
    try:
        return Client(url, chain_id=_chain_id(args, url), read_key=key)
    except ValueError as exc:  # the URL (Client refuses anything but http(s)://host[:port])
        raise _usage_error(f"--url: {exc}") from None


def submit(
    client: Client, key: SigningKey, method: str, wire_args: dict[str, Any], timeout_ms: int
) -> dict[str, Any]:
    """Submit an invoice call and wait for its commit; the committed answer.

    Raises:
        CommandFailed: committed with a failed receipt (naming code and details).
        ClientError: the node refused the transaction, is unreachable, or did not commit
            it in time (`tx.commit_timeout`: it stays pending).
    """
    return _committed(
        client.submit(invoice.NAME, method, wire_args, key, timeout_ms=timeout_ms), method
    )


def _committed(answer: dict[str, Any], what: str) -> dict[str, Any]:
    receipt = answer["receipt"]
    if not receipt["ok"]:
        details = f" {json.dumps(receipt['result'])}" if receipt["result"] else ""
        raise _command_failed(
            f"{what} refused: {receipt['error']}{details} "
            f"(tx {answer['tx_id']}, height {answer['height']})"
        )
    return answer


def organisation_encryption_keys(client: Client, org: str) -> list[bytes]:
    """The X25519 keys registered by the organisation's active members."""
    answer = client.query("membership", "orgs", org)
    return sorted(
        bytes.fromhex(key["encryption_key"])
        for key in answer["keys"]
        if key["active"] and key["encryption_key"]
    )


def tax_offices(client: Client) -> list[str]:
    orgs = client.query("membership", "orgs")["orgs"]
    return [org["id"] for org in orgs if invoice.ROLE_TAX_OFFICE in org["roles"]]


def recipients_for(client: Client, issuer: str, buyer: str) -> dict[str, list[bytes]]:
    """Organisation -> its encryption keys, for the issuer, the buyer and every tax office.

    Raises:
        CommandFailed: an organisation that must be able to read the invoice has no key.
    """
    orgs = list(dict.fromkeys([issuer, buyer, *tax_offices(client)]))
    keys = {org: organisation_encryption_keys(client, org) for org in orgs}
    missing = [org for org, found in keys.items() if not found]
    if missing:
        raise _command_failed(
            f"no encryption key registered for {', '.join(missing)}: a member of each must run "
            "`chancery invoice register-encryption-key` before invoices can be sealed for it"
        )
    return keys


def issue_args(
    document: InvoiceDocument,
    invoice_no: str,
    issuer: str,
    buyer: str,
    recipients: list[bytes],
) -> dict[str, Any]:
    """The wire arguments of `invoice.issue`: digest, and the document sealed for
    `recipients` and bound to the id."""
    invoice_id = invoice.invoice_id_of(issuer, invoice_no)
    sealed = seal(document.canonical_bytes(), recipients, context=seal_context(invoice_id))
    return {
        "invoice_no": invoice_no,
        "buyer_org": buyer,
        "digest": document.digest(),
        "sealed": sealed,
    }


def fetch_invoice(client: Client, invoice_id: str) -> dict[str, Any]:
    """The invoice record as the node lets the caller see it.

    Raises:
        ClientError: `not_found` for an invoice that does not exist or is not the caller's.
    """
    issuer, invoice_no = _split_id(invoice_id)
    return client.query(invoice.NAME, "invoices", issuer, invoice_no)


def fetch_sealed(client: Client, record: dict[str, Any]) -> bytes | None:
    """The sealed document of an invoice record: `args.sealed` of its issuing transaction
    (state keeps only its SHA-256 and size). None when it was issued without one.

    Raises:
        CommandFailed: the transaction's document does not hash to the record's `sha256`.
        ClientError: the node could not answer.
    """
    if record["sealed"] is None:
        return None
    answer = client.transaction(record["issued"]["tx_id"])
    sealed = decode_envelope(bytes.fromhex(answer["envelope"])).body.args.get("sealed")
    if (
        not isinstance(sealed, bytes)
        or hashlib.sha256(sealed).hexdigest() != record["sealed"]["sha256"]
    ):
        raise _command_failed(
            f"the issuing transaction {record['issued']['tx_id']} does not carry the sealed "
            "document the record names"
        )
    return sealed


def open_invoice(
    record: dict[str, Any], sealed: bytes | None, private_key: X25519PrivateKey | None
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Unseal the invoice's document with `private_key` if it is a recipient, and check it
    against the chain's digest. Returns (document JSON or None, verification)."""
    verification: dict[str, Any] = {"sealed": sealed is not None, "unsealed": False}
    if sealed is None:
        return None, verification
    verification["recipients"] = [key.hex() for key in sealed_recipients(sealed)]
    if private_key is None:
        verification["note"] = "no encryption key file: cannot unseal"
        return None, verification
    try:
        plain = unseal(sealed, private_key, context=seal_context(record["id"]))
    except SealError as exc:
        verification["note"] = f"{exc.code}: {exc}"
        return None, verification
    verification["unsealed"] = True
    digest = hashlib.sha256(plain).digest()
    verification["digest_matches"] = digest.hex() == record["digest"]
    try:
        document = document_from_bytes(plain)
    except InvoiceDocumentError as exc:
        verification["note"] = f"the unsealed document is not a valid invoice: {exc}"
        return json.loads(plain), verification
    return document.to_json(), verification


def invoice_attempts(client: Client, invoice_id: str, from_height: int) -> Iterator[dict]:
    """Every committed invoice transaction naming `invoice_id` from `from_height` on, with
    its receipt: refused attempts are on the chain as failed receipts, not in state."""
    tip = client.status()["height"]
    height = from_height
    while height <= tip:
        limit = min(ATTEMPT_SCAN_BLOCKS_PER_REQUEST, tip - height + 1)
        for block in client.export_blocks(height, limit):
            header = BlockHeader.decode(block["header"])
            for index, (envelope, receipt_bytes) in enumerate(
                zip(block["txs"], block["receipts"], strict=True)
            ):
                attempt = _attempt(envelope, receipt_bytes, invoice_id)
                if attempt is not None:
                    yield {"height": header.height, "index": index, **attempt}
        height += limit


def _attempt(envelope: bytes, receipt_bytes: bytes, invoice_id: str) -> dict[str, Any] | None:
    transaction = decode_envelope(envelope)
    body = transaction.body
    if body.contract != invoice.NAME or body.args.get("id") != invoice_id:
        return None
    receipt = Receipt.decode(receipt_bytes)
    return {
        "tx_id": transaction.tx_id.hex(),
        "method": body.method,
        "signer": transaction.signer.hex(),
        "claim_ref": body.args.get("claim_ref"),
        "ok": receipt.ok,
        "error": receipt.error,
        "details": None if receipt.ok else to_json_value(receipt.result),
    }


def _split_id(invoice_id: str) -> tuple[str, str]:
    """Raises: UsageError unless `invoice_id` is `<issuer org>/<invoice no>`."""
    parts = invoice.split_invoice_id(invoice_id)
    if parts is None:
        raise _usage_error(f"an invoice id is <issuer org>/<invoice no>, got {invoice_id!r}")
    return parts


def _identifier(value: str, what: str) -> str:
    if not invoice.IDENTIFIER_PATTERN.fullmatch(value):
        raise _usage_error(f"{what} must be 1..64 characters of [A-Za-z0-9._:-], got {value!r}")
    return value


# --- commands ------------------------------------------------------------------------------


def _encryption_key_file(args: argparse.Namespace) -> Path:
    return Path(args.encryption_key) if args.encryption_key else encryption_key_path(Path(args.key))


def _keygen(args: argparse.Namespace) -> int:
    path = Path(args.out) if args.out else _encryption_key_file(args)
    key = X25519PrivateKey.generate()
    write_encryption_key_file(path, key)
    print(public_key_bytes(key).hex())
    print(f"wrote {path}", file=sys.stderr)
    return 0


def _register(args: argparse.Namespace) -> int:
    key = load_key_file(Path(args.key))
    path = _encryption_key_file(args)
    if not path.exists():
        write_encryption_key_file(path, X25519PrivateKey.generate())
        print(f"wrote {path}", file=sys.stderr)
    public = public_key_bytes(load_encryption_key_file(path))
    with open_client(args, key) as client:
        answer = client.submit(
            "membership",
            "set_encryption_key",
            {"encryption_key": public},
            key,
            timeout_ms=args.timeout_ms,
        )
        _committed(answer, "set_encryption_key")
    print(public.hex())
    return 0


def _authorize(args: argparse.Namespace) -> int:
    wire: dict[str, Any] = {"org": _identifier(args.org, "ORG")}
    if args.max_invoices is not None:
        wire["max_invoices"] = args.max_invoices
    if args.valid_until_ms is not None:
        wire["valid_until_ms"] = args.valid_until_ms
    return _simple(args, "authorize_issuer", wire)


def _revoke(args: argparse.Namespace) -> int:
    return _simple(args, "revoke_issuer", {"org": _identifier(args.org, "ORG")})


def _simple(args: argparse.Namespace, method: str, wire: dict[str, Any]) -> int:
    key = load_key_file(Path(args.key))
    with open_client(args, key) as client:
        answer = submit(client, key, method, wire, args.timeout_ms)
    print(
        json.dumps(
            {
                "tx_id": answer["tx_id"],
                "height": answer["height"],
                "result": answer["receipt"]["result"],
            },
            indent=2,
        )
    )
    return 0


def _read_document(path: str) -> InvoiceDocument:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise _usage_error(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return load_document(data)
    except InvoiceDocumentError as exc:
        raise _usage_error(f"{path}: not a valid invoice: {exc}") from None


def _issue(args: argparse.Namespace) -> int:
    document = _read_document(args.file)
    invoice_no = _identifier(args.invoice_no or document.invoice_no, "--invoice-no")
    buyer = _identifier(args.buyer, "--buyer")
    key = load_key_file(Path(args.key))
    with open_client(args, key) as client:
        issuer = client.query("membership", "members", key.public_key.hex())["org"]
        recipients = recipients_for(client, issuer, buyer)
        keys = sorted({k for found in recipients.values() for k in found})
        try:
            wire = issue_args(document, invoice_no, issuer, buyer, keys)
        except SealError as exc:
            raise _command_failed(f"cannot seal: {exc}") from None
        answer = submit(client, key, "issue", wire, args.timeout_ms)
    print(answer["receipt"]["result"]["id"])
    print(
        f"issued at height {answer['height']}, tx {answer['tx_id']}, digest "
        f"{document.digest().hex()}, sealed for {', '.join(recipients)}",
        file=sys.stderr,
    )
    return 0


def _invoice_id(value: str) -> str:
    _split_id(value)
    return value


def _transfer(args: argparse.Namespace) -> int:
    wire = {"id": _invoice_id(args.id), "to_org": _identifier(args.to_org, "TO_ORG")}
    return _simple(args, "transfer", wire)


def _lock(args: argparse.Namespace) -> int:
    wire = {"id": _invoice_id(args.id), "claim_ref": _identifier(args.claim_ref, "CLAIM_REF")}
    return _simple(args, "lock", wire)


def _unlock(args: argparse.Namespace) -> int:
    return _simple(args, "unlock", {"id": _invoice_id(args.id)})


def _reimburse(args: argparse.Namespace) -> int:
    wire = {"id": _invoice_id(args.id), "claim_ref": _identifier(args.claim_ref, "CLAIM_REF")}
    return _simple(args, "reimburse", wire)


def _void(args: argparse.Namespace) -> int:
    wire: dict[str, Any] = {"id": _invoice_id(args.id), "reason": args.reason}
    if args.replacement_id is not None:
        wire["replacement_id"] = _invoice_id(args.replacement_id)
    return _simple(args, "void", wire)


def _private_key_or_none(args: argparse.Namespace) -> X25519PrivateKey | None:
    path = _encryption_key_file(args)
    if not path.exists() and not args.encryption_key:
        return None
    return load_encryption_key_file(path)


def _show(args: argparse.Namespace) -> int:
    invoice_id = _invoice_id(args.id)
    key = load_key_file(Path(args.key))
    private_key = _private_key_or_none(args)
    with open_client(args, key) as client:
        record = fetch_invoice(client, invoice_id)
        sealed = fetch_sealed(client, record)
        attempts = None
        if args.attempts:
            start = record["issued"]["height"]
            attempts = list(invoice_attempts(client, invoice_id, start))
    document, verification = open_invoice(record, sealed, private_key)
    answer: dict[str, Any] = {"invoice": record, "document": document, "verification": verification}
    if attempts is not None:
        answer["attempts"] = attempts
    if args.document_out and document is not None:
        Path(args.document_out).write_bytes(canonical_json(document))
    print(json.dumps(answer, indent=2, ensure_ascii=False))
    if verification.get("digest_matches") is False:
        print("error: the unsealed document does not match the chain's digest", file=sys.stderr)
        return EXIT_DIGEST_MISMATCH
    return 0


# --- the parser ----------------------------------------------------------------------------


def _add_common(parser: argparse.ArgumentParser, *, timeout: bool = True) -> None:
    parser.add_argument("--key", required=True, metavar="FILE", help="signer's key file")
    parser.add_argument("--url", help=f"node API URL (default: ${URL_ENV_VAR}, else {DEFAULT_URL})")
    parser.add_argument("--chain-id", metavar="ID", help="chain id for signed reads")
    parser.add_argument("--genesis", metavar="FILE", help="read the chain id from genesis.json")
    if timeout:
        parser.add_argument(
            "--timeout-ms",
            type=int,
            default=COMMIT_TIMEOUT_MS_DEFAULT,
            metavar="MS",
            help=f"wait for the commit this long (default {COMMIT_TIMEOUT_MS_DEFAULT})",
        )


def _add_encryption_key(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--encryption-key",
        metavar="FILE",
        help="X25519 key file (default: next to --key, NAME.x25519.key)",
    )


def _add_key_commands(invoice_commands: Any) -> None:
    keygen = invoice_commands.add_parser("keygen", help="create this member's X25519 key file")
    keygen.add_argument("--key", required=True, metavar="FILE", help="the member's signing key")
    keygen.add_argument("--out", metavar="FILE", help="default: next to --key")
    keygen.set_defaults(handler=_keygen, encryption_key=None)

    register = invoice_commands.add_parser(
        "register-encryption-key", help="create (if needed) and register the X25519 key"
    )
    _add_common(register)
    _add_encryption_key(register)
    register.set_defaults(handler=_register)


def _add_tax_office_commands(invoice_commands: Any) -> None:
    authorize = invoice_commands.add_parser("authorize", help="tax office: let an org issue")
    authorize.add_argument("org", metavar="ORG")
    authorize.add_argument("--max-invoices", type=int, metavar="N", help="quota")
    authorize.add_argument("--valid-until-ms", type=int, metavar="MS", help="expiry (block time)")
    _add_common(authorize)
    authorize.set_defaults(handler=_authorize)

    revoke = invoice_commands.add_parser("revoke", help="tax office: stop an org issuing")
    revoke.add_argument("org", metavar="ORG")
    _add_common(revoke)
    revoke.set_defaults(handler=_revoke)


def _add_holder_commands(invoice_commands: Any) -> None:
    issue = invoice_commands.add_parser("issue", help="seal and issue an invoice document")
    issue.add_argument("file", metavar="FILE", help="the invoice JSON document")
    issue.add_argument("--buyer", required=True, metavar="ORG", help="the buyer organisation")
    issue.add_argument("--invoice-no", metavar="NO", help="default: <code>-<number>")
    _add_common(issue)
    issue.set_defaults(handler=_issue)

    for name, handler, extra, help_text in (
        ("transfer", _transfer, "to_org", "holder: give the invoice to another org"),
        ("lock", _lock, "claim_ref", "holder: lock while a claim is approved"),
        ("unlock", _unlock, None, "locking org: release the lock"),
        ("reimburse", _reimburse, "claim_ref", "holder: reimburse, once and for all"),
    ):
        command = invoice_commands.add_parser(name, help=help_text)
        command.add_argument("id", metavar="ID", help="<issuer org>/<invoice no>")
        if extra is not None:
            command.add_argument(extra, metavar=extra.upper())
        _add_common(command)
        command.set_defaults(handler=handler)

    void = invoice_commands.add_parser("void", help="issuer or tax office: red-letter reversal")
    void.add_argument("id", metavar="ID")
    void.add_argument("--reason", required=True, help="why (1..256 characters)")
    void.add_argument("--replacement-id", metavar="ID", help="the invoice that replaces it")
    _add_common(void)
    void.set_defaults(handler=_void)

    show = invoice_commands.add_parser("show", help="the record, unsealed where you may")
    show.add_argument("id", metavar="ID")
    show.add_argument("--attempts", action="store_true", help="every tx naming it, refused too")
    show.add_argument("--document-out", metavar="FILE", help="write the unsealed document")
    _add_common(show, timeout=False)
    _add_encryption_key(show)
    show.set_defaults(handler=_show)


def add_invoice_commands(commands: Any) -> None:
    """Add `chancery invoice ...` to the CLI's subcommands."""
    invoice_commands = commands.add_parser(
        "invoice", help="electronic invoices: authorise, issue, hold, reimburse, show"
    ).add_subparsers(dest="invoice_command", required=True, metavar="COMMAND")
    _add_key_commands(invoice_commands)
    _add_tax_office_commands(invoice_commands)
    _add_holder_commands(invoice_commands)
