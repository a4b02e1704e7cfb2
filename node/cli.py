"""`chancery`: the command line. It only wires arguments to the layers below.

Every user mistake ends as one `error: ...` line on stderr and a non-zero exit code:
2 for usage and configuration errors (bad arguments, config, genesis, key files, a
testnet directory in the way), 1 for runtime failures (node unreachable, API refusals,
nodes that fail to start). A traceback means a bug.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Final, NoReturn

from node import supervisor
from node.audit_cli import add_audit_command
from node.bench import add_bench_command
from node.client import DEFAULT_URL, BlockRef, Client, ClientError, coerce_args
from node.config import ConfigError
from node.crypto import KeyFileError, SigningKey, load_key_file, write_key_file
from node.encoding import EncodingError
from node.evidence_cli import add_evidence_commands
from node.genesis import GenesisError
from node.invoice_cli import add_invoice_commands
from node.lottery_cli import add_lottery_commands
from node.ranking_cli import add_ranking_commands
from node.testnet import (
    NETWORK_FILE_NAME,
    Testnet,
    TestnetError,
    generate_testnet,
    load_network,
)

URL_ENV_VAR: Final = "CHANCERY_URL"
UP_DIR_DEFAULT: Final = "testnet"
UP_VALIDATORS_DEFAULT: Final = 4
WATCH_INTERVAL_S: Final = 0.5
EXIT_USAGE: Final = 2
EXIT_FAILURE: Final = 1
EXIT_INTERRUPTED: Final = 130


class UsageError(Exception):
    """Bad command-line input: wrong arguments, malformed JSON, ..."""

    code = "cli.usage"


class CommandFailed(Exception):
    """A command that could not do its job for a reason outside the user's input."""

    code = "cli.failed"


# Errors of the user's making, reported with exit code 2; everything else reported is 1.
USAGE_ERRORS: Final = (UsageError, ConfigError, GenesisError, KeyFileError, TestnetError)


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake raises UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see: {self.prog} --help)")


# --- output helpers --------------------------------------------------------------------


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _error_text(error: BaseException) -> str:
    if isinstance(error, ClientError) and error.details:
        return f"{error} {json.dumps(error.details, separators=(',', ':'))}"
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror.lower()}"
    # Some errors carry no message at all (a bare TimeoutError): name them rather than
    # printing an empty "error: ".
    if isinstance(error, TimeoutError) and not str(error):
        return "timed out"
    return str(error) or type(error).__name__


def _is_reported(error: Exception) -> bool:
    """Errors the CLI turns into `error: ...`; anything else is a bug and keeps its traceback."""
    return isinstance(error, OSError) or isinstance(getattr(error, "code", None), str)


# --- key and network commands ----------------------------------------------------------


def _keygen(args: argparse.Namespace) -> int:
    key = SigningKey.generate()
    write_key_file(Path(args.out), key)
    print(key.public_key.hex())
    return 0


def _print_network(testnet: Testnet) -> None:
    """Where everything is: nodes, logs and the organisations' key files."""
    count = len(testnet.nodes)
    print(
        f"network {testnet.chain_id}: {count} validator{'s' if count != 1 else ''}, "
        f"genesis hash {testnet.genesis_hash.hex()}"
    )
    print(f"  genesis  {testnet.genesis_path}")
    for node in testnet.nodes:
        print(
            f"  node {node.index}   {node.org:<13} {node.api_url}  home {node.home}"
            f"  log {node.log_path}"
        )
    print("keys (PEM, mode 0600):")
    for org in testnet.orgs:
        roles = "[" + ",".join(org.roles) + "]"
        print(f"  {org.id:<13} {roles:<13} admin {org.admin_key}  member {org.member_key}")


def _testnet(args: argparse.Namespace) -> int:
    testnet = generate_testnet(
        Path(args.out),
        args.validators,
        base_api_port=args.base_api_port,
        base_p2p_port=args.base_p2p_port,
        chain_id=args.chain_id,
    )
    _print_network(testnet)
    print(f"start it with: chancery up --dir {shlex.quote(args.out)}")
    return 0


def _start(args: argparse.Namespace) -> int:
    # Imported here so every other command works even when the node cannot be loaded.
    try:
        from node.runner import run_node
    except ImportError as exc:
        raise CommandFailed(f"cannot load the node runner: {exc}") from None
    return run_node(Path(args.home))


# --- chancery up -----------------------------------------------------------------------


