"""`create_app(services)`: the node's HTTP API (API.md) as an aiohttp application.

Middlewares, outermost first: request metrics (sees the final status), errors (one JSON
shape for every refusal), then signed reads when `api.read_access = "members"`.
"""

from __future__ import annotations

from aiohttp import web

from node.api import (
    blocks,
    chain,
    contracts,
    events,
    evidence,
    lottery,
    metrics,
    openapi,
    transactions,
    ui,
)
from node.api.errors import error_middleware
from node.api.keys import EVENT_STREAM_TASKS, OPENAPI_DOCUMENT, SERVICES
from node.api.metrics import metrics_middleware
from node.api.read_auth import read_auth_middleware
from node.services import NodeServices

# HEAD is not served: the OpenAPI document describes exactly these operations.
ROUTES: list[web.RouteDef] = [
    web.post("/v1/transactions", transactions.submit_transaction),
    web.post("/v1/transactions/batch", transactions.submit_batch),
    web.get("/v1/transactions/{tx_id}", transactions.get_transaction, allow_head=False),
    web.get("/v1/blocks/latest", blocks.get_latest_block, allow_head=False),
    web.get("/v1/blocks/{height}", blocks.get_block, allow_head=False),
    web.get("/v1/blocks", blocks.export_blocks, allow_head=False),
    web.get("/v1/genesis", chain.get_genesis, allow_head=False),
    web.get("/v1/status", chain.get_status, allow_head=False),
    web.get("/v1/health", chain.get_health, allow_head=False),
    web.get("/v1/ready", chain.get_ready, allow_head=False),
    web.get("/v1/events", events.stream_events, allow_head=False),
    # Listed before the generic contract query route, which also matches its path.
    web.get(
        "/v1/contracts/evidence/anchors/{hash}/proof", evidence.get_anchor_proof, allow_head=False
    ),
    web.get(
        "/v1/contracts/lottery/projects/{project_id}/proof",
        lottery.get_draw_proof,
        allow_head=False,
    ),
    web.get("/v1/contracts/{contract}/{query:.*}", contracts.query_contract, allow_head=False),
    web.get("/metrics", metrics.get_metrics, allow_head=False),
    web.get("/v1/openapi.json", openapi.get_openapi, allow_head=False),
    web.get("/ui/lottery/{project_id}", ui.get_lottery_page, allow_head=False),
]


def create_app(services: NodeServices) -> web.Application:
    """The API application serving `services`; the caller runs and cleans it up."""
    api = services.config.api
    middlewares = [metrics_middleware, error_middleware]
    if api.read_access == "members":
        middlewares.append(read_auth_middleware)
    app = web.Application(middlewares=middlewares, client_max_size=api.body_bytes_max)
    app[SERVICES] = services
    app[EVENT_STREAM_TASKS] = set()
    app[OPENAPI_DOCUMENT] = openapi.render_openapi(api)
    app.router.add_routes(ROUTES)
    app.on_shutdown.append(events.cancel_event_streams)
    return app
