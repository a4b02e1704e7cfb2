"""`GET /v1/blocks/latest`, `GET /v1/blocks/{height}` and the export stream `GET /v1/blocks`."""

from __future__ import annotations

import asyncio
from typing import Any, Final

import msgpack
from aiohttp import web

from node.api.body import MSGPACK
from node.api.keys import SERVICES
from node.api.params import parse_integer, query_boolean, query_integer
from node.api.responses import json_response
from node.block import CommittedBlock, Receipt, receipt_to_json
from node.errors import ChanceryError
from node.invariants import require
from node.services import NodeServices

EXPORT_BLOCKS_DEFAULT: Final = 100


def _block_not_found(height: int, tip: int) -> ChanceryError:
    return ChanceryError(
        "not_found", f"no block at height {height}", {"height": height, "tip_height": tip}
    )


def block_json(services: NodeServices, height: int, full: bool) -> dict[str, Any]:
    """`{"hash", "header", "tx_ids", "commit"}`, plus envelopes and receipts when `full`.

    Raises:
        ChanceryError: `not_found` above the chain's height.
    """
    store = services.store
    if full:
        block = store.get_block(height)
        if block is None:
            raise _block_not_found(height, store.height)
        return _full_block_json(block)
    summary = store.get_block_summary(height)
    if summary is None:
        raise _block_not_found(height, store.height)
    header, _, tx_ids, commit = summary
    return {
        "hash": commit.block_hash.hex(),
        "header": header.to_json(),
        "tx_ids": [tx_id.hex() for tx_id in tx_ids],
        "commit": commit.to_json(),
    }


def _full_block_json(block: CommittedBlock) -> dict[str, Any]:
    return {
        "hash": block.block_hash.hex(),
        "header": block.header.to_json(),
        "tx_ids": [tx_id.hex() for tx_id in block.tx_ids],
        "commit": block.commit.to_json(),
        "envelopes": [envelope.hex() for envelope in block.envelopes],
        "receipts": [receipt_to_json(Receipt.decode(receipt)) for receipt in block.receipts],
    }


async def get_latest_block(request: web.Request) -> web.Response:
    """The block at the chain's height. Raises: ChanceryError `request.malformed`."""
    services = request.app[SERVICES]
    full = query_boolean(request.query, "full")
    return json_response(block_json(services, services.store.height, full))


async def get_block(request: web.Request) -> web.Response:
    """Raises: ChanceryError `request.malformed` (height, full), `not_found` above the tip."""
    services = request.app[SERVICES]
    height = parse_integer(request.match_info["height"], "height")
    full = query_boolean(request.query, "full")
    return json_response(block_json(services, height, full))


async def export_blocks(request: web.Request) -> web.StreamResponse:
    """Whole blocks from `from` as concatenated msgpack maps, at most `limit` of them.

    Raises:
        ChanceryError: `request.malformed` for a bad `from` or `limit`.
    """
    services = request.app[SERVICES]
    store = services.store
    from_height = query_integer(request.query, "from", 0)
    limit = query_integer(
        request.query, "limit", EXPORT_BLOCKS_DEFAULT, 1, services.config.api.export_blocks_max
    )
    last = min(store.height, from_height + limit - 1)
    response = web.StreamResponse(headers={"Content-Type": MSGPACK})
    await response.prepare(request)
    for height in range(from_height, last + 1):
        # Reading a large block is off the event loop; LevelDB reads are thread-safe.
        block = await asyncio.to_thread(store.get_block, height)
        require(block is not None, f"block {height} missing below the tip")
        assert block is not None  # for the type checker; `require` has checked it
        await response.write(msgpack.packb(block.to_export(), use_bin_type=True))
    await response.write_eof()
    return response