def _prepare_testnet(directory: Path, validators: int | None) -> Testnet:
    """Load the network in `directory`, or generate one when it has no network.json."""
    if not (directory / NETWORK_FILE_NAME).exists():
        testnet = generate_testnet(directory, validators or UP_VALIDATORS_DEFAULT)
        print(f"generated a new network in {directory}")
        return testnet
    testnet = load_network(directory)
    if validators is not None and validators != len(testnet.nodes):
        raise UsageError(
            f"{directory} holds a {len(testnet.nodes)}-validator network, not {validators}; "
            "drop --validators or use another --dir"
        )
    return testnet


def _example_commands(testnet: Testnet) -> list[str]:
    """Commands that work as printed against this network."""
    url = testnet.nodes[0].api_url
    admin_key = testnet.orgs[-1].admin_key if testnet.orgs else Path("ADMIN.key")
    # A throwaway key: the command adds a real, valid member key as printed.
    example_member = SigningKey.generate().public_key.hex()
    member_args = json.dumps({"public_key": example_member, "name": "Example member"})
    return [
        f"chancery status --url {url}",
        f"chancery tx send --url {url} --key {shlex.quote(str(admin_key))} "
        f"membership add_member --args {shlex.quote(member_args)} --wait",
        f"chancery block show latest --url {url}",
    ]


def _watch(nodes: Sequence[supervisor.NodeProcess]) -> None:
    """Block while nodes run; report each one that exits. Returns when all have exited."""
    reported: set[int] = set()
    while len(reported) < len(nodes):
        for node in supervisor.exited_nodes(nodes):
            if node.index not in reported:
                reported.add(node.index)
                reason = f"exited with code {node.exit_code()}"
                print(f"error: {supervisor.failure_report(node, reason)}", file=sys.stderr)
        time.sleep(WATCH_INTERVAL_S)


