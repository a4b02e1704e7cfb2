"""What a contract sees: a call context, a scoped state view, argument specs and errors.

Contracts are pure functions of (context, state view, arguments). They read no clock,
randomness or I/O: the block timestamp and height come in through `CallContext`, and
state comes through `StateView`, so every replica computes the same writes and receipt.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import msgpack
import ormsgpack

ROLES: Final = frozenset({"notary", "tax_office", "enterprise", "auditor"})
IDENTIFIER_PATTERN: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")
KEY_SEPARATOR: Final = b"/"


class ContractError(Exception):
    """A contract's refusal: committed as a failed receipt carrying `code` and `details`."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}


class QueryNotFound(ContractError):
    """A query for a record that does not exist (HTTP 404 `not_found`)."""

    def __init__(self, message: str) -> None:
        super().__init__("not_found", message)


class StateReader(Protocol):
    """Read access to committed (or speculatively executed) state, by full key."""

    def get(self, key: bytes) -> bytes | None: ...


def scoped_key(contract: str, key: bytes) -> bytes:
    """Full state key of `key` in `contract`'s namespace: `<contract>/<key>`."""
    return contract.encode() + KEY_SEPARATOR + key


def encode_record(record: Any) -> bytes:
    """Encode a state record as canonical msgpack (contracts build dicts; keys get sorted).

    ormsgpack sorts str keys by their UTF-8 bytes and writes every value in its shortest
    form, which is the canonical encoding (a property test holds it to the definition
    below); what it will not encode (a non-str key, an int beyond 64 bits) takes the
    definition itself, so the bytes never depend on which path ran.
    """
    try:
        return ormsgpack.packb(record, option=ormsgpack.OPT_SORT_KEYS)
    except ormsgpack.MsgpackEncodeError:
        return encode_record_reference(record)


def encode_record_reference(record: Any) -> bytes:
    """The definition `encode_record` follows: msgpack of the value with every map's
    keys sorted (bin for bytes)."""
    return msgpack.packb(_sorted(record), use_bin_type=True)


def _sorted(value: Any) -> Any:
    # Code point order is UTF-8 byte order for str keys (see node/encoding.py).
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [_sorted(item) for item in value]
    return value


def decode_record(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, use_list=True)


class ReadView:
    """A contract's read-only window on state: keys are scoped to the contract's name."""

    def __init__(self, contract: str, reader: StateReader) -> None:
        self.contract = contract
        self._reader = reader

    def get(self, key: bytes) -> bytes | None:
        return self._reader.get(scoped_key(self.contract, key))

    def get_record(self, key: bytes) -> Any:
        data = self.get(key)
        return None if data is None else decode_record(data)

    def for_contract(self, contract: str) -> ReadView:
        """Read another contract's state (e.g. membership), never write it."""
        return ReadView(contract, self._reader)


class StateView(ReadView):
    """A contract's read-write view during one transaction; writes are buffered.

    Reads see this transaction's own writes first. The executor keeps the buffered writes
    only if the call succeeds, so a failed call leaves state untouched.
    """

    def __init__(self, contract: str, reader: StateReader) -> None:
        super().__init__(contract, reader)
        self.writes: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        full_key = scoped_key(self.contract, key)
        if full_key in self.writes:
            return self.writes[full_key]
        return self._reader.get(full_key)

    def put(self, key: bytes, value: bytes) -> None:
        self.writes[scoped_key(self.contract, key)] = value

    def put_record(self, key: bytes, record: Any) -> None:
        self.put(key, encode_record(record))

    def delete(self, key: bytes) -> None:
        self.writes[scoped_key(self.contract, key)] = None


@dataclass(frozen=True, slots=True)
class Signer:
    """Who signed a transaction, as membership state says at execution time."""

    public_key: bytes
    org: str
    roles: frozenset[str]
    is_admin: bool


class ChainHistory(Protocol):
    """The hashes of blocks already in the chain below the executing block.

    Deterministic like state: every replica, state transfer and the replaying auditor
    answer from the same certified chain. The lottery seed needs the sealing block's hash,
    which no transaction can see in its own block (the hash covers its state root).
    """

    def block_hash_at(self, height: int) -> bytes:
        """The hash of the block at `height` (1 <= height < the executing block's)."""
        ...


