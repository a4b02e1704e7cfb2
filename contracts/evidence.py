"""The `evidence` contract: anchoring digital fingerprints (CONTRACTS.md, evidence).

A member anchors the SHA-256 of a document (`anchor`) or the RFC 6962 root of many
(`anchor_batch`); the chain records which organisation and key anchored it, at which
height and block timestamp, in which transaction. Each organisation anchors a given hash
once; hashes and batch roots share one index, so a root cannot be anchored again as a
single hash by the same organisation (or the other way round).

State (scoped under `evidence/`; `<n>` is 8 bytes big-endian, `<hash>` the raw 32 bytes):
- `anchor/<hash>` -> `{"anchor_count": n}`: how many organisations anchored the hash.
- `anchor/<hash>/<n>` -> the n-th anchor of the hash, oldest first: `{"count" (batch only),
  "hash", "height", "kind", "meta", "method", "org", "signer", "subject", "timestamp",
  "tx_id"}`.
- `org_anchor/<hash>/<org>` -> `<n>`: the organisation's anchor of the hash (the duplicate
  check and the `?org=` lookup, both one `get`).
- `subject/<subject>` -> `{"anchor_count": n}` and `subject/<subject>/<n>` ->
  `{"hash", "position"}`: the subject's timeline, append-only, each entry naming
  `anchor/<hash>/<position>`.
One anchor writes at most five small records, however long its hash's or subject's history.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from contracts.runtime import (
    IDENTIFIER_PATTERN,
    Arg,
    CallContext,
    CallOutcome,
    Contract,
    ContractError,
    Event,
    Method,
    QueryNotFound,
    Reader,
    ReadView,
    StateView,
    hash32,
    identifier,
    integer,
    small_map,
)

NAME: Final = "evidence"
META_BYTES_MAX: Final = 4096  # canonical msgpack of `meta`
BATCH_COUNT_MAX: Final = 2**40  # leaves under one batch root
# One page of a subject timeline; with meta at its limit a page stays a few megabytes.
SUBJECT_PAGE_ANCHORS_MAX: Final = 1000
POSITION_BYTES: Final = 8
HASH_HEX_PATTERN: Final = re.compile(r"[0-9a-fA-F]{64}")
DECIMAL_PATTERN: Final = re.compile(r"[0-9]{1,19}")
METHOD_ANCHOR: Final = "anchor"
METHOD_ANCHOR_BATCH: Final = "anchor_batch"


@dataclass(frozen=True, slots=True)
class Anchor:
    """One organisation's anchor of a hash (or batch root), as state records it."""

    hash: bytes
    org: str
    signer: bytes
    height: int
    timestamp_ms: int
    tx_id: bytes
    kind: str
    method: str
    subject: str | None
    meta: dict[str, Any] | None
    count: int | None  # leaves under the root; None for a single `anchor`

    def to_record(self) -> dict[str, Any]:
        record = {
            "hash": self.hash,
            "height": self.height,
            "kind": self.kind,
            "meta": self.meta,
            "method": self.method,
            "org": self.org,
            "signer": self.signer,
            "subject": self.subject,
            "timestamp": self.timestamp_ms,
            "tx_id": self.tx_id,
        }
        if self.count is not None:
            record["count"] = self.count
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Anchor:
        return cls(
            hash=record["hash"],
            org=record["org"],
            signer=record["signer"],
            height=record["height"],
            timestamp_ms=record["timestamp"],
            tx_id=record["tx_id"],
            kind=record["kind"],
            method=record["method"],
            subject=record["subject"],
            meta=record["meta"],
            count=record.get("count"),
        )

    def to_json(self) -> dict[str, Any]:
        """A query's view of the anchor. Bin values nested in `meta` become hex in the
        API's JSON writer, as every query answer's bytes do."""
        answer: dict[str, Any] = {
            "hash": self.hash.hex(),
            "org": self.org,
            "signer": self.signer.hex(),
            "height": self.height,
            "timestamp": self.timestamp_ms,
            "tx_id": self.tx_id.hex(),
            "kind": self.kind,
            "subject": self.subject,
            "meta": self.meta,
            "method": self.method,
        }
        if self.count is not None:
            answer["count"] = self.count
        return answer


def _position(n: int) -> bytes:
    return n.to_bytes(POSITION_BYTES, "big")


def _anchor_count_key(hash_value: bytes) -> bytes:
    return b"anchor/" + hash_value


def _anchor_key(hash_value: bytes, position: int) -> bytes:
    return b"anchor/" + hash_value + b"/" + _position(position)


