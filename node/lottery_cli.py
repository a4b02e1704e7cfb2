"""`chancery lottery ...`: every step of a notarised draw (docs/lottery.md).

    sponsor      create | import | seal | reveal
    notary       approve | seal | reveal | draw | notarize | cancel
    anyone       draw-verify PROJECT | check PROJECT --identity ID --salt-file S

`create` and `approve` generate the party's 32-byte secret, keep it in a mode-0600 file
(`--secret-file`, default `PROJECT.sponsor.secret` / `PROJECT.notary.secret`) and put
only its SHA-256 on chain; `reveal` reads it back after the seal.

`import PROJECT FILE --salt-file S` streams FILE (one identity per line, or a CSV column
with `--csv-column NAME|NUMBER`), turns each identity into its entry
`SHA-256(salt || 0x00 || identity)` locally (no identity leaves the machine), and submits
chunks of up to 10,000 entries, waiting for each commit, with a progress bar on stderr.
It is resumable: it asks the chain how many entries the project has, checks that the file
starts with exactly those, skips them and continues; the contract refuses a repeated
entry, so nothing is ever added twice, and nothing is skipped.

`draw-verify PROJECT` fetches the draw's proof bundle, checks it offline against the
genesis file (`--genesis`, else the node's), recomputes seed and winners with
`contracts.lottery_draw`, and checks each winner's entry by its audit path to the sealed
root. `check` tells a participant whether their identity is in the list, at which index,
whether it won, and verifies the audit path.

Exit codes follow `node.cli`: 2 for usage errors, 1 for runtime failures (a refused
call, a failed verification).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import secrets
import sys
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any, Final

from tqdm import tqdm

from contracts import lottery, lottery_draw
from node import merkle
from node.client import DEFAULT_URL, Client
from node.crypto import SigningKey, load_key_file
from node.invoice_cli import CHAIN_ID_ENV_VAR, URL_ENV_VAR, open_client
from node.verifier import read_genesis, verify_bundle

COMMIT_TIMEOUT_MS_DEFAULT: Final = 60_000
SECRET_BYTES: Final = 32
SECRET_FILE_MODE: Final = 0o600
ENTRY_SEPARATOR: Final = b"\x00"
IMPORT_CHUNK_ENTRIES_MAX: Final = lottery.ENTRIES_PER_CALL_MAX
STATEMENT_READ_BYTES: Final = 1 << 20


def _usage_error(message: str) -> Exception:
    from node.cli import UsageError  # node.cli imports this module to build its parser

    return UsageError(message)


def _command_failed(message: str) -> Exception:
    from node.cli import CommandFailed

    return CommandFailed(message)


# --- secrets, salts and entries ------------------------------------------------------------


def write_secret_file(path: Path, secret: bytes) -> None:
    """Create `path` (mode 0600, never overwriting) holding `secret` as hex.

    Raises:
        UsageError: the file exists already.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_FILE_MODE)
    except FileExistsError:
        raise _usage_error(f"{path}: exists already; refusing to overwrite a secret") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(secret.hex() + "\n")
    os.chmod(path, SECRET_FILE_MODE)


def read_secret_file(path: Path) -> bytes:
    """Raises: UsageError for a missing, group/other-readable or malformed secret file."""
    try:
        if path.stat().st_mode & 0o077:
            raise _usage_error(f"{path}: readable by others; chmod 600 it")
        text = path.read_text().strip()
    except OSError as exc:
        raise _usage_error(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) != SECRET_BYTES:
        raise _usage_error(f"{path}: not a {SECRET_BYTES}-byte hex secret")
    return secret


