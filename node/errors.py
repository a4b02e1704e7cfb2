"""The node layer's one exception type, carrying the stable error codes of API.md.

Every way a client can be wrong maps to a `ChanceryError` with a machine-readable `code`
and the HTTP status the API answers with. A broken invariant is not a `ChanceryError`:
it is a bug and goes through `node.invariants.require`, which crashes loudly.
"""

from __future__ import annotations

from typing import Any

# code -> HTTP status. Codes are part of the public API: never rename one.
HTTP_STATUS_BY_CODE: dict[str, int] = {
    "request.malformed": 400,
    "tx.malformed": 400,
    "tx.wrong_chain": 400,
    "tx.invalid_args": 400,
    "tx.unknown_method": 400,
    "tx.too_large": 413,
    "request.unauthenticated": 401,
    "tx.bad_signature": 401,
    "tx.unknown_signer": 403,
    "tx.forbidden": 403,
    "request.forbidden": 403,
    "not_found": 404,
    "request.method_not_allowed": 405,
    "tx.duplicate": 409,
    "request.too_large": 413,
    "request.batch_too_large": 413,
    "request.unsupported_media_type": 415,
    "mempool.full": 429,
    "node.busy": 429,
    "node.unavailable": 503,
    "tx.commit_timeout": 504,
    # Only ever for a bug in the node: a client's input never produces it.
    "internal": 500,
}


class ChanceryError(Exception):
    """A refusal with a stable `code` (API.md), a human message and optional details."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        if code not in HTTP_STATUS_BY_CODE:
            raise AssertionError(f"unregistered error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}

    @property
    def http_status(self) -> int:
        return HTTP_STATUS_BY_CODE[self.code]

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}
