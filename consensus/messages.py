"""PBFT messages: frozen records, their signed payloads and their wire maps.

Every message is signed by its sender with domain `chancery/p2p/v1\\n` over the canonical
msgpack of its wire map without the `signature` key; the map names the chain, so a
message for another chain never verifies here. Decoding is strict and total: any wire map
either becomes exactly one message or raises `MessageFormatError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Final

import msgpack

HASH_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
WIRE_DEPTH_MAX: Final = 8


class MessageFormatError(ValueError):
    """A wire map that is not a well-formed consensus message."""


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _canonical(value[key]) for key in sorted(value, key=lambda k: k.encode())}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    return value


def pack_canonical(value: Any) -> bytes:
    return msgpack.packb(_canonical(value), use_bin_type=True)


@dataclass(frozen=True, slots=True)
class Prepare:
    """A replica accepted (and re-executed) `block_hash` at `height` in `view`."""

    TYPE: ClassVar[str] = "prepare"
    view: int
    height: int
    block_hash: bytes
    sender: int
    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class Commit:
    """A replica holds a prepared certificate; `vote` is its commit-domain signature."""

    TYPE: ClassVar[str] = "commit"
    view: int
    height: int
    block_hash: bytes
    vote: bytes
    sender: int
    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class PrePrepare:
    """The primary's proposal: a header (roots already computed) and its transactions.

    `header` is the block header's bytes; `block_hash` its SHA-256. A re-proposal in a
    NEW-VIEW keeps the original header, so the block hash, and any commit votes already
    cast for it, stay valid.
    """

    TYPE: ClassVar[str] = "pre_prepare"
    view: int
    height: int
    block_hash: bytes
    parent_hash: bytes
    header: bytes
    txs: tuple[bytes, ...]
    sender: int
    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A replica committed `block_hash` at `height`, a multiple of the checkpoint interval."""

    TYPE: ClassVar[str] = "checkpoint"
    height: int
    block_hash: bytes
    sender: int
    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class PreparedCertificate:
    """2f+1 signed PREPAREs for one block in one view, with the block's header."""

    view: int
    height: int
    block_hash: bytes
    parent_hash: bytes
    header: bytes
    prepares: tuple[Prepare, ...]


@dataclass(frozen=True, slots=True)
class ViewChange:
    """A replica leaves its view for `new_view`, carrying what it must not let be lost.

    `committed_*` names its last committed block and the commit certificate proving it;
    `prepared` holds its prepared certificates above that height.
    """

    TYPE: ClassVar[str] = "view_change"
    new_view: int
    committed_height: int
    committed_hash: bytes
    committed_signatures: tuple[tuple[int, bytes], ...]
    prepared: tuple[PreparedCertificate, ...]
    sender: int
    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class NewView:
    """The new primary's proof (2f+1 VIEW-CHANGEs) and its re-proposals of prepared blocks."""

    TYPE: ClassVar[str] = "new_view"
    view: int
    view_changes: tuple[ViewChange, ...]
    pre_prepares: tuple[PrePrepare, ...]
    sender: int
    signature: bytes = b""


ConsensusMessage = Prepare | Commit | PrePrepare | Checkpoint | ViewChange | NewView
MESSAGE_TYPES: Final[dict[str, type]] = {
    cls.TYPE: cls for cls in (Prepare, Commit, PrePrepare, Checkpoint, ViewChange, NewView)
}


# --- wire encoding -----------------------------------------------------------------------


def _prepare_wire(message: Prepare) -> dict[str, Any]:
    return {
        "block_hash": message.block_hash,
        "height": message.height,
        "sender": message.sender,
        "signature": message.signature,
        "type": Prepare.TYPE,
        "view": message.view,
    }


def certificate_to_wire(certificate: PreparedCertificate) -> dict[str, Any]:
    return {
        "block_hash": certificate.block_hash,
        "header": certificate.header,
        "height": certificate.height,
        "parent_hash": certificate.parent_hash,
        "prepares": [to_wire_body(p) for p in certificate.prepares],
        "view": certificate.view,
    }