def read_salt(path: str) -> bytes:
    """The salt: the file's bytes without trailing whitespace. Raises: UsageError."""
    try:
        salt = Path(path).read_bytes().rstrip()
    except OSError as exc:
        raise _usage_error(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not salt:
        raise _usage_error(f"{path}: the salt file is empty")
    return salt


def entry_of(salt: bytes, identity: str) -> bytes:
    """A participant's entry: `SHA-256(salt || 0x00 || identity UTF-8)`, identity stripped."""
    return hashlib.sha256(salt + ENTRY_SEPARATOR + identity.strip().encode()).digest()


def identities(handle: io.TextIOBase, csv_column: str | None) -> Iterator[str]:
    """Identities in file order: non-blank lines, or one CSV column (a header name, or a
    1-based column number when there is no header). Raises: UsageError."""
    if csv_column is None:
        for line in handle:
            if line.strip():
                yield line.strip()
        return
    rows = csv.reader(handle)
    if csv_column.isdigit():
        column = int(csv_column) - 1
    else:
        header = next(rows, [])
        if csv_column not in header:
            raise _usage_error(f"--csv-column {csv_column!r} is not in the header {header}")
        column = header.index(csv_column)
    for number, row in enumerate(rows, start=1):
        if not row:
            continue
        if column >= len(row) or not row[column].strip():
            raise _usage_error(f"CSV row {number} has no identity in column {csv_column}")
        yield row[column].strip()


# --- talking to the node -------------------------------------------------------------------


def _read_client(args: argparse.Namespace) -> Client:
    if args.key:
        return open_client(args, load_key_file(Path(args.key)))
    return Client(args.url or os.environ.get(URL_ENV_VAR) or DEFAULT_URL)


def _submit(args: argparse.Namespace, method: str, wire: dict[str, Any]) -> dict[str, Any]:
    key = load_key_file(Path(args.key))
    with open_client(args, key) as client:
        return _call(client, key, method, wire, args.timeout_ms)


def _call(
    client: Client, key: SigningKey, method: str, wire: dict[str, Any], timeout_ms: int
) -> dict[str, Any]:
    """Submit and wait for the commit. Raises: CommandFailed on a failed receipt."""
    answer = client.submit(lottery.NAME, method, wire, key, timeout_ms=timeout_ms)
    receipt = answer["receipt"]
    if not receipt["ok"]:
        details = f" {json.dumps(receipt['result'])}" if receipt["result"] else ""
        raise _command_failed(
            f"{method} refused: {receipt['error']}{details} (tx {answer['tx_id']}, "
            f"height {answer['height']})"
        )
    return answer


def _print_answer(answer: dict[str, Any]) -> int:
    summary = {"tx_id": answer["tx_id"], "height": answer["height"]}
    print(json.dumps({**summary, "result": answer["receipt"]["result"]}, indent=2))
    return 0


def _project_id(value: str) -> str:
    if not lottery.IDENTIFIER_PATTERN.fullmatch(value):
        raise _usage_error(f"PROJECT must be 1..64 characters of [A-Za-z0-9._:-], got {value!r}")
    return value


def _secret_path(args: argparse.Namespace, party: str) -> Path:
    return Path(args.secret_file or f"{args.project}.{party}.secret")


# --- the steps -----------------------------------------------------------------------------


def _create(args: argparse.Namespace) -> int:
    project_id = _project_id(args.project)
    rules: dict[str, Any] = {}
    if args.rules:
        try:
            rules = json.loads(Path(args.rules).read_text())
        except (OSError, ValueError) as exc:
            raise _usage_error(f"--rules {args.rules}: not a JSON file ({exc})") from None
    path = _secret_path(args, "sponsor")
    secret = secrets.token_bytes(SECRET_BYTES)
    write_secret_file(path, secret)
    print(f"sponsor secret kept in {path}: reveal it only after the seal", file=sys.stderr)
    wire = {
        "project_id": project_id,
        "title": args.title,
        "rules": rules,
        "notary_org": args.notary_org,
        "winners": args.winners,
        "sponsor_commit": hashlib.sha256(secret).digest(),
    }
    return _print_answer(_submit(args, "create", wire))


def _approve(args: argparse.Namespace) -> int:
    path = _secret_path(args, "notary")
    secret = secrets.token_bytes(SECRET_BYTES)
    write_secret_file(path, secret)
    print(f"notary secret kept in {path}: reveal it only after the seal", file=sys.stderr)
    wire = {
        "project_id": _project_id(args.project),
        "notary_commit": hashlib.sha256(secret).digest(),
    }
    return _print_answer(_submit(args, "approve", wire))


def _reveal(args: argparse.Namespace) -> int:
    key = load_key_file(Path(args.key))
    with open_client(args, key) as client:
        project = client.query(lottery.NAME, "projects", _project_id(args.project))
        org = client.query("membership", "members", key.public_key.hex())["org"]
        party = "sponsor" if org == project["sponsor_org"] else "notary"
        secret = read_secret_file(_secret_path(args, party))
        wire = {"project_id": args.project, "secret": secret}
        return _print_answer(_call(client, key, "reveal", wire, args.timeout_ms))


def _project_call(method: str) -> Any:
    def handler(args: argparse.Namespace) -> int:
        return _print_answer(_submit(args, method, {"project_id": _project_id(args.project)}))

    return handler


def _notarize(args: argparse.Namespace) -> int:
    digest = hashlib.sha256()
    try:
        with open(args.statement, "rb") as handle:
            while block := handle.read(STATEMENT_READ_BYTES):
                digest.update(block)
    except OSError as exc:
        raise _usage_error(f"{args.statement}: cannot read ({exc.strerror or exc})") from None
    wire = {"project_id": _project_id(args.project), "statement_digest": digest.digest()}
    return _print_answer(_submit(args, "notarize", wire))


def _cancel(args: argparse.Namespace) -> int:
    wire = {"project_id": _project_id(args.project), "reason": args.reason}
    return _print_answer(_submit(args, "cancel", wire))


# --- import --------------------------------------------------------------------------------


def _skip_imported(client: Client, project_id: str, stream: Iterator[bytes], already: int) -> None:
    """Consume the `already` entries the chain has, checking the file's first and last of
    them sit at those indices on chain. Raises: CommandFailed if the file differs."""
    if already == 0:
        return
    first = next(stream, None)
    last = first
    if already > 1:
        last = next(islice(stream, already - 2, None), None)
    for expected, entry in ((0, first), (already - 1, last)):
        found = None
        if entry is not None:
            found = client.query(lottery.NAME, "projects", project_id, "entries", entry.hex())
        if found is None or found["index"] != expected:
            raise _command_failed(
                f"the chain has {already} entries of {project_id!r} but the file's entry "
                f"{expected} is not its entry {expected}: not the same list, or another salt"
            )


def _import(args: argparse.Namespace) -> int:
    project_id = _project_id(args.project)
    if not 1 <= args.chunk_entries <= IMPORT_CHUNK_ENTRIES_MAX:
        raise _usage_error(f"--chunk-entries must be in 1..{IMPORT_CHUNK_ENTRIES_MAX}")
    salt = read_salt(args.salt_file)
    key = load_key_file(Path(args.key))
    try:
        handle = open(args.file, encoding="utf-8", newline="")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise _usage_error(f"{args.file}: cannot read ({exc.strerror or exc})") from None
    with handle, open_client(args, key) as client:
        already = client.query(lottery.NAME, "projects", project_id)["count"]
        stream = (entry_of(salt, identity) for identity in identities(handle, args.csv_column))
        _skip_imported(client, project_id, stream, already)
        if args.max_entries is not None:
            stream = islice(stream, args.max_entries)
        count = already
        with tqdm(
            initial=already, unit=" entries", file=sys.stderr, desc=project_id, disable=None
        ) as progress:
            while chunk := list(islice(stream, args.chunk_entries)):
                wire = {"project_id": project_id, "entries": chunk}
                answer = _call(client, key, "add_participants", wire, args.timeout_ms)
                if answer["receipt"]["result"]["first"] != count:
                    raise _command_failed("another client is adding entries to this project")
                count = answer["receipt"]["result"]["count"]
                progress.update(len(chunk))
    print(json.dumps({"project_id": project_id, "added": count - already, "count": count}))
    return 0


# --- verification --------------------------------------------------------------------------


def _genesis_raw(args: argparse.Namespace, client: Client) -> bytes:
    if args.genesis:
        try:
            return Path(args.genesis).read_bytes()
        except OSError as exc:
            raise _usage_error(f"--genesis: cannot read ({exc.strerror or exc})") from None
    return client.genesis_bytes()


def _entry_verified(
    client: Client, project_id: str, entry: bytes, index: int, section: dict[str, Any]
) -> bool:
    answer = client.query(lottery.NAME, "projects", project_id, "entries", entry.hex())
    if answer["index"] != index or answer["proof"] is None:
        return False
    proof = merkle.InclusionProof.from_json(answer["proof"])
    root = bytes.fromhex(section["participants_root"])
    return proof.size == section["count"] and merkle.verify_inclusion(entry, proof, root)


def verify_draw(client: Client, project_id: str, genesis_raw: bytes) -> list[dict[str, Any]]:
    """Every check of `draw-verify`, as `{"check", "ok", "detail"}`."""
    bundle = client.query(lottery.NAME, "projects", project_id, "proof")
    report = verify_bundle(bundle, read_genesis(genesis_raw))
    checks = [{"check": n, "ok": p, "detail": d} for n, p, d in report.checks]
    section = bundle.get("lottery")
    if not isinstance(section, dict):
        return [*checks, {"check": "bundle has a lottery section", "ok": False, "detail": ""}]
    if not report.ok:
        return checks  # the failed checks say why; nothing below could be trusted
    seed = lottery_draw.draw_seed(
        project_id,
        bytes.fromhex(section["participants_root"]),
        section["count"],
        bytes.fromhex(section["sponsor_secret"]),
        bytes.fromhex(section["notary_secret"]),
        bytes.fromhex(section["sealed_block_hash"]),
    )
    indices = lottery_draw.draw_winners(seed, section["count"], section["winners_count"])
    published = client.query(lottery.NAME, "projects", project_id, "winners")["winners"]
    checks += [
        {"check": "seed recomputed", "ok": seed.hex() == section["seed"], "detail": seed.hex()},
        {
            "check": "winners recomputed",
            "ok": indices == [w["index"] for w in section["winners"]],
            "detail": indices,
        },
        {
            "check": "the winners query says the same",
            "ok": published == section["winners"],
            "detail": f"{len(published)} winners",
        },
    ]
    for winner in section["winners"]:
        entry, index = bytes.fromhex(winner["entry"]), winner["index"]
        checks.append(
            {
                "check": f"winner {index}: entry in the sealed list at its index",
                "ok": _entry_verified(client, project_id, entry, index, section),
                "detail": winner["entry"],
            }
        )
    return checks


def _draw_verify(args: argparse.Namespace) -> int:
    project_id = _project_id(args.project)
    with _read_client(args) as client:
        checks = verify_draw(client, project_id, _genesis_raw(args, client))
    ok = all(check["ok"] for check in checks)
    print(json.dumps({"project_id": project_id, "ok": ok, "checks": checks}, indent=2))
    return 0 if ok else 1


def _check(args: argparse.Namespace) -> int:
    project_id = _project_id(args.project)
    entry = entry_of(read_salt(args.salt_file), args.identity)
    with _read_client(args) as client:
        answer = client.query(lottery.NAME, "projects", project_id, "entries", entry.hex())
    verified = None
    if answer["proof"] is not None:
        proof = merkle.InclusionProof.from_json(answer["proof"])
        verified = merkle.verify_inclusion(entry, proof, bytes.fromhex(answer["root"]))
    keys = ("in_list", "index", "winner", "winner_rank", "sealed", "count", "root")
    report = {"project_id": project_id, "entry": entry.hex(), **{k: answer[k] for k in keys}}
    print(json.dumps({**report, "proof_verified": verified}, indent=2))
    return 1 if verified is False else 0


# --- the parser ----------------------------------------------------------------------------


def _add_common(parser: argparse.ArgumentParser, *, key_required: bool = True) -> None:
    parser.add_argument("project", metavar="PROJECT", help="the project id")
    parser.add_argument("--key", required=key_required, metavar="FILE", help="signer's key file")
    parser.add_argument("--url", help=f"node API URL (default: ${URL_ENV_VAR}, else {DEFAULT_URL})")
    parser.add_argument(
        "--chain-id", metavar="ID", help=f"chain id for signed reads (or ${CHAIN_ID_ENV_VAR})"
    )
    parser.add_argument("--genesis", metavar="FILE", help="genesis.json (chain id, trust root)")
    parser.add_argument(
        "--timeout-ms",
        type=int,
        default=COMMIT_TIMEOUT_MS_DEFAULT,
        metavar="MS",
        help=f"wait for each commit this long (default {COMMIT_TIMEOUT_MS_DEFAULT})",
    )


def _add_party_commands(commands: Any) -> None:
    create = commands.add_parser("create", help="sponsor: create a project, keep the secret")
    _add_common(create)
    create.add_argument("--title", required=True)
    create.add_argument("--winners", required=True, type=int, metavar="N")
    create.add_argument("--notary-org", required=True, metavar="ORG")
    create.add_argument("--rules", metavar="FILE", help="the published rules, a JSON object")
    create.add_argument("--secret-file", metavar="FILE", help="default PROJECT.sponsor.secret")
    create.set_defaults(handler=_create)

    approve = commands.add_parser("approve", help="notary: approve, keep the secret")
    _add_common(approve)
    approve.add_argument("--secret-file", metavar="FILE", help="default PROJECT.notary.secret")
    approve.set_defaults(handler=_approve)

    reveal = commands.add_parser("reveal", help="sponsor, then notary: reveal after the seal")
    _add_common(reveal)
    reveal.add_argument("--secret-file", metavar="FILE", help="default PROJECT.<party>.secret")
    reveal.set_defaults(handler=_reveal)

    for name, help_text in (
        ("seal", "sponsor or notary: close the list"),
        ("draw", "notary: draw the winners"),
    ):
        command = commands.add_parser(name, help=help_text)
        _add_common(command)
        command.set_defaults(handler=_project_call(name))

    notarize = commands.add_parser("notarize", help="notary: record the certificate's digest")
    _add_common(notarize)
    notarize.add_argument("--statement", required=True, metavar="FILE", help="the certificate")
    notarize.set_defaults(handler=_notarize)

    cancel = commands.add_parser("cancel", help="notary: cancel before the draw")
    _add_common(cancel)
    cancel.add_argument("--reason", required=True)
    cancel.set_defaults(handler=_cancel)


def _add_list_commands(commands: Any) -> None:
    imported = commands.add_parser("import", help="sponsor: import participants, resumable")
    _add_common(imported)
    imported.add_argument("file", metavar="FILE", help="one identity per line, or a CSV")
    imported.add_argument("--salt-file", required=True, metavar="FILE")
    imported.add_argument("--csv-column", metavar="NAME|NUMBER", help="read this CSV column")
    imported.add_argument(
        "--chunk-entries",
        type=int,
        default=IMPORT_CHUNK_ENTRIES_MAX,
        metavar="N",
        help=f"entries per transaction (default {IMPORT_CHUNK_ENTRIES_MAX})",
    )
    imported.add_argument("--max-entries", type=int, metavar="N", help="stop after N more")
    imported.set_defaults(handler=_import)

    verify = commands.add_parser("draw-verify", help="anyone: recompute and check the draw")
    _add_common(verify, key_required=False)
    verify.set_defaults(handler=_draw_verify)

    check = commands.add_parser("check", help="participant: am I in the list, did I win")
    _add_common(check, key_required=False)
    check.add_argument("--identity", required=True, metavar="ID")
    check.add_argument("--salt-file", required=True, metavar="FILE")
    check.set_defaults(handler=_check)


def add_lottery_commands(commands: Any) -> None:
    """Add `chancery lottery ...` to the CLI's subcommands."""
    lottery_commands = commands.add_parser(
        "lottery", help="notarised draws: create, import, seal, reveal, draw, verify"
    ).add_subparsers(dest="lottery_command", required=True, metavar="COMMAND")
    _add_party_commands(lottery_commands)
    _add_list_commands(lottery_commands)
