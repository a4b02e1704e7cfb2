"""The `ranking` contract: "first N paid orders win" campaigns (CONTRACTS.md, ranking).

An `enterprise` creates a campaign and becomes its merchant (its organisation). The
merchant adds orders, `[order_digest, paid_at_ms]` pairs, in any order and in calls of up
to ORDERS_PER_CALL_MAX; then closes the campaign. Orders paid within the window
(`window_start_ms <= paid_at_ms < window_end_ms`: start inclusive, end exclusive) are
ranked by `paid_at_ms`, ties by the digest's bytes; the first `winners` win; the ranking
root is the RFC 6962 root over the ranked digests. Orders outside the window are kept (a
duplicate check covers them) but not ranked.

Refusals: `add_orders` is atomic, so a duplicate digest anywhere in the call, repeated
within the call or added by an earlier call, refuses the whole call
(`ranking.duplicate_order` naming the first such digest) and adds nothing.

Status moves only along `open --close--> closing --close...--> closed`. Closing is
incremental so no transaction sorts the whole list: each `add_orders` call stores its
in-window orders as one sorted *run*; each `close` call merges the runs for at most
CLOSE_STEP_ORDERS_MAX ranked orders (a heap over the runs' heads, reading run pages only
as they are consumed) and appends them as ranked pages. The first `close` stops further
additions (`closing`); the merchant repeats `close` until the receipt says `closed`, which
the call that ranks the last order records together with `ranking_root`. A campaign with
no order in its window closes in one call.

A sort key is 40 bytes, `paid_at_ms` (8 bytes big-endian) || order_digest, so byte order
is ranking order. State (scoped under `ranking/`; `<n>` is 4 bytes big-endian):
- `campaign/<id>` -> the campaign record (status, counts, window, root, heights).
- `order/<id>/<digest>` -> `paid_at_ms` as 8 bytes: the duplicate check and the query.
- `runs/<id>` -> `{"sizes": [...]}`: the sizes of the sorted runs, one per add call.
- `run/<id>/<run n>/<page n>` -> up to PAGE_ORDERS sort keys, concatenated.
- `cursor/<id>` -> `{"heads": [[run, position, head key], ...]}` while `closing`.
- `ranked/<id>/<page n>` -> up to PAGE_ORDERS sort keys in rank order, concatenated.
- `pages/<id>` -> `{"first_keys": [...], "hashes": [...]}`: each ranked page's first
  sort key and RFC 6962 subtree hash. A rank query bisects `first_keys`, reads one page
  and builds the audit path from that page and `hashes` (contracts/rfc6962.py).
"""

from __future__ import annotations

import bisect
import heapq
import re
from typing import Any, Final

from contracts.rfc6962 import leaf_hash
from contracts.rfc6962 import path_of_leaf_hashes as path_of
from contracts.rfc6962 import root_of_leaf_hashes as root_of
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
    identifier,
    integer,
    text,
)

NAME: Final = "ranking"
ROLE_ENTERPRISE: Final = "enterprise"
STATUS_OPEN: Final = "open"
STATUS_CLOSING: Final = "closing"
STATUS_CLOSED: Final = "closed"

TITLE_CHARS_MAX: Final = 256
TIME_MS_MAX: Final = 2**63 - 1
ORDERS_PER_CALL_MAX: Final = 10_000
ORDERS_PER_CAMPAIGN_MAX: Final = 2**24  # 16,777,216: `pages/<id>` stays near 1.2 MB
RUNS_PER_CAMPAIGN_MAX: Final = 4096  # add calls with in-window orders; heap size in close
PAGE_ORDERS: Final = 1024  # a power of two, so every full ranked page is a subtree
CLOSE_STEP_PAGES: Final = 64
CLOSE_STEP_ORDERS_MAX: Final = CLOSE_STEP_PAGES * PAGE_ORDERS  # 65,536 per `close` call
DIGEST_BYTES: Final = 32
TIME_BYTES: Final = 8
SORT_KEY_BYTES: Final = TIME_BYTES + DIGEST_BYTES
NUMBER_BYTES: Final = 4
HASH_HEX_PATTERN: Final = re.compile(r"[0-9a-fA-F]{64}")