def to_wire_body(message: ConsensusMessage) -> dict[str, Any]:
    """The message as a map, including its signature, without the chain id."""
    if isinstance(message, Prepare):
        return _prepare_wire(message)
    body: dict[str, Any] = {"type": message.TYPE}
    for item in fields(message):
        value = getattr(message, item.name)
        if item.name == "prepared":
            value = [certificate_to_wire(c) for c in value]
        elif item.name == "view_changes" or item.name == "pre_prepares":
            value = [to_wire_body(m) for m in value]
        elif item.name == "committed_signatures":
            value = [[index, sig] for index, sig in value]
        elif isinstance(value, tuple):
            value = list(value)
        body[item.name] = value
    return body


def to_wire(message: ConsensusMessage, chain_id: str) -> dict[str, Any]:
    """The map sent to peers: the body plus `chain_id`."""
    return {**to_wire_body(message), "chain_id": chain_id}


def signing_payload(message: ConsensusMessage, chain_id: str) -> bytes:
    """The bytes the sender signs: the canonical wire map without `signature`."""
    body = to_wire(message, chain_id)
    del body["signature"]
    return pack_canonical(body)


def with_signature(message: ConsensusMessage, signature: bytes) -> ConsensusMessage:
    return replace(message, signature=signature)  # type: ignore[type-var]


# --- strict decoding ---------------------------------------------------------------------


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise MessageFormatError(message)


def _int(raw: dict[str, Any], name: str) -> int:
    value = raw.get(name)
    _need(
        isinstance(value, int) and not isinstance(value, bool) and value >= 0,
        f"{name} must be a non-negative integer",
    )
    return value  # type: ignore[return-value]


def _bin(raw: dict[str, Any], name: str, length: int | None = None) -> bytes:
    value = raw.get(name)
    _need(
        isinstance(value, bytes) and (length is None or len(value) == length),
        f"{name} must be bin{'' if length is None else f'({length})'}",
    )
    return value  # type: ignore[return-value]


def _list(raw: dict[str, Any], name: str) -> list[Any]:
    value = raw.get(name)
    _need(isinstance(value, list), f"{name} must be a list")
    return value  # type: ignore[return-value]


def _keys(raw: Any, expected: set[str]) -> dict[str, Any]:
    _need(isinstance(raw, dict), "message must be a map")
    _need(set(raw) == expected, f"message fields must be {sorted(expected)}")
    return raw  # type: ignore[no-any-return]


_COMMON = {"type", "sender", "signature"}


def _decode_prepare(raw: dict[str, Any]) -> Prepare:
    raw = _keys(raw, _COMMON | {"view", "height", "block_hash"})
    return Prepare(
        _int(raw, "view"),
        _int(raw, "height"),
        _bin(raw, "block_hash", HASH_BYTES),
        _int(raw, "sender"),
        _bin(raw, "signature", SIGNATURE_BYTES),
    )


def _decode_commit(raw: dict[str, Any]) -> Commit:
    raw = _keys(raw, _COMMON | {"view", "height", "block_hash", "vote"})
    return Commit(
        _int(raw, "view"),
        _int(raw, "height"),
        _bin(raw, "block_hash", HASH_BYTES),
        _bin(raw, "vote", SIGNATURE_BYTES),
        _int(raw, "sender"),
        _bin(raw, "signature", SIGNATURE_BYTES),
    )


def _decode_pre_prepare(raw: dict[str, Any]) -> PrePrepare:
    raw = _keys(raw, _COMMON | {"view", "height", "block_hash", "parent_hash", "header", "txs"})
    txs = _list(raw, "txs")
    _need(all(isinstance(tx, bytes) for tx in txs), "txs must be a list of bin")
    return PrePrepare(
        _int(raw, "view"),
        _int(raw, "height"),
        _bin(raw, "block_hash", HASH_BYTES),
        _bin(raw, "parent_hash", HASH_BYTES),
        _bin(raw, "header"),
        tuple(txs),
        _int(raw, "sender"),
        _bin(raw, "signature", SIGNATURE_BYTES),
    )