def _org_anchor_key(hash_value: bytes, org: str) -> bytes:
    return b"org_anchor/" + hash_value + b"/" + org.encode()


def _subject_count_key(subject: str) -> bytes:
    return b"subject/" + subject.encode()


def _subject_entry_key(subject: str, position: int) -> bytes:
    return b"subject/" + subject.encode() + b"/" + _position(position)


def _count(view: ReadView, key: bytes) -> int:
    record = view.get_record(key)
    return 0 if record is None else record["anchor_count"]


# --- methods ---------------------------------------------------------------------------


def _refuse_duplicate(state: StateView, hash_value: bytes, org: str) -> None:
    """Raises: ContractError `evidence.duplicate`, naming the first anchor."""
    position = state.get(_org_anchor_key(hash_value, org))
    if position is None:
        return
    first = Anchor.from_record(state.get_record(_anchor_key(hash_value, _from_position(position))))
    raise ContractError(
        "evidence.duplicate",
        "this organisation already anchored this hash",
        {"hash": hash_value, "org": org, "height": first.height, "tx_id": first.tx_id},
    )


def _from_position(data: bytes) -> int:
    return int.from_bytes(data, "big")


def _record_anchor(state: StateView, anchor: Anchor) -> None:
    """Append `anchor` to its hash's index and, when it has one, its subject's timeline."""
    position = _count(state, _anchor_count_key(anchor.hash))
    state.put_record(_anchor_key(anchor.hash, position), anchor.to_record())
    state.put_record(_anchor_count_key(anchor.hash), {"anchor_count": position + 1})
    state.put(_org_anchor_key(anchor.hash, anchor.org), _position(position))
    if anchor.subject is None:
        return
    entry = _count(state, _subject_count_key(anchor.subject))
    state.put_record(
        _subject_entry_key(anchor.subject, entry), {"hash": anchor.hash, "position": position}
    )
    state.put_record(_subject_count_key(anchor.subject), {"anchor_count": entry + 1})


def _new_anchor(
    context: CallContext, args: dict[str, Any], hash_value: bytes, method: str
) -> Anchor:
    return Anchor(
        hash=hash_value,
        org=context.signer.org,
        signer=context.signer.public_key,
        height=context.height,
        timestamp_ms=context.block_timestamp_ms,
        tx_id=context.tx_id,
        kind=args["kind"],
        method=method,
        subject=args.get("subject"),
        meta=args.get("meta"),
        count=args.get("count"),
    )


