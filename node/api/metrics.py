"""`GET /metrics` and the middleware counting requests by route, method and status."""

from __future__ import annotations

from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from node.api.keys import SERVICES
from node.services import NodeServices

UNMATCHED_ROUTE: Final = "unmatched"
# Methods outside this set are counted as "other": clients choose the method string.
KNOWN_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Counted when the client goes away before an answer is complete (nginx's convention).
CLIENT_CLOSED_STATUS: Final = 499


def route_label(request: web.Request) -> str:
    """The matched route's canonical path (bounded cardinality), or `unmatched`."""
    resource = request.match_info.route.resource
    return UNMATCHED_ROUTE if resource is None else resource.canonical


def method_label(request: web.Request) -> str:
    return request.method if request.method in KNOWN_METHODS else "other"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request in `chancery_http_requests` once it is answered."""
    status = CLIENT_CLOSED_STATUS
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exception:
        status = exception.status
        raise
    finally:
        request.app[SERVICES].metrics.http_requests.labels(
            route=route_label(request), method=method_label(request), status=str(status)
        ).inc()


def refresh_gauges(services: NodeServices) -> None:
    """Gauges sampled at scrape time rather than on every change."""
    metrics = services.metrics
    metrics.block_height.set(services.store.height)
    metrics.mempool_size.set(len(services.mempool))
    metrics.mempool_bytes.set(services.mempool.size_bytes)
    metrics.peers_connected.set(len(services.consensus.connected_peers))
    metrics.view.set(services.consensus.view)


async def get_metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of the node's registry."""
    services = request.app[SERVICES]
    refresh_gauges(services)
    return web.Response(
        body=services.metrics.render(), headers={"Content-Type": services.metrics.content_type}
    )