def _require(condition: bool, message: str) -> None:
    """A broken invariant is a bug: stays on under `python -O`."""
    if not condition:
        raise AssertionError(message)


_require(PAGE_ORDERS & (PAGE_ORDERS - 1) == 0, "ranked pages must be aligned subtrees")
_require(ORDERS_PER_CAMPAIGN_MAX < 2 ** (8 * NUMBER_BYTES) * PAGE_ORDERS, "page numbers fit")
_require(RUNS_PER_CAMPAIGN_MAX < 2 ** (8 * NUMBER_BYTES), "run numbers fit")


# --- keys --------------------------------------------------------------------------------


def _number(n: int) -> bytes:
    return n.to_bytes(NUMBER_BYTES, "big")


def _campaign_key(campaign_id: str) -> bytes:
    return b"campaign/" + campaign_id.encode()


def _order_key(campaign_id: str, digest: bytes) -> bytes:
    return b"order/" + campaign_id.encode() + b"/" + digest


def _runs_key(campaign_id: str) -> bytes:
    return b"runs/" + campaign_id.encode()


def _run_page_key(campaign_id: str, run: int, page: int) -> bytes:
    return b"run/" + campaign_id.encode() + b"/" + _number(run) + b"/" + _number(page)


def _cursor_key(campaign_id: str) -> bytes:
    return b"cursor/" + campaign_id.encode()


def _ranked_page_key(campaign_id: str, page: int) -> bytes:
    return b"ranked/" + campaign_id.encode() + b"/" + _number(page)


def _pages_key(campaign_id: str) -> bytes:
    return b"pages/" + campaign_id.encode()


def sort_key(paid_at_ms: int, digest: bytes) -> bytes:
    """The 40-byte key whose byte order is the ranking order."""
    return paid_at_ms.to_bytes(TIME_BYTES, "big") + digest


def _split_keys(page: bytes) -> list[bytes]:
    return [page[i : i + SORT_KEY_BYTES] for i in range(0, len(page), SORT_KEY_BYTES)]


def page_hash(keys: list[bytes]) -> bytes:
    """The RFC 6962 subtree hash of a ranked page: its leaves are the digests."""
    return root_of([leaf_hash(key[TIME_BYTES:]) for key in keys])


# --- arguments ---------------------------------------------------------------------------


def orders_list(name: str, value: Any) -> None:
    """Argument check: 1..ORDERS_PER_CALL_MAX pairs `[bin(32), int 0..TIME_MS_MAX]`."""
    if not isinstance(value, list) or not 0 < len(value) <= ORDERS_PER_CALL_MAX:
        raise ContractError(
            "tx.invalid_args",
            f"argument {name!r} must be a list of 1..{ORDERS_PER_CALL_MAX} orders",
            {"argument": name},
        )
    for position, order in enumerate(value):
        if not _is_order(order):
            raise ContractError(
                "tx.invalid_args",
                f"argument {name!r}: order {position} must be [bin(32), paid_at_ms]",
                {"argument": name, "position": position},
            )


def _is_order(order: Any) -> bool:
    if not isinstance(order, list | tuple) or len(order) != 2:
        return False
    digest, paid_at_ms = order
    if not isinstance(digest, bytes) or len(digest) != DIGEST_BYTES:
        return False
    if not isinstance(paid_at_ms, int) or isinstance(paid_at_ms, bool):
        return False
    return 0 <= paid_at_ms <= TIME_MS_MAX


# --- campaign records --------------------------------------------------------------------


def _load(view: ReadView, campaign_id: str) -> dict[str, Any]:
    """Raises: ContractError `ranking.not_found`."""
    record = view.get_record(_campaign_key(campaign_id))
    if record is None:
        raise ContractError("ranking.not_found", "no such campaign", {"campaign_id": campaign_id})
    return record