def anchor(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """Anchor one hash for the signer's organisation, optionally on a subject's timeline.

    Raises:
        ContractError: `evidence.duplicate` if the organisation anchored this hash (as a
            hash or a batch root) before.
    """
    record = _new_anchor(context, args, args["hash"], METHOD_ANCHOR)
    _refuse_duplicate(state, record.hash, record.org)
    _record_anchor(state, record)
    result = {
        "hash": record.hash,
        "kind": record.kind,
        "org": record.org,
        "subject": record.subject,
    }
    event = Event("anchored", {**result, "signer": record.signer})
    return CallOutcome(result=result, events=[event])


def anchor_batch(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """Anchor the RFC 6962 root of `count` hashes the client built.

    Raises:
        ContractError: `evidence.duplicate` if the organisation anchored this root (as a
            hash or a batch root) before.
    """
    record = _new_anchor(context, args, args["root"], METHOD_ANCHOR_BATCH)
    _refuse_duplicate(state, record.hash, record.org)
    _record_anchor(state, record)
    result = {"count": record.count, "kind": record.kind, "org": record.org, "root": record.hash}
    event = Event("batch_anchored", {**result, "signer": record.signer})
    return CallOutcome(result=result, events=[event])


# --- reads (queries and the proof route) -----------------------------------------------


def anchors_of(view: ReadView, hash_value: bytes) -> list[Anchor]:
    """Every anchor of `hash_value` (hash or batch root), oldest first."""
    count = _count(view, _anchor_count_key(hash_value))
    return [Anchor.from_record(view.get_record(_anchor_key(hash_value, n))) for n in range(count)]


def find_anchor(view: ReadView, hash_value: bytes, org: str | None = None) -> Anchor | None:
    """`org`'s anchor of `hash_value`, or the earliest one when `org` is None."""
    if org is None:
        if _count(view, _anchor_count_key(hash_value)) == 0:
            return None
        return Anchor.from_record(view.get_record(_anchor_key(hash_value, 0)))
    position = view.get(_org_anchor_key(hash_value, org))
    if position is None:
        return None
    return Anchor.from_record(view.get_record(_anchor_key(hash_value, _from_position(position))))


@dataclass(frozen=True, slots=True)
class TimelinePage:
    """Up to SUBJECT_PAGE_ANCHORS_MAX anchors of a subject from `start`, oldest first."""

    subject: str
    total: int
    anchors: tuple[Anchor, ...]
    next: int | None  # where the next page starts; None at the end

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "total": self.total,
            "anchors": [entry.to_json() for entry in self.anchors],
            "next": self.next,
        }


def subject_timeline(view: ReadView, subject: str, start: int) -> TimelinePage:
    """One page of `subject`'s timeline; empty past its end."""
    total = _count(view, _subject_count_key(subject))
    end = min(total, start + SUBJECT_PAGE_ANCHORS_MAX)
    anchors: list[Anchor] = []
    for n in range(start, end):
        entry = view.get_record(_subject_entry_key(subject, n))
        anchors.append(
            Anchor.from_record(view.get_record(_anchor_key(entry["hash"], entry["position"])))
        )
    return TimelinePage(subject, total, tuple(anchors), end if end < total else None)


def _malformed(argument: str, message: str) -> ContractError:
    return ContractError("query.invalid_args", message, {"argument": argument})


def parse_hash(text: str) -> bytes:
    """A hash in a query path: 64 hex characters, either case.

    Raises:
        ContractError: `query.invalid_args` (the API answers `request.malformed`).
    """
    if not HASH_HEX_PATTERN.fullmatch(text):
        raise _malformed("hash", "a hash is 64 hex characters")
    return bytes.fromhex(text)


def _parse_subject(text: str) -> str:
    """Raises: ContractError `query.invalid_args` unless `text` is an identifier."""
    if not IDENTIFIER_PATTERN.fullmatch(text):
        raise _malformed("subject", "a subject is 1..64 characters of [A-Za-z0-9._:-]")
    return text


def _parse_start(text: str) -> int:
    """Raises: ContractError `query.invalid_args` unless `text` is a decimal integer."""
    if not DECIMAL_PATTERN.fullmatch(text):
        raise _malformed("from", "from is a non-negative decimal integer")
    return int(text)


def _anchors_answer(view: ReadView, hash_text: str) -> dict[str, Any]:
    hash_value = parse_hash(hash_text)
    anchors = anchors_of(view, hash_value)
    if not anchors:
        raise QueryNotFound("no anchor of this hash")
    return {"hash": hash_value.hex(), "anchors": [entry.to_json() for entry in anchors]}


def _timeline_answer(view: ReadView, subject_text: str, start_text: str) -> dict[str, Any]:
    subject = _parse_subject(subject_text)
    start = _parse_start(start_text)
    page = subject_timeline(view, subject, start)
    if page.total == 0:
        raise QueryNotFound(f"no anchor on subject {subject!r}")
    return page.to_json()


def query(view: ReadView, path: list[str], reader: Reader) -> Any:
    """`anchors/{hash_hex}`, `subjects/{subject}`, `subjects/{subject}/from/{n}`.

    Anchors are readable by every member: CONTRACTS.md restricts no evidence reads.

    Raises:
        QueryNotFound: unknown path, or no anchor of the hash or on the subject.
        ContractError: `query.invalid_args` for a malformed hash, subject or index.
    """
    if len(path) == 2 and path[0] == "anchors":
        return _anchors_answer(view, path[1])
    if len(path) == 2 and path[0] == "subjects":
        return _timeline_answer(view, path[1], "0")
    if len(path) == 4 and path[0] == "subjects" and path[2] == "from":
        return _timeline_answer(view, path[1], path[3])
    raise QueryNotFound(f"no evidence query {'/'.join(path)!r}")


CONTRACT: Final = Contract(
    name=NAME,
    methods={
        METHOD_ANCHOR: Method(
            METHOD_ANCHOR,
            anchor,
            {
                "hash": Arg(hash32, binary=True),
                "kind": Arg(identifier),
                "meta": Arg(small_map(META_BYTES_MAX), optional=True),
                "subject": Arg(identifier, optional=True),
            },
        ),
        METHOD_ANCHOR_BATCH: Method(
            METHOD_ANCHOR_BATCH,
            anchor_batch,
            {
                "root": Arg(hash32, binary=True),
                "count": Arg(integer(1, BATCH_COUNT_MAX)),
                "kind": Arg(identifier),
                "meta": Arg(small_map(META_BYTES_MAX), optional=True),
            },
        ),
    },
    query=query,
)