def _stop(nodes: Sequence[supervisor.NodeProcess]) -> None:
    if len(supervisor.exited_nodes(nodes)) < len(nodes):
        print("stopping the nodes ...", file=sys.stderr)
    try:
        supervisor.stop_nodes(nodes)
    except KeyboardInterrupt:  # a second Ctrl-C: no more patience
        supervisor.kill_nodes(nodes)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while supervising, so both stop the nodes the same way."""

    def interrupt(signal_number: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _up(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    testnet = _prepare_testnet(directory, args.validators)
    busy = supervisor.busy_ports(testnet)
    if busy:
        raise CommandFailed(
            f"port(s) in use: {', '.join(busy)}; is this network running already? Stop it, "
            "or generate one on other ports (chancery testnet --base-api-port ...)"
        )
    with _sigterm_as_interrupt():
        nodes = supervisor.start_testnet(testnet)
        try:
            supervisor.wait_until_healthy(nodes)
            _print_network(testnet)
            print("try:")
            for command in _example_commands(testnet):
                print(f"  {command}")
            print("Ctrl-C stops every node.", flush=True)
            _watch(nodes)
        except KeyboardInterrupt:
            return 0
        finally:
            _stop(nodes)
    raise CommandFailed("every node has exited")


# --- API commands ----------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Client:
    url = args.url or os.environ.get(URL_ENV_VAR) or DEFAULT_URL
    try:
        return Client(url)
    except ValueError as exc:
        raise UsageError(f"--url: {exc}") from None


def _status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print_json(client.status())
    return 0


def _json_args(text: str) -> Any:
    """`--args`: inline JSON, or `@FILE` for JSON read from a file."""
    source = "--args"
    if text.startswith("@"):
        source = text[1:]
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--args {text}: cannot read ({exc.strerror or exc})") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{source} is not valid JSON: {exc}") from None


def _tx_send(args: argparse.Namespace) -> int:
    try:
        wire_args = coerce_args(args.contract, args.method, _json_args(args.args))
    except ValueError as exc:
        raise UsageError(f"--args: {exc}") from None
    key = load_key_file(Path(args.key))
    with _client(args) as client:
        try:
            answer = client.submit(
                args.contract,
                args.method,
                wire_args,
                key,
                wait="commit" if args.wait else "none",
                timeout_ms=args.timeout_ms,
            )
        except EncodingError as exc:  # e.g. an integer beyond 64 bits
            raise UsageError(f"--args cannot be encoded: {exc}") from None
    _print_json(answer)
    return 0


def _tx_show(args: argparse.Namespace) -> int:
    tx_id = args.tx_id.lower()
    if len(tx_id) != 64 or any(c not in "0123456789abcdef" for c in tx_id):
        raise UsageError(f"TX_ID must be 64 hex characters, got {args.tx_id!r}")
    with _client(args) as client:
        _print_json(client.transaction(tx_id, proof=args.proof))
    return 0


def _block_show(args: argparse.Namespace) -> int:
    height: BlockRef = "latest"
    if args.height != "latest":
        if not (args.height.isascii() and args.height.isdigit()):
            raise UsageError(f"HEIGHT must be a number >= 0 or 'latest', got {args.height!r}")
        height = int(args.height)
    with _client(args) as client:
        _print_json(client.block(height, full=args.full))
    return 0


# --- the parser ------------------------------------------------------------------------

Handler = Callable[[argparse.Namespace], int]


def _add_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"node API URL (default: ${URL_ENV_VAR}, else {DEFAULT_URL})")


def _add_network_commands(commands: Any) -> None:
    keygen = commands.add_parser("keygen", help="generate an Ed25519 key file (mode 0600)")
    keygen.add_argument("--out", required=True, metavar="FILE", help="key file to create")
    keygen.set_defaults(handler=_keygen)

    testnet = commands.add_parser("testnet", help="generate a local network's files")
    testnet.add_argument("--validators", type=int, required=True, metavar="N")
    testnet.add_argument("--out", required=True, metavar="DIR")
    testnet.add_argument("--base-api-port", type=int, default=8600, metavar="PORT")
    testnet.add_argument("--base-p2p-port", type=int, default=9600, metavar="PORT")
    testnet.add_argument("--chain-id", default="chancery-local", metavar="ID")
    testnet.set_defaults(handler=_testnet)

    start = commands.add_parser("start", help="run one node until SIGINT/SIGTERM")
    start.add_argument("--home", required=True, metavar="DIR", help="node home (config.toml)")
    start.set_defaults(handler=_start)

    up = commands.add_parser("up", help="generate (if needed) and run a local network")
    up.add_argument("--dir", default=UP_DIR_DEFAULT, help=f"default: {UP_DIR_DEFAULT}")
    up.add_argument(
        "--validators",
        type=int,
        metavar="N",
        help=f"for a new network (default {UP_VALIDATORS_DEFAULT})",
    )
    up.set_defaults(handler=_up)


def _add_api_commands(commands: Any) -> None:
    status = commands.add_parser("status", help="show a node's status")
    _add_url(status)
    status.set_defaults(handler=_status)

    tx = commands.add_parser("tx", help="send or show transactions").add_subparsers(
        dest="tx_command", required=True, metavar="{send,show}"
    )
    send = tx.add_parser("send", help="sign and submit a transaction")
    send.add_argument("--key", required=True, metavar="FILE", help="signer's key file")
    send.add_argument("contract")
    send.add_argument("method")
    send.add_argument(
        "--args",
        default="{}",
        metavar="JSON",
        help="arguments as a JSON object (bytes as hex), or @FILE",
    )
    send.add_argument("--wait", action="store_true", help="wait until committed")
    send.add_argument("--timeout-ms", type=int, metavar="MS", help="with --wait")
    _add_url(send)
    send.set_defaults(handler=_tx_send)
    show = tx.add_parser("show", help="show a transaction")
    show.add_argument("tx_id", metavar="TX_ID")
    show.add_argument("--proof", action="store_true", help="the offline proof bundle")
    _add_url(show)
    show.set_defaults(handler=_tx_show)

    block = commands.add_parser("block", help="show blocks").add_subparsers(
        dest="block_command", required=True, metavar="{show}"
    )
    block_show = block.add_parser("show", help="show a block")
    block_show.add_argument("height", metavar="HEIGHT|latest")
    block_show.add_argument("--full", action="store_true", help="add envelopes and receipts")
    _add_url(block_show)
    block_show.set_defaults(handler=_block_show)


def build_parser() -> argparse.ArgumentParser:
    """The `chancery` argument parser (mistakes raise UsageError)."""
    parser = _Parser(prog="chancery", description="Chancery consortium ledger")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_network_commands(commands)
    _add_api_commands(commands)
    add_evidence_commands(commands)
    add_audit_command(commands)
    add_bench_command(commands)
    add_invoice_commands(commands)
    add_lottery_commands(commands)
    add_ranking_commands(commands)
    return parser


def _run(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    handler: Handler = args.handler
    return handler(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `chancery` command; returns the process exit code."""
    try:
        return _run(argv)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        if not _is_reported(exc):
            raise
        print(f"error: {_error_text(exc)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, USAGE_ERRORS) else EXIT_FAILURE
