"""`POST /v1/transactions`, `POST /v1/transactions/batch`, `GET /v1/transactions/{tx_id}`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgpack
from aiohttp import web

from node.admission import AdmissionResult
from node.api.body import JSON, MSGPACK, decode_json, read_body, require_media_type
from node.api.keys import SERVICES
from node.api.params import malformed, parse_hash_hex, query_boolean, query_choice, query_integer
from node.api.responses import json_ready_response, json_response
from node.block import Receipt, receipt_to_json, to_json_value
from node.errors import ChanceryError
from node.mempool import mempool_full
from node.metrics import NodeMetrics
from node.notify import CommittedTx
from node.proof import build_tx_proof
from node.services import NodeServices
from node.transaction import Transaction

WAIT_CHOICES = ("none", "commit")


def committed_json(committed: CommittedTx) -> dict[str, Any]:
    return {
        "tx_id": committed.tx_id.hex(),
        "status": "committed",
        "height": committed.height,
        "index": committed.index,
        "receipt": receipt_to_json(committed.receipt),
    }


def record_admission(metrics: NodeMetrics, results: Sequence[AdmissionResult]) -> None:
    """Count admitted and refused transactions (refusals by code)."""
    admitted = 0
    for result in results:
        if isinstance(result, ChanceryError):
            metrics.rejected_txs.labels(code=result.code).inc()
        else:
            admitted += 1
    if admitted:
        metrics.admitted_txs.inc(admitted)


async def _read_single_envelope(request: web.Request, services: NodeServices) -> bytes | Any:
    """The request's envelope: msgpack bytes as sent, or the decoded JSON object."""
    media_type = require_media_type(request)
    body = await read_body(request, services.config.api.body_bytes_max)
    return body if media_type == MSGPACK else decode_json(body)


async def _admit(services: NodeServices, envelope: bytes | Any) -> Transaction:
    try:
        tx = await services.admission.admit_one(envelope)
    except ChanceryError as error:
        record_admission(services.metrics, [error])
        raise
    record_admission(services.metrics, [tx])
    return tx


async def submit_transaction(request: web.Request) -> web.Response:
    """Admit one envelope; `wait=commit` answers once it is committed (or 504).

    Raises:
        ChanceryError: request.* for the request itself, tx.* for the envelope,
            `mempool.full`, `node.busy`, `tx.commit_timeout`.
    """
    services = request.app[SERVICES]
    api = services.config.api
    wait = query_choice(request.query, "wait", WAIT_CHOICES)
    timeout_ms = query_integer(
        request.query, "timeout_ms", api.commit_timeout_ms_default, 1, api.commit_timeout_ms_max
    )
    _refuse_when_full(services)
    envelope = await _read_single_envelope(request, services)
    if wait == "none":
        tx = await _admit(services, envelope)
        return json_response({"tx_id": tx.tx_id.hex(), "status": "pending"}, status=202)
    # Register the waiter before the tx can enter the mempool, so no commit is missed
    # and a busy node refuses before admitting anything.
    try:
        tx_id = services.admission.decode(envelope).tx_id
    except ChanceryError as error:
        record_admission(services.metrics, [error])
        raise
    future = services.notifier.add_waiter(tx_id)
    try:
        await _admit(services, envelope)
        committed = await _wait_for_commit(future, timeout_ms, tx_id)
    finally:
        services.notifier.remove_waiter(tx_id, future)
    return json_response(committed_json(committed))


def _refuse_when_full(services: NodeServices) -> None:
    """Refuse a submission to a full mempool before its body is read or decoded.

    Under overload every refusal must be cheap: decoding a batch of envelopes only to
    refuse each of them costs the event loop milliseconds that consensus messages wait
    behind (docs/performance.md, the overload runs).

    Raises:
        ChanceryError: `mempool.full` (429, `Retry-After`).
    """
    if services.mempool.is_full:
        # Counted once per request: a refused batch is never read, so its size is unknown
        # (the HTTP metrics count these 429s by route as well).
        services.metrics.rejected_txs.labels(code="mempool.full").inc()
        raise mempool_full()


async def _wait_for_commit(
    future: asyncio.Future[CommittedTx], timeout_ms: int, tx_id: bytes
) -> CommittedTx:
    """Raises: ChanceryError `tx.commit_timeout` (the tx stays pending)."""
    try:
        async with asyncio.timeout(timeout_ms / 1000):
            return await future
    except TimeoutError:
        raise ChanceryError(
            "tx.commit_timeout",
            f"not committed within {timeout_ms} ms; the transaction stays pending",
            {"tx_id": tx_id.hex(), "status": "pending"},
        ) from None


