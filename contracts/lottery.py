"""The `lottery` contract: notarised draws (CONTRACTS.md, lottery; docs/lottery.md).

A sponsoring enterprise creates a project naming a notary organisation and commits to a
secret; the notary approves with its own commitment; the sponsor appends salted-hash
entries; the sponsor or the notary seals the list; the sponsor, then the notary, reveal
their secrets; the notary draws (`contracts.lottery_draw`), then records the digest of
its certificate. The notary may cancel any time before the draw, on the record.

Duplicate entries are refused (`lottery.duplicate_entry`): an entry is the hash of one
salted identity, so a repeat is one person entered twice (or a chunk sent twice), and
the whole call fails with nothing appended.

State (scoped under `lottery/`; `<n>` is 8 bytes big-endian, `<level>` one byte):
- `project/<id>` -> the project record: parties, commitments, status, the step stamps,
  `count`, and `frontier` (RFC 6962 perfect-subtree roots of the list so far, at most
  one per bit of `count`), then `participants_root`, secrets and `seed`.
- `chunk/<id>/<n>` -> entries `n * 1024 .. n * 1024 + 1023` concatenated (32 bytes each).
- `node/<id>/<level>/<n>` -> the root of the perfect subtree of entries
  `[n * 2**level, (n + 1) * 2**level)`, for every complete one with level >= 10.
- `entry/<id>/<entry>` -> `<index>`: the position of an entry (duplicates, queries).
- `winners/<id>` -> `[[index, entry], ...]` in draw order.
Seal reads the frontier only; an entry's audit path reads one chunk and at most one
stored node per level: nothing reads the list.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any, Final

from contracts import lottery_draw, rfc6962
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
    text,
)

NAME: Final = "lottery"
MEMBERSHIP: Final = "membership"
ROLE_ENTERPRISE: Final = "enterprise"
ROLE_NOTARY: Final = "notary"

STATUS_CREATED: Final = "created"
STATUS_OPEN: Final = "open"
STATUS_SEALED: Final = "sealed"
STATUS_DRAWN: Final = "drawn"
STATUS_NOTARIZED: Final = "notarized"
STATUS_CANCELLED: Final = "cancelled"
CANCELLABLE: Final = frozenset({STATUS_CREATED, STATUS_OPEN, STATUS_SEALED})

RULES_BYTES_MAX: Final = 4096
TITLE_CHARS_MAX: Final = 256
REASON_CHARS_MAX: Final = 1024
ENTRIES_PER_CALL_MAX: Final = 10_000
ENTRIES_PER_PROJECT_MAX: Final = 2**32  # 4.3 billion: well past the 100 million design
WINNERS_MAX: Final = 10_000
SECRET_BYTES: Final = 32
ENTRY_BYTES: Final = 32
POSITION_BYTES: Final = 8
# 1,024 entries (32 KiB) per chunk record; subtrees at or above this level are stored.
CHUNK_HEIGHT: Final = 10
CHUNK_ENTRIES: Final = 1 << CHUNK_HEIGHT
HASH_HEX_PATTERN: Final = re.compile(r"[0-9a-fA-F]{64}")


# --- keys and records ----------------------------------------------------------------------


def _position(n: int) -> bytes:
    return n.to_bytes(POSITION_BYTES, "big")


def _project_key(project_id: str) -> bytes:
    return b"project/" + project_id.encode()


def _chunk_key(project_id: str, chunk: int) -> bytes:
    return b"chunk/" + project_id.encode() + b"/" + _position(chunk)


def _node_key(project_id: str, level: int, index: int) -> bytes:
    return b"node/" + project_id.encode() + b"/" + bytes([level]) + b"/" + _position(index)


def _entry_key(project_id: str, entry: bytes) -> bytes:
    return b"entry/" + project_id.encode() + b"/" + entry


def _winners_key(project_id: str) -> bytes:
    return b"winners/" + project_id.encode()


def _stamp(context: CallContext) -> dict[str, Any]:
    return {
        "height": context.height,
        "org": context.signer.org,
        "timestamp": context.block_timestamp_ms,
        "tx_id": context.tx_id,
    }


def _load(state: ReadView, project_id: str) -> dict[str, Any]:
    """Raises: ContractError `lottery.not_found`."""
    record = state.get_record(_project_key(project_id))
    if record is None:
        raise ContractError("lottery.not_found", "no such project", {"project_id": project_id})
    return record


def _org_roles(state: ReadView, org: str) -> list[str] | None:
    record = state.for_contract(MEMBERSHIP).get_record(b"org/" + org.encode())
    return None if record is None else record["roles"]


def _wrong_state(project: dict[str, Any], expected: list[str]) -> ContractError:
    return ContractError(
        "lottery.wrong_state",
        f"the project is {project['status']}, not {' or '.join(expected)}",
        {"project_id": project["project_id"], "status": project["status"], "expected": expected},
    )


def _require_status(project: dict[str, Any], *expected: str) -> None:
    """Raises: ContractError `lottery.wrong_state`."""
    if project["status"] not in expected:
        raise _wrong_state(project, list(expected))


def _require_notary(context: CallContext, project: dict[str, Any]) -> None:
    """Raises: ContractError `lottery.not_notary` unless the signer is of `notary_org`."""
    if context.signer.org != project["notary_org"]:
        raise ContractError(
            "lottery.not_notary",
            "only the project's notary organisation may do this",
            {"project_id": project["project_id"], "notary_org": project["notary_org"]},
        )


def _require_sponsor(context: CallContext, project: dict[str, Any]) -> None:
    """Raises: ContractError `lottery.not_sponsor` unless the signer is of `sponsor_org`."""
    if context.signer.org != project["sponsor_org"]:
        raise ContractError(
            "lottery.not_sponsor",
            "only the project's sponsor organisation may do this",
            {"project_id": project["project_id"], "sponsor_org": project["sponsor_org"]},
        )


def _save(state: StateView, project: dict[str, Any]) -> None:
    state.put_record(_project_key(project["project_id"]), project)


def _event(name: str, project: dict[str, Any], **data: Any) -> Event:
    return Event(name, {"project_id": project["project_id"], "status": project["status"], **data})


# --- create, approve ---------------------------------------------------------------------


def create(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """Create a project for the signer's (enterprise) organisation; status `created`.

    Raises:
        ContractError: `lottery.exists`; `lottery.bad_notary` when `notary_org` is not a
            notary organisation or is the sponsor itself.
    """
    project_id = args["project_id"]
    sponsor_org = context.signer.org
    notary_org = args["notary_org"]
    if state.get(_project_key(project_id)) is not None:
        raise ContractError("lottery.exists", "the project exists", {"project_id": project_id})
    if ROLE_NOTARY not in (_org_roles(state, notary_org) or []):
        raise ContractError(
            "lottery.bad_notary", "notary_org is not a notary organisation", {"org": notary_org}
        )
    if notary_org == sponsor_org:
        raise ContractError(
            "lottery.bad_notary", "the sponsor cannot be its own notary", {"org": notary_org}
        )
    project = {
        "project_id": project_id,
        "title": args["title"],
        "rules": args["rules"],
        "sponsor_org": sponsor_org,
        "notary_org": notary_org,
        "winners": args["winners"],
        "sponsor_commit": args["sponsor_commit"],
        "notary_commit": None,
        "status": STATUS_CREATED,
        "count": 0,
        "frontier": [],
        "participants_root": None,
        "sealed_height": None,
        "sealed_block_hash": None,
        "sponsor_secret": None,
        "notary_secret": None,
        "seed": None,
        "statement_digest": None,
        "cancel_reason": None,
        "steps": {"create": _stamp(context)},
    }
    _save(state, project)
    result = {"project_id": project_id, "sponsor_org": sponsor_org, "notary_org": notary_org}
    return CallOutcome(result=result, events=[_event("created", project, **result)])


def approve(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """The notary accepts the project with its commitment; status `open`.

    Raises:
        ContractError: `lottery.not_found`, `lottery.not_notary`, `lottery.wrong_state`.
    """
    project = _load(state, args["project_id"])
    _require_notary(context, project)
    _require_status(project, STATUS_CREATED)
    project["notary_commit"] = args["notary_commit"]
    project["status"] = STATUS_OPEN
    project["steps"]["approve"] = _stamp(context)
    _save(state, project)
    return CallOutcome(
        result={"project_id": project["project_id"], "status": STATUS_OPEN},
        events=[_event("approved", project)],
    )


# --- the participant list ------------------------------------------------------------------


def entries_arg(name: str, value: Any) -> None:
    """1..ENTRIES_PER_CALL_MAX entries, each bin(32)."""
    if (
        not isinstance(value, list)
        or not 0 < len(value) <= ENTRIES_PER_CALL_MAX
        or not all(isinstance(entry, bytes) and len(entry) == ENTRY_BYTES for entry in value)
    ):
        raise ContractError(
            "tx.invalid_args",
            f"argument {name!r} must be a list of 1..{ENTRIES_PER_CALL_MAX} bin(32)",
            {"argument": name},
        )


def _refuse_duplicates(state: StateView, project_id: str, entries: list[bytes]) -> None:
    """Raises: ContractError `lottery.duplicate_entry` naming the first repeated entry."""
    seen: set[bytes] = set()
    for position, entry in enumerate(entries):
        index = state.get(_entry_key(project_id, entry))
        if entry in seen or index is not None:
            details: dict[str, Any] = {"project_id": project_id, "entry": entry}
            details["position"] = position
            if index is not None:
                details["index"] = int.from_bytes(index, "big")
            raise ContractError("lottery.duplicate_entry", "the entry is in the list", details)
        seen.add(entry)


def _append(state: StateView, project: dict[str, Any], entries: list[bytes]) -> None:
    """Append `entries` to the chunks, the index, the frontier and the stored subtrees."""
    project_id = project["project_id"]
    count = project["count"]
    frontier = project["frontier"]
    chunk = count >> CHUNK_HEIGHT
    buffer = bytearray(state.get(_chunk_key(project_id, chunk)) or b"")
    for entry in entries:
        state.put(_entry_key(project_id, entry), _position(count))
        buffer += entry
        for level, index, root in rfc6962.frontier_append(
            frontier, count, rfc6962.leaf_hash(entry)
        ):
            if level >= CHUNK_HEIGHT:
                state.put(_node_key(project_id, level, index), root)
        count += 1
        if count & (CHUNK_ENTRIES - 1) == 0:
            state.put(_chunk_key(project_id, chunk), bytes(buffer))
            chunk, buffer = chunk + 1, bytearray()
    if buffer:
        state.put(_chunk_key(project_id, chunk), bytes(buffer))
    project["count"] = count


def add_participants(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """Append entries (salted identity hashes) to an open project's list.

    Raises:
        ContractError: `lottery.not_found`, `lottery.not_sponsor`, `lottery.not_open`,
            `lottery.full`, `lottery.duplicate_entry`.
    """
    project = _load(state, args["project_id"])
    entries: list[bytes] = args["entries"]
    _require_sponsor(context, project)
    if project["status"] != STATUS_OPEN:
        raise ContractError(
            "lottery.not_open",
            f"the project is {project['status']}: entries are added only while open",
            {"project_id": project["project_id"], "status": project["status"]},
        )
    if project["count"] + len(entries) > ENTRIES_PER_PROJECT_MAX:
        raise ContractError("lottery.full", "the list would exceed its limit", {})
    _refuse_duplicates(state, project["project_id"], entries)
    first = project["count"]
    _append(state, project, entries)
    _save(state, project)
    result = {"project_id": project["project_id"], "first": first, "count": project["count"]}
    return CallOutcome(
        result=result, events=[_event("participants_added", project, added=len(entries), **result)]
    )


def seal(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """Close the list: record `count`, `participants_root` and the sealing height.

    The sealing block's hash, which the seed needs, cannot be known inside that block (it
    covers the block's state root): `draw` reads it from the chain's history and records
    it as `sealed_block_hash`.

    Raises:
        ContractError: `lottery.not_found`, `lottery.not_party`, `lottery.not_open`,
            `lottery.too_few`.
    """
    project = _load(state, args["project_id"])
    if context.signer.org not in (project["sponsor_org"], project["notary_org"]):
        raise ContractError("lottery.not_party", "only the sponsor or the notary may seal", {})
    if project["status"] != STATUS_OPEN:
        raise ContractError(
            "lottery.not_open",
            f"the project is {project['status']}, not open",
            {"project_id": project["project_id"], "status": project["status"]},
        )
    if project["count"] < project["winners"]:
        raise ContractError(
            "lottery.too_few",
            "fewer entries than winners",
            {"count": project["count"], "winners": project["winners"]},
        )
    project["participants_root"] = rfc6962.frontier_root(project["frontier"])
    project["sealed_height"] = context.height
    project["status"] = STATUS_SEALED
    project["steps"]["seal"] = _stamp(context)
    _save(state, project)
    result = {
        "project_id": project["project_id"],
        "count": project["count"],
        "participants_root": project["participants_root"],
        "sealed_height": context.height,
    }
    return CallOutcome(result=result, events=[_event("sealed", project, **result)])


# --- reveal, draw, notarize, cancel --------------------------------------------------------


def reveal(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """The sponsor, then the notary, reveal their secrets after the seal.

    Raises:
        ContractError: `lottery.not_found`, `lottery.not_party`, `lottery.wrong_state`,
            `lottery.already_revealed`, `lottery.sponsor_first`, `lottery.bad_reveal`.
    """
    project = _load(state, args["project_id"])
    org = context.signer.org
    if org == project["sponsor_org"]:
        party = "sponsor"
    elif org == project["notary_org"]:
        party = "notary"
    else:
        raise ContractError("lottery.not_party", "only the sponsor or the notary reveals", {})
    _require_status(project, STATUS_SEALED)
    if context.height <= project["sealed_height"]:
        # Until the sealing block is committed its proposer could still vary its hash;
        # a secret public in the same block would let it try seeds (docs/lottery.md).
        raise ContractError(
            "lottery.wrong_state",
            "secrets are revealed in a block after the sealing block",
            {"project_id": project["project_id"], "sealed_height": project["sealed_height"]},
        )
    if project[f"{party}_secret"] is not None:
        raise ContractError("lottery.already_revealed", f"the {party} has revealed", {})
    if party == "notary" and project["sponsor_secret"] is None:
        raise ContractError("lottery.sponsor_first", "the sponsor reveals first", {})
    secret = args["secret"]
    if hashlib.sha256(secret).digest() != project[f"{party}_commit"]:
        raise ContractError(
            "lottery.bad_reveal", f"the secret does not match the {party}'s commitment", {}
        )
    project[f"{party}_secret"] = secret
    project["steps"][f"{party}_reveal"] = _stamp(context)
    _save(state, project)
    return CallOutcome(
        result={"project_id": project["project_id"], "party": party},
        events=[_event("revealed", project, party=party, secret=secret)],
    )


def entry_at(view: ReadView, project_id: str, index: int) -> bytes:
    """The entry at `index` of the list (one chunk read)."""
    chunk = view.get(_chunk_key(project_id, index >> CHUNK_HEIGHT)) or b""
    offset = (index & (CHUNK_ENTRIES - 1)) * ENTRY_BYTES
    entry = chunk[offset : offset + ENTRY_BYTES]
    if len(entry) != ENTRY_BYTES:
        raise AssertionError(f"entry {index} of {project_id} missing from its chunk")
    return entry


def draw(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """Compute the seed and the winners (contracts.lottery_draw); status `drawn`.

    Raises:
        ContractError: `lottery.not_found`, `lottery.not_notary`, `lottery.wrong_state`,
            `lottery.not_revealed`.
    """
    project = _load(state, args["project_id"])
    _require_notary(context, project)
    _require_status(project, STATUS_SEALED)
    if project["sponsor_secret"] is None or project["notary_secret"] is None:
        raise ContractError("lottery.not_revealed", "both secrets must be revealed first", {})
    project_id = project["project_id"]
    # Both reveals came in blocks after the seal (see `reveal`), so the sealing block is
    # an ancestor of this one and its hash is fixed.
    project["sealed_block_hash"] = context.block_hash_at(project["sealed_height"])
    seed = lottery_draw.draw_seed(
        project_id,
        project["participants_root"],
        project["count"],
        project["sponsor_secret"],
        project["notary_secret"],
        project["sealed_block_hash"],
    )
    indices = lottery_draw.draw_winners(seed, project["count"], project["winners"])
    winners = [[index, entry_at(state, project_id, index)] for index in indices]
    state.put_record(_winners_key(project_id), winners)
    project["seed"] = seed
    project["status"] = STATUS_DRAWN
    project["steps"]["draw"] = _stamp(context)
    _save(state, project)
    result = {"project_id": project_id, "seed": seed, "winners": indices}
    return CallOutcome(result=result, events=[_event("drawn", project, seed=seed)])


def notarize(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """Record the digest of the notarial certificate; status `notarized`.

    Raises:
        ContractError: `lottery.not_found`, `lottery.not_notary`, `lottery.wrong_state`.
    """
    project = _load(state, args["project_id"])
    _require_notary(context, project)
    _require_status(project, STATUS_DRAWN)
    project["statement_digest"] = args["statement_digest"]
    project["status"] = STATUS_NOTARIZED
    project["steps"]["notarize"] = _stamp(context)
    _save(state, project)
    digest = args["statement_digest"]
    return CallOutcome(
        result={"project_id": project["project_id"], "statement_digest": digest},
        events=[_event("notarized", project, statement_digest=digest)],
    )


def cancel(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """The notary cancels the project before the draw, with a reason on the record.

    Raises:
        ContractError: `lottery.not_found`, `lottery.not_notary`, `lottery.wrong_state`.
    """
    project = _load(state, args["project_id"])
    _require_notary(context, project)
    _require_status(project, *sorted(CANCELLABLE))
    project["cancel_reason"] = args["reason"]
    project["status"] = STATUS_CANCELLED
    project["steps"]["cancel"] = _stamp(context)
    _save(state, project)
    return CallOutcome(
        result={"project_id": project["project_id"], "status": STATUS_CANCELLED},
        events=[_event("cancelled", project, reason=args["reason"])],
    )


# --- reads (queries, the proof route, the CLI) ---------------------------------------------


def find_project(view: ReadView, project_id: str) -> dict[str, Any] | None:
    """The project record as stored, or None."""
    return view.get_record(_project_key(project_id))


def winners_of(view: ReadView, project_id: str) -> list[tuple[int, bytes]]:
    """`(index, entry)` in draw order; empty before the draw."""
    return [(index, entry) for index, entry in view.get_record(_winners_key(project_id)) or []]


def index_of(view: ReadView, project_id: str, entry: bytes) -> int | None:
    data = view.get(_entry_key(project_id, entry))
    return None if data is None else int.from_bytes(data, "big")


def _perfect_subtrees(view: ReadView, project_id: str) -> rfc6962.PerfectSubtree:
    """Perfect subtree roots: stored from level CHUNK_HEIGHT up, hashed from one chunk
    below it (the chunk's leaf hashes are kept for the one query)."""
    leaf_hashes: dict[int, list[bytes]] = {}

    def perfect(level: int, index: int) -> bytes:
        if level >= CHUNK_HEIGHT:
            root = view.get(_node_key(project_id, level, index))
            if root is None:
                raise AssertionError(f"subtree {level}/{index} of {project_id} not stored")
            return root
        first = index << level
        chunk = first >> CHUNK_HEIGHT
        if chunk not in leaf_hashes:
            data = view.get(_chunk_key(project_id, chunk)) or b""
            leaf_hashes[chunk] = [
                rfc6962.leaf_hash(data[i : i + ENTRY_BYTES])
                for i in range(0, len(data), ENTRY_BYTES)
            ]
        offset = first & (CHUNK_ENTRIES - 1)
        return rfc6962.root_of_leaf_hashes(leaf_hashes[chunk][offset : offset + (1 << level)])

    return perfect


def entry_proof(view: ReadView, project_id: str, index: int, size: int) -> dict[str, Any]:
    """`{"index", "size", "path"}`: the entry's audit path in the first `size` entries."""
    path = rfc6962.audit_path(_perfect_subtrees(view, project_id), index, size)
    return {"index": index, "size": size, "path": [node.hex() for node in path]}


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def project_json(project: dict[str, Any]) -> dict[str, Any]:
    """The `projects/{id}` answer: every field, bytes as hex, and each step's height."""
    steps = {
        step: {**stamp, "tx_id": stamp["tx_id"].hex()} for step, stamp in project["steps"].items()
    }
    answer = {key: value for key, value in project.items() if key not in ("frontier", "steps")}
    for key in (
        "sponsor_commit",
        "notary_commit",
        "participants_root",
        "sealed_block_hash",
        "sponsor_secret",
        "notary_secret",
        "seed",
        "statement_digest",
    ):
        answer[key] = _hex(project[key])
    answer["steps"] = steps
    answer["heights"] = {step: stamp["height"] for step, stamp in project["steps"].items()}
    if project["participants_root"] is None:
        answer["current_root"] = rfc6962.frontier_root(project["frontier"]).hex()
    return answer


def _parse_entry(text_value: str) -> bytes:
    """Raises: ContractError `query.invalid_args` unless 64 hex characters."""
    if not HASH_HEX_PATTERN.fullmatch(text_value):
        raise ContractError(
            "query.invalid_args", "an entry is 64 hex characters", {"argument": "entry"}
        )
    return bytes.fromhex(text_value)


def _project_or_404(view: ReadView, project_id: str) -> dict[str, Any]:
    if not IDENTIFIER_PATTERN.fullmatch(project_id):
        raise ContractError(
            "query.invalid_args", "a project id is an identifier", {"argument": "project_id"}
        )
    project = find_project(view, project_id)
    if project is None:
        raise QueryNotFound(f"no lottery project {project_id!r}")
    return project


def _winners_answer(view: ReadView, project: dict[str, Any]) -> dict[str, Any]:
    if project["seed"] is None:
        raise QueryNotFound(f"project {project['project_id']!r} is not drawn")
    winners = winners_of(view, project["project_id"])
    return {"winners": [{"index": index, "entry": entry.hex()} for index, entry in winners]}


def _entry_answer(view: ReadView, project: dict[str, Any], entry_text: str) -> dict[str, Any]:
    entry = _parse_entry(entry_text)
    project_id = project["project_id"]
    index = index_of(view, project_id, entry)
    sealed = project["participants_root"] is not None
    root = project["participants_root"] if sealed else rfc6962.frontier_root(project["frontier"])
    answer: dict[str, Any] = {
        "project_id": project_id,
        "entry": entry.hex(),
        "in_list": index is not None,
        "index": index,
        "sealed": sealed,
        "count": project["count"],
        "root": root.hex(),
        "winner": False,
        "winner_rank": None,
        "proof": None,
    }
    if index is None:
        return answer
    answer["proof"] = entry_proof(view, project_id, index, project["count"])
    for rank, (winner_index, _) in enumerate(winners_of(view, project_id)):
        if winner_index == index:
            answer["winner"], answer["winner_rank"] = True, rank
    return answer


def query(view: ReadView, path: list[str], reader: Reader) -> Any:
    """`projects/{id}`, `projects/{id}/winners`, `projects/{id}/entries/{entry_hex}`.

    Raises:
        QueryNotFound: unknown path or project, or winners before the draw.
        ContractError: `query.invalid_args` for a malformed project id or entry.
    """
    if len(path) >= 2 and path[0] == "projects":
        project = _project_or_404(view, path[1])
        if len(path) == 2:
            return project_json(project)
        if len(path) == 3 and path[2] == "winners":
            return _winners_answer(view, project)
        if len(path) == 4 and path[2] == "entries":
            return _entry_answer(view, project, path[3])
    raise QueryNotFound(f"no lottery query {'/'.join(path)!r}")


def _method(
    name: str,
    handler: Callable[[CallContext, StateView, dict[str, Any]], CallOutcome],
    args: dict[str, Arg],
    roles: frozenset[str] | None = None,
) -> Method:
    return Method(name, handler, {"project_id": Arg(identifier), **args}, roles=roles)


CONTRACT: Final = Contract(
    name=NAME,
    methods={
        "create": _method(
            "create",
            create,
            {
                "title": Arg(text(TITLE_CHARS_MAX)),
                "rules": Arg(small_map(RULES_BYTES_MAX)),
                "notary_org": Arg(identifier),
                "winners": Arg(integer(1, WINNERS_MAX)),
                "sponsor_commit": Arg(hash32, binary=True),
            },
            frozenset({ROLE_ENTERPRISE}),
        ),
        "approve": _method(
            "approve",
            approve,
            {"notary_commit": Arg(hash32, binary=True)},
            frozenset({ROLE_NOTARY}),
        ),
        "add_participants": _method(
            "add_participants", add_participants, {"entries": Arg(entries_arg, binary=True)}
        ),
        "seal": _method("seal", seal, {}),
        "reveal": _method("reveal", reveal, {"secret": Arg(hash32, binary=True)}),
        "draw": _method("draw", draw, {}, frozenset({ROLE_NOTARY})),
        "notarize": _method(
            "notarize",
            notarize,
            {"statement_digest": Arg(hash32, binary=True)},
            frozenset({ROLE_NOTARY}),
        ),
        "cancel": _method(
            "cancel", cancel, {"reason": Arg(text(REASON_CHARS_MAX))}, frozenset({ROLE_NOTARY})
        ),
    },
    query=query,
)