def _load_for_merchant(context: CallContext, state: StateView, campaign_id: str) -> dict[str, Any]:
    """Raises: ContractError `ranking.not_found`, `ranking.not_merchant`."""
    record = _load(state, campaign_id)
    if context.signer.org != record["merchant_org"]:
        raise ContractError(
            "ranking.not_merchant",
            "only the merchant's organisation may change this campaign",
            {"campaign_id": campaign_id, "merchant_org": record["merchant_org"]},
        )
    return record


def _refuse_unless_open(record: dict[str, Any]) -> None:
    """Raises: ContractError `ranking.closed`."""
    if record["status"] != STATUS_OPEN:
        raise ContractError(
            "ranking.closed",
            "the campaign no longer takes orders",
            {"campaign_id": record["campaign_id"], "status": record["status"]},
        )


# --- create ------------------------------------------------------------------------------


def create(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """Create a campaign whose merchant is the signer's organisation; status `open`.

    Raises:
        ContractError: `ranking.exists` if the id is taken; `tx.invalid_args` unless
            `window_start_ms < window_end_ms`.
    """
    campaign_id = args["campaign_id"]
    if args["window_start_ms"] >= args["window_end_ms"]:
        raise ContractError(
            "tx.invalid_args",
            "window_start_ms must be before window_end_ms",
            {"argument": "window_end_ms"},
        )
    if state.get(_campaign_key(campaign_id)) is not None:
        raise ContractError("ranking.exists", "campaign exists", {"campaign_id": campaign_id})
    record = {
        "campaign_id": campaign_id,
        "title": args["title"],
        "merchant_org": context.signer.org,
        "creator": context.signer.public_key,
        "winners": args["winners"],
        "window_start_ms": args["window_start_ms"],
        "window_end_ms": args["window_end_ms"],
        "status": STATUS_OPEN,
        "order_count": 0,
        "window_count": 0,
        "run_count": 0,
        "ranked_count": 0,
        "ranking_root": None,
        "created_height": context.height,
        "closing_height": None,
        "closed_height": None,
    }
    state.put_record(_campaign_key(campaign_id), record)
    state.put_record(_runs_key(campaign_id), {"sizes": []})
    result = {"campaign_id": campaign_id, "merchant_org": context.signer.org}
    return CallOutcome(result=result, events=[Event("campaign_created", result)])


# --- add_orders --------------------------------------------------------------------------


def _refuse_duplicates(state: StateView, campaign_id: str, orders: list[Any]) -> None:
    """Raises: ContractError `ranking.duplicate_order` naming the first duplicate digest."""
    seen: set[bytes] = set()
    for digest, _ in orders:
        if digest in seen or state.get(_order_key(campaign_id, digest)) is not None:
            raise ContractError(
                "ranking.duplicate_order",
                "this order digest is already in the campaign",
                {"campaign_id": campaign_id, "order_digest": digest},
            )
        seen.add(digest)


def _refuse_when_full(record: dict[str, Any], added: int, in_window: int) -> None:
    """Raises: ContractError `ranking.full` past the campaign's order or run limit."""
    too_many_orders = record["order_count"] + added > ORDERS_PER_CAMPAIGN_MAX
    too_many_runs = in_window > 0 and record["run_count"] >= RUNS_PER_CAMPAIGN_MAX
    if too_many_orders or too_many_runs:
        raise ContractError(
            "ranking.full",
            "the campaign holds no more orders",
            {
                "campaign_id": record["campaign_id"],
                "orders_max": ORDERS_PER_CAMPAIGN_MAX,
                "runs_max": RUNS_PER_CAMPAIGN_MAX,
            },
        )


def _store_run(state: StateView, record: dict[str, Any], keys: list[bytes]) -> None:
    """Store the sorted in-window keys of one call as the campaign's next run."""
    campaign_id = record["campaign_id"]
    run = record["run_count"]
    for page, start in enumerate(range(0, len(keys), PAGE_ORDERS)):
        state.put(
            _run_page_key(campaign_id, run, page), b"".join(keys[start : start + PAGE_ORDERS])
        )
    runs = state.get_record(_runs_key(campaign_id))
    runs["sizes"].append(len(keys))
    state.put_record(_runs_key(campaign_id), runs)
    record["run_count"] = run + 1


def add_orders(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """Add up to ORDERS_PER_CALL_MAX orders; all of them or, on any refusal, none.

    Raises:
        ContractError: `ranking.not_found`, `ranking.not_merchant`, `ranking.closed` once
            the first `close` ran, `ranking.duplicate_order` if a digest repeats within
            the call or was added before, `ranking.full` past the campaign's limits.
    """
    campaign_id = args["campaign_id"]
    record = _load_for_merchant(context, state, campaign_id)
    _refuse_unless_open(record)
    orders = args["orders"]
    _refuse_duplicates(state, campaign_id, orders)
    start, end = record["window_start_ms"], record["window_end_ms"]
    keys = sorted(sort_key(paid_at, digest) for digest, paid_at in orders if start <= paid_at < end)
    _refuse_when_full(record, len(orders), len(keys))
    for digest, paid_at in orders:
        state.put(_order_key(campaign_id, digest), paid_at.to_bytes(TIME_BYTES, "big"))
    if keys:
        _store_run(state, record, keys)
    record["order_count"] += len(orders)
    record["window_count"] += len(keys)
    state.put_record(_campaign_key(campaign_id), record)
    result = {
        "campaign_id": campaign_id,
        "added": len(orders),
        "in_window": len(keys),
        "order_count": record["order_count"],
    }
    return CallOutcome(result=result, events=[Event("orders_added", result)])


# --- close -------------------------------------------------------------------------------


class _RunReader:
    """Sort keys of the runs, one page per run loaded at a time, within one close call."""

    def __init__(self, view: ReadView, campaign_id: str) -> None:
        self._view = view
        self._campaign_id = campaign_id
        self._pages: dict[int, tuple[int, list[bytes]]] = {}

    def key(self, run: int, position: int) -> bytes:
        page, offset = divmod(position, PAGE_ORDERS)
        cached = self._pages.get(run)
        if cached is None or cached[0] != page:
            data = self._view.get(_run_page_key(self._campaign_id, run, page))
            _require(data is not None, "a run page is missing")
            cached = (page, _split_keys(data))
            self._pages[run] = cached
        return cached[1][offset]


def _initial_heads(view: ReadView, campaign_id: str) -> list[list[Any]]:
    sizes = view.get_record(_runs_key(campaign_id))["sizes"]
    reader = _RunReader(view, campaign_id)
    return [[run, 0, reader.key(run, 0)] for run, size in enumerate(sizes) if size > 0]


def _take_step(view: ReadView, campaign_id: str, heads: list[list[Any]]) -> list[bytes]:
    """At most CLOSE_STEP_ORDERS_MAX next keys in rank order; `heads` advance past them."""
    sizes = view.get_record(_runs_key(campaign_id))["sizes"]
    reader = _RunReader(view, campaign_id)
    heap = [(head, run, position) for run, position, head in heads]
    heapq.heapify(heap)
    taken: list[bytes] = []
    while heap and len(taken) < CLOSE_STEP_ORDERS_MAX:
        head, run, position = heap[0]
        taken.append(head)
        position += 1
        if position < sizes[run]:
            heapq.heapreplace(heap, (reader.key(run, position), run, position))
        else:
            heapq.heappop(heap)
    heads[:] = [[run, position, head] for head, run, position in sorted(heap)]
    return taken


def _append_ranked(state: StateView, record: dict[str, Any], keys: list[bytes]) -> None:
    """Write `keys` as the next ranked pages and index their first keys and hashes."""
    campaign_id = record["campaign_id"]
    _require(record["ranked_count"] % PAGE_ORDERS == 0, "only the last ranked page is partial")
    pages = state.get_record(_pages_key(campaign_id)) or {"first_keys": [], "hashes": []}
    page = record["ranked_count"] // PAGE_ORDERS
    for start in range(0, len(keys), PAGE_ORDERS):
        chunk = keys[start : start + PAGE_ORDERS]
        state.put(_ranked_page_key(campaign_id, page), b"".join(chunk))
        pages["first_keys"].append(chunk[0])
        pages["hashes"].append(page_hash(chunk))
        page += 1
    state.put_record(_pages_key(campaign_id), pages)
    record["ranked_count"] += len(keys)


def close(context: CallContext, state: StateView, args: dict[str, Any]) -> CallOutcome:
    """Rank the next CLOSE_STEP_ORDERS_MAX orders; the call that ranks the last one records
    `ranking_root` and status `closed`. Repeat until the result's status is `closed`.

    Raises:
        ContractError: `ranking.not_found`, `ranking.not_merchant`, `ranking.closed` once
            the campaign is closed.
    """
    campaign_id = args["campaign_id"]
    record = _load_for_merchant(context, state, campaign_id)
    if record["status"] == STATUS_CLOSED:
        raise ContractError(
            "ranking.closed", "the campaign is closed", {"campaign_id": campaign_id}
        )
    events: list[Event] = []
    if record["status"] == STATUS_OPEN:
        record["status"] = STATUS_CLOSING
        record["closing_height"] = context.height
        heads = _initial_heads(state, campaign_id)
        events.append(Event("campaign_closing", {"campaign_id": campaign_id}))
    else:
        heads = state.get_record(_cursor_key(campaign_id))["heads"]
    keys = _take_step(state, campaign_id, heads)
    if keys:
        _append_ranked(state, record, keys)
    if heads:
        state.put_record(_cursor_key(campaign_id), {"heads": heads})
    else:
        _finish(context, state, record)
        events.append(Event("campaign_closed", _closed_summary(record)))
    state.put_record(_campaign_key(campaign_id), record)
    result = {
        "campaign_id": campaign_id,
        "status": record["status"],
        "ranked_count": record["ranked_count"],
        "window_count": record["window_count"],
        "ranking_root": record["ranking_root"],
    }
    return CallOutcome(result=result, events=events)


def _finish(context: CallContext, state: StateView, record: dict[str, Any]) -> None:
    campaign_id = record["campaign_id"]
    _require(record["ranked_count"] == record["window_count"], "every in-window order ranked")
    pages = state.get_record(_pages_key(campaign_id)) or {"first_keys": [], "hashes": []}
    record["ranking_root"] = root_of(pages["hashes"])
    record["status"] = STATUS_CLOSED
    record["closed_height"] = context.height
    state.delete(_cursor_key(campaign_id))


def _closed_summary(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "campaign_id": record["campaign_id"],
        "ranked_count": record["ranked_count"],
        "ranking_root": record["ranking_root"],
        "winners": min(record["winners"], record["ranked_count"]),
    }


# --- queries -----------------------------------------------------------------------------


def _malformed(argument: str, message: str) -> ContractError:
    return ContractError("query.invalid_args", message, {"argument": argument})


def _campaign_json(record: dict[str, Any]) -> dict[str, Any]:
    answer = dict(record)
    answer["creator"] = record["creator"].hex()
    root = record["ranking_root"]
    answer["ranking_root"] = None if root is None else root.hex()
    return answer


def _parse_campaign_id(value: str) -> str:
    if not IDENTIFIER_PATTERN.fullmatch(value):
        raise _malformed("campaign_id", "a campaign id is 1..64 characters of [A-Za-z0-9._:-]")
    return value


def _campaign_query(view: ReadView, campaign_text: str) -> dict[str, Any]:
    campaign_id = _parse_campaign_id(campaign_text)
    record = view.get_record(_campaign_key(campaign_id))
    if record is None:
        raise QueryNotFound("no such campaign")
    return _campaign_json(record)


def _ranked_position(view: ReadView, campaign_id: str, key: bytes) -> tuple[int, list[bytes]]:
    """(rank from 0, audit path) of a ranked sort key in a closed campaign."""
    pages = view.get_record(_pages_key(campaign_id))
    page = bisect.bisect_right(pages["first_keys"], key) - 1
    _require(page >= 0, "a ranked key sorts after the first page's first key")
    keys = _split_keys(view.get(_ranked_page_key(campaign_id, page)))
    offset = bisect.bisect_left(keys, key)
    _require(offset < len(keys) and keys[offset] == key, "an in-window order is ranked")
    leaves = [leaf_hash(entry[TIME_BYTES:]) for entry in keys]
    path = path_of(leaves, offset) + path_of(pages["hashes"], page)
    return page * PAGE_ORDERS + offset, path


def _order_query(view: ReadView, campaign_text: str, digest_text: str) -> dict[str, Any]:
    campaign_id = _parse_campaign_id(campaign_text)
    if not HASH_HEX_PATTERN.fullmatch(digest_text):
        raise _malformed("order_digest", "an order digest is 64 hex characters")
    digest = bytes.fromhex(digest_text)
    record = view.get_record(_campaign_key(campaign_id))
    paid_at = view.get(_order_key(campaign_id, digest))
    if record is None or paid_at is None:
        raise QueryNotFound("no such order in this campaign")
    paid_at_ms = int.from_bytes(paid_at, "big")
    in_window = record["window_start_ms"] <= paid_at_ms < record["window_end_ms"]
    answer: dict[str, Any] = {
        "campaign_id": campaign_id,
        "order_digest": digest.hex(),
        "paid_at_ms": paid_at_ms,
        "in_window": in_window,
        "status": record["status"],
        "rank": None,
        "won": False,
        "proof": None,
        "ranking_root": None,
    }
    if not in_window or record["status"] != STATUS_CLOSED:
        return answer
    index, path = _ranked_position(view, campaign_id, sort_key(paid_at_ms, digest))
    answer["rank"] = index + 1
    answer["won"] = index < record["winners"]
    answer["proof"] = {
        "index": index,
        "size": record["ranked_count"],
        "path": [node.hex() for node in path],
    }
    answer["ranking_root"] = record["ranking_root"].hex()
    return answer


def query(view: ReadView, path: list[str], reader: Reader) -> Any:
    """`campaigns/{id}`, `campaigns/{id}/orders/{order_digest_hex}`.

    An order's answer has `rank` (1 is first) and `won` once the campaign is closed and
    the order is in the window, with `proof` = its RFC 6962 audit path
    (`{"index": rank - 1, "size", "path"}`) to `ranking_root`.

    Raises:
        QueryNotFound: unknown path, campaign or order.
        ContractError: `query.invalid_args` for a malformed id or digest.
    """
    if len(path) == 2 and path[0] == "campaigns":
        return _campaign_query(view, path[1])
    if len(path) == 4 and path[0] == "campaigns" and path[2] == "orders":
        return _order_query(view, path[1], path[3])
    raise QueryNotFound(f"no ranking query {'/'.join(path)!r}")


CAMPAIGN_ID: Final = Arg(identifier)
TIME_MS: Final = Arg(integer(0, TIME_MS_MAX))

CONTRACT: Final = Contract(
    name=NAME,
    methods={
        "create": Method(
            "create",
            create,
            {
                "campaign_id": CAMPAIGN_ID,
                "title": Arg(text(TITLE_CHARS_MAX)),
                "winners": Arg(integer(1, ORDERS_PER_CAMPAIGN_MAX)),
                "window_start_ms": TIME_MS,
                "window_end_ms": TIME_MS,
            },
            roles=frozenset({ROLE_ENTERPRISE}),
        ),
        "add_orders": Method(
            "add_orders",
            add_orders,
            {"campaign_id": CAMPAIGN_ID, "orders": Arg(orders_list)},
        ),
        "close": Method("close", close, {"campaign_id": CAMPAIGN_ID}),
    },
    query=query,
)
