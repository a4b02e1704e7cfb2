"""`GET /v1/contracts/{contract}/{query...}`: read-only queries on committed state."""

from __future__ import annotations

from aiohttp import web

from contracts.runtime import ContractError, QueryNotFound, Reader, ReadView
from node.api.keys import READER, SERVICES
from node.api.responses import json_response
from node.errors import ChanceryError


async def query_contract(request: web.Request) -> web.Response:
    """The contract's answer for the path, as the reader (if reads are signed) may see it.

    Raises:
        ChanceryError: `not_found` (unknown contract, query or record),
            `request.malformed` (the contract refused the query's arguments).
    """
    services = request.app[SERVICES]
    name = request.match_info["contract"]
    contract = services.registry.contract(name)
    if contract is None:
        raise ChanceryError("not_found", f"no contract {name!r}", {"contract": name})
    path = request.match_info["query"].split("/")
    reader = request.get(READER, Reader())
    try:
        result = contract.query(ReadView(name, services.store), path, reader)
    except QueryNotFound as exc:
        raise ChanceryError("not_found", exc.message, {"contract": name}) from None
    except ContractError as exc:
        raise ChanceryError(
            "request.malformed", exc.message, {"code": exc.code, **exc.details}
        ) from None
    return json_response(result)