def _decode_checkpoint(raw: dict[str, Any]) -> Checkpoint:
    raw = _keys(raw, _COMMON | {"height", "block_hash"})
    return Checkpoint(
        _int(raw, "height"),
        _bin(raw, "block_hash", HASH_BYTES),
        _int(raw, "sender"),
        _bin(raw, "signature", SIGNATURE_BYTES),
    )


def certificate_from_wire(raw: Any) -> PreparedCertificate:
    raw = _keys(raw, {"view", "height", "block_hash", "parent_hash", "header", "prepares"})
    prepares = tuple(_decode_typed(p, Prepare.TYPE) for p in _list(raw, "prepares"))
    return PreparedCertificate(
        _int(raw, "view"),
        _int(raw, "height"),
        _bin(raw, "block_hash", HASH_BYTES),
        _bin(raw, "parent_hash", HASH_BYTES),
        _bin(raw, "header"),
        prepares,
    )  # type: ignore[arg-type]


def _decode_view_change(raw: dict[str, Any]) -> ViewChange:
    raw = _keys(
        raw,
        _COMMON
        | {"new_view", "committed_height", "committed_hash", "committed_signatures", "prepared"},
    )
    signatures = []
    for entry in _list(raw, "committed_signatures"):
        _need(isinstance(entry, list) and len(entry) == 2, "signature entries are [index, sig]")
        index, signature = entry
        _need(
            isinstance(index, int)
            and not isinstance(index, bool)
            and index >= 0
            and isinstance(signature, bytes),
            "signature entries are [int, bin]",
        )
        signatures.append((index, signature))
    prepared = tuple(certificate_from_wire(c) for c in _list(raw, "prepared"))
    return ViewChange(
        _int(raw, "new_view"),
        _int(raw, "committed_height"),
        _bin(raw, "committed_hash", HASH_BYTES),
        tuple(signatures),
        prepared,
        _int(raw, "sender"),
        _bin(raw, "signature", SIGNATURE_BYTES),
    )


def _decode_new_view(raw: dict[str, Any]) -> NewView:
    raw = _keys(raw, _COMMON | {"view", "view_changes", "pre_prepares"})
    view_changes = tuple(_decode_typed(v, ViewChange.TYPE) for v in _list(raw, "view_changes"))
    pre_prepares = tuple(_decode_typed(p, PrePrepare.TYPE) for p in _list(raw, "pre_prepares"))
    return NewView(
        _int(raw, "view"),
        view_changes,
        pre_prepares,  # type: ignore[arg-type]
        _int(raw, "sender"),
        _bin(raw, "signature", SIGNATURE_BYTES),
    )


_DECODERS: Final[dict[str, Callable[[dict[str, Any]], ConsensusMessage]]] = {
    Prepare.TYPE: _decode_prepare,
    Commit.TYPE: _decode_commit,
    PrePrepare.TYPE: _decode_pre_prepare,
    Checkpoint.TYPE: _decode_checkpoint,
    ViewChange.TYPE: _decode_view_change,
    NewView.TYPE: _decode_new_view,
}


def _decode_typed(raw: Any, expected_type: str) -> ConsensusMessage:
    _need(
        isinstance(raw, dict) and raw.get("type") == expected_type,
        f"expected a {expected_type} message",
    )
    return _DECODERS[expected_type](raw)


def from_wire(raw: Any, chain_id: str) -> ConsensusMessage:
    """Decode a peer's map into a message of this chain (signature not yet checked).

    Raises:
        MessageFormatError: unknown type, other chain, missing/extra fields, wrong types.
    """
    _need(isinstance(raw, dict), "message must be a map")
    _need(raw.get("chain_id") == chain_id, "message for another chain")
    kind = raw.get("type")
    _need(isinstance(kind, str) and kind in _DECODERS, f"unknown message type {kind!r}")
    body = {key: value for key, value in raw.items() if key != "chain_id"}
    return _DECODERS[kind](body)
