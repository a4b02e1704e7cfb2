"""One error shape for every refusal: `{"error": {"code", "message", "details"}}`.

`error_middleware` turns the node's `ChanceryError`s and aiohttp's own HTTP exceptions
(unknown route, wrong method, body too large) into that shape. Anything else is a bug:
it is logged with its traceback and answered 500 `internal`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler

from node.api.responses import json_response
from node.errors import ChanceryError

log = logging.getLogger(__name__)

# The status of aiohttp's HTTP exceptions -> the API's error code.
CODE_BY_HTTP_STATUS: Final[dict[int, str]] = {
    400: "request.malformed",
    401: "request.unauthenticated",
    403: "request.forbidden",
    404: "not_found",
    405: "request.method_not_allowed",
    413: "request.too_large",
    415: "request.unsupported_media_type",
}
RETRY_AFTER_S_DEFAULT: Final = 1
INTERNAL_CODE: Final = "internal"


def error_json_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return json_response(body, status)


def chancery_error_response(error: ChanceryError) -> web.Response:
    """The API's answer to a refusal; 429 carries `Retry-After` (seconds)."""
    response = error_json_response(error.http_status, error.code, error.message, error.details)
    if error.http_status == 429:
        retry_after_s = error.details.get("retry_after_s", RETRY_AFTER_S_DEFAULT)
        response.headers["Retry-After"] = str(retry_after_s)
    return response


def http_exception_response(exception: web.HTTPException) -> web.Response:
    """aiohttp's 4xx exceptions in the API's shape, keeping `Allow` on a 405."""
    status = exception.status
    code = CODE_BY_HTTP_STATUS.get(status, "request.malformed" if status < 500 else INTERNAL_CODE)
    message = exception.reason
    if status == 404:
        message = "no such route"
    response = error_json_response(status, code, message)
    allow = exception.headers.get("Allow")
    if allow is not None:
        response.headers["Allow"] = allow
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal in the one JSON shape; unexpected exceptions logged and answered 500."""
    try:
        return await handler(request)
    except ChanceryError as error:
        return chancery_error_response(error)
    except web.HTTPException as exception:
        if exception.status < 400:
            raise  # redirects and the like pass through untouched
        return http_exception_response(exception)
    except (asyncio.CancelledError, ConnectionError):
        raise  # the client went away; aiohttp handles it
    except Exception:
        log.exception("internal error answering %s %s", request.method, request.path)
        return error_json_response(500, INTERNAL_CODE, "internal error (a bug in the node)")