@dataclass(frozen=True, slots=True)
class CallContext:
    """Everything a contract may know about its call besides state and arguments."""

    signer: Signer
    tx_id: bytes
    height: int
    block_timestamp_ms: int
    prev_block_hash: bytes
    history: ChainHistory

    def block_hash_at(self, height: int) -> bytes:
        """The hash of an earlier block of this chain (1 <= `height` < this block's)."""
        if not 1 <= height < self.height:
            raise AssertionError(f"block {height} is not below block {self.height}")
        return self.history.block_hash_at(height)


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    data: dict[str, Any]


@dataclass(slots=True)
class CallOutcome:
    """What a handler returns besides state writes: a result value and events."""

    result: Any = None
    events: list[Event] = field(default_factory=list)


# --- arguments -------------------------------------------------------------------------

ArgCheck = Callable[[str, Any], None]


def _refuse(name: str, message: str) -> ContractError:
    return ContractError("tx.invalid_args", f"argument {name!r} {message}", {"argument": name})


def hash32(name: str, value: Any) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise _refuse(name, "must be bin(32)")


def identifier(name: str, value: Any) -> None:
    if not isinstance(value, str) or not IDENTIFIER_PATTERN.fullmatch(value):
        raise _refuse(name, "must be 1..64 characters of [A-Za-z0-9._:-]")


def text(max_chars: int) -> ArgCheck:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, str) or not 0 < len(value) <= max_chars:
            raise _refuse(name, f"must be a string of 1..{max_chars} characters")

    return check


def integer(minimum: int, maximum: int) -> ArgCheck:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
            raise _refuse(name, f"must be an integer in {minimum}..{maximum}")

    return check


def small_map(max_bytes: int) -> ArgCheck:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, dict) or len(encode_record(value)) > max_bytes:
            raise _refuse(name, f"must be a map of at most {max_bytes} bytes")

    return check


def binary(max_bytes: int) -> ArgCheck:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, bytes) or len(value) > max_bytes:
            raise _refuse(name, f"must be bin of at most {max_bytes} bytes")

    return check


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument of a method: its check and whether it may be omitted."""

    check: ArgCheck
    optional: bool = False
    binary: bool = False  # JSON clients pass it as hex


def check_args(specs: Mapping[str, Arg], args: Mapping[str, Any]) -> None:
    """Raises: ContractError `tx.invalid_args` naming the missing, unknown or wrong argument."""
    if not args.keys() <= specs.keys():  # a C comparison; the set is built only to refuse
        unknown = sorted(args.keys() - specs.keys())
        raise ContractError("tx.invalid_args", f"unknown argument(s) {unknown}")
    for name, spec in specs.items():
        if name not in args:
            if not spec.optional:
                raise _refuse(name, "is required")
            continue
        spec.check(name, args[name])


# --- methods and contracts -------------------------------------------------------------

Handler = Callable[[CallContext, StateView, dict[str, Any]], CallOutcome]


@dataclass(frozen=True, slots=True)
class Method:
    """A callable contract method and who may call it.

    `roles` None means any organisation's members; `admin_only` requires an admin key.
    Finer rules (e.g. "the holder org") are the handler's to check.
    """

    name: str
    handler: Handler
    args: Mapping[str, Arg]
    roles: frozenset[str] | None = None
    admin_only: bool = False

    def allows(self, signer: Signer) -> bool:
        if self.admin_only and not signer.is_admin:
            return False
        return self.roles is None or bool(self.roles & signer.roles)


@dataclass(frozen=True, slots=True)
class Reader:
    """Who is asking a query; None fields when reads are open and unauthenticated."""

    org: str | None = None
    roles: frozenset[str] = frozenset()


QueryHandler = Callable[[ReadView, list[str], Reader], Any]


@dataclass(frozen=True, slots=True)
class Contract:
    """A built-in contract: its methods and its read-only query entry point."""

    name: str
    methods: Mapping[str, Method]
    query: QueryHandler


class ContractRegistry:
    """The contracts a chain runs, by name."""

    def __init__(self, contracts: list[Contract]) -> None:
        self._contracts = {contract.name: contract for contract in contracts}

    def contract(self, name: str) -> Contract | None:
        return self._contracts.get(name)

    def method(self, contract: str, method: str) -> Method | None:
        found = self._contracts.get(contract)
        return None if found is None else found.methods.get(method)

    def names(self) -> list[str]:
        return sorted(self._contracts)
