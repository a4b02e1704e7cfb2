"""`GET /v1/genesis`, `/v1/status`, `/v1/health`, `/v1/ready`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.api.keys import SERVICES
from node.api.responses import json_response
from node.errors import ChanceryError
from node.services import NodeServices


async def get_genesis(request: web.Request) -> web.Response:
    """The genesis file, byte for byte."""
    services = request.app[SERVICES]
    return web.Response(body=services.genesis.raw, content_type="application/json")


def status_json(services: NodeServices) -> dict[str, Any]:
    """The `/v1/status` document (API.md)."""
    identity = services.identity
    consensus = services.consensus
    store = services.store
    return {
        "chain_id": services.genesis.chain_id,
        "genesis_hash": store.genesis_hash.hex(),
        "node": {
            "index": identity.index,
            "org": identity.org,
            "public_key": identity.public_key.hex(),
        },
        "height": store.height,
        "last_block_hash": store.last_block_hash.hex(),
        "view": consensus.view,
        "primary": consensus.primary,
        "validators": [
            {
                "index": validator.index,
                "org": validator.org,
                "public_key": validator.public_key.hex(),
                "connected": validator.index == identity.index
                or validator.index in consensus.connected_peers,
            }
            for validator in services.genesis.validators
        ],
        "mempool": {"size": len(services.mempool), "bytes": services.mempool.size_bytes},
        "syncing": consensus.syncing,
    }


async def get_status(request: web.Request) -> web.Response:
    return json_response(status_json(request.app[SERVICES]))


async def get_health(request: web.Request) -> web.Response:
    """200 while the process serves."""
    return json_response({"ok": True})


async def get_ready(request: web.Request) -> web.Response:
    """200 when connected to a quorum and not syncing.

    Raises:
        ChanceryError: `node.unavailable` naming the reason (`syncing`, `no_quorum`).
    """
    services = request.app[SERVICES]
    if services.consensus.syncing:
        raise ChanceryError(
            "node.unavailable", "the node is catching up with the chain", {"reason": "syncing"}
        )
    if not services.has_quorum():
        raise ChanceryError(
            "node.unavailable",
            "the node cannot reach a quorum of validators",
            {
                "reason": "no_quorum",
                "connected_peers": len(services.consensus.connected_peers),
                "validators": len(services.genesis.validators),
            },
        )
    return json_response({"ready": True})