def _batch_items_msgpack(body: bytes, items_max: int) -> list[bytes | ChanceryError]:
    """A msgpack array of envelope bytes; its length is checked before any item is decoded.

    Raises:
        ChanceryError: `request.malformed`, `request.batch_too_large`.
    """
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(body), 1))
    unpacker.feed(body)
    try:
        count = unpacker.read_array_header()
        _check_batch_size(count, items_max)
        items = [unpacker.unpack() for _ in range(count)]
        trailing = unpacker.tell() != len(body)
    except ChanceryError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise malformed(f"body is not a msgpack array of envelopes: {exc}") from None
    if trailing:
        raise malformed("trailing bytes after the msgpack array")
    return [
        item
        if isinstance(item, bytes)
        else ChanceryError("tx.malformed", "a batch item must be the envelope as msgpack bin")
        for item in items
    ]


def _batch_items_json(body: bytes, items_max: int) -> list[Any]:
    """Raises: ChanceryError `request.malformed`, `request.batch_too_large`."""
    items = decode_json(body)
    if not isinstance(items, list):
        raise malformed("body must be a JSON list of envelope objects")
    _check_batch_size(len(items), items_max)
    return items


def _check_batch_size(count: int, items_max: int) -> None:
    if count > items_max:
        raise ChanceryError(
            "request.batch_too_large",
            f"a batch holds at most {items_max} envelopes",
            {"count": count, "limit": items_max},
        )


def _error_tx_id(services: NodeServices, item: Any) -> str | None:
    """The tx_id of a refused item, when its envelope decodes at all."""
    if isinstance(item, ChanceryError):
        return None
    try:
        return services.admission.decode(item).tx_id.hex()
    except ChanceryError:
        return None


def _batch_result_json(services: NodeServices, item: Any, result: Any) -> dict[str, Any]:
    if isinstance(result, Transaction):
        return {"tx_id": result.tx_id.hex(), "status": "pending"}
    error = to_json_value(result.to_json())
    return {"tx_id": _error_tx_id(services, item), "error": error["error"]}


async def submit_batch(request: web.Request) -> web.Response:
    """Admit up to `batch_envelopes_max` envelopes; one result per envelope, in order.

    Raises:
        ChanceryError: `request.unsupported_media_type`, `request.too_large`,
            `request.malformed`, `request.batch_too_large`, and `mempool.full` for the
            whole request when the mempool is full before it is read.
    """
    services = request.app[SERVICES]
    api = services.config.api
    media_type = require_media_type(request)
    _refuse_when_full(services)
    body = await read_body(request, api.body_bytes_max)
    items: list[Any] = (
        _batch_items_json(body, api.batch_envelopes_max)
        if media_type == JSON
        else _batch_items_msgpack(body, api.batch_envelopes_max)
    )
    candidates = [item for item in items if not isinstance(item, ChanceryError)]
    admitted = iter(await services.admission.admit_many(candidates))
    results = [item if isinstance(item, ChanceryError) else next(admitted) for item in items]
    record_admission(services.metrics, results)
    return json_ready_response(
        [
            _batch_result_json(services, item, result)
            for item, result in zip(items, results, strict=True)
        ]
    )


def _pending_json(tx: Transaction) -> dict[str, Any]:
    return {
        "tx_id": tx.tx_id.hex(),
        "status": "pending",
        "height": None,
        "index": None,
        "receipt": None,
        "envelope": tx.envelope.hex(),
    }


async def get_transaction(request: web.Request) -> web.Response:
    """A pending or committed transaction, or with `proof=true` its proof bundle.

    Raises:
        ChanceryError: `request.malformed` (tx_id, proof), `not_found`.
    """
    services = request.app[SERVICES]
    tx_id = parse_hash_hex(request.match_info["tx_id"], "tx_id")
    want_proof = query_boolean(request.query, "proof")
    # The store first: a just-committed tx may linger in the mempool for a moment.
    record = services.store.get_tx(tx_id)
    if record is None:
        pending = services.mempool.get(tx_id)
        if pending is None:
            raise ChanceryError("not_found", "no such transaction", {"tx_id": tx_id.hex()})
        if want_proof:
            raise ChanceryError(
                "not_found",
                "the transaction is pending: no proof until it is committed",
                {"tx_id": tx_id.hex(), "status": "pending"},
            )
        return json_response(_pending_json(pending))
    if want_proof:
        bundle = build_tx_proof(services.store, services.genesis, tx_id)
        if bundle is None:
            raise ChanceryError("not_found", "no such transaction", {"tx_id": tx_id.hex()})
        return json_response(bundle)
    return json_response(
        {
            "tx_id": tx_id.hex(),
            "status": "committed",
            "height": record.height,
            "index": record.index,
            "receipt": receipt_to_json(Receipt.decode(record.receipt)),
            "envelope": record.envelope.hex(),
        }
    )
