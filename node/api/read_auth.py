"""Signed reads (`api.read_access = "members"`, API.md "Access").

Every GET except the probes and documents in `OPEN_ROUTES` carries `X-Chancery-Signer`
(hex public key), `X-Chancery-Timestamp` (ms) and `X-Chancery-Signature` (hex) over
`chancery/read/v1\\n || canonical_packb([chain_id, method, path_with_query, timestamp])`,
where `path_with_query` is the request target exactly as sent. The signer must be an
active member; its organisation and roles are handed to contract queries as a `Reader`.
"""

from __future__ import annotations

import re
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from contracts.membership import is_known_key, lookup_signer
from contracts.runtime import Reader
from node.api.keys import READER, SERVICES
from node.clock import wall_clock_ms
from node.crypto import DOMAIN_READ, verify
from node.encoding import canonical_packb
from node.errors import ChanceryError

SIGNER_HEADER: Final = "X-Chancery-Signer"
TIMESTAMP_HEADER: Final = "X-Chancery-Timestamp"
SIGNATURE_HEADER: Final = "X-Chancery-Signature"
# Liveness probes, metrics and the API description stay open to every caller.
OPEN_ROUTES: Final = frozenset({"/v1/health", "/v1/ready", "/metrics", "/v1/openapi.json"})
PUBLIC_KEY_HEX_PATTERN: Final = re.compile(r"[0-9a-fA-F]{64}")
SIGNATURE_HEX_PATTERN: Final = re.compile(r"[0-9a-fA-F]{128}")
TIMESTAMP_PATTERN: Final = re.compile(r"[0-9]{1,19}")


def read_payload(chain_id: str, method: str, path_with_query: str, timestamp_ms: int) -> bytes:
    """What a read signature covers, after the `chancery/read/v1\\n` domain."""
    return canonical_packb([chain_id, method, path_with_query, timestamp_ms])


def _unauthenticated(message: str) -> ChanceryError:
    return ChanceryError(
        "request.unauthenticated",
        message,
        {"headers": [SIGNER_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER]},
    )


def _signed_headers(request: web.Request) -> tuple[bytes, int, bytes]:
    """Raises: ChanceryError `request.unauthenticated` when a header is missing or malformed."""
    signer = request.headers.get(SIGNER_HEADER, "")
    timestamp = request.headers.get(TIMESTAMP_HEADER, "")
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if not PUBLIC_KEY_HEX_PATTERN.fullmatch(signer):
        raise _unauthenticated(f"{SIGNER_HEADER} must be a 64-hex-character public key")
    if not TIMESTAMP_PATTERN.fullmatch(timestamp):
        raise _unauthenticated(f"{TIMESTAMP_HEADER} must be milliseconds since the epoch")
    if not SIGNATURE_HEX_PATTERN.fullmatch(signature):
        raise _unauthenticated(f"{SIGNATURE_HEADER} must be a 128-hex-character signature")
    return bytes.fromhex(signer), int(timestamp), bytes.fromhex(signature)


def authenticate_read(request: web.Request) -> Reader:
    """The reader behind a signed request.

    Raises:
        ChanceryError: `request.unauthenticated` (missing or malformed headers, stale
            timestamp, signature that does not verify), `request.forbidden` (the key is
            not an active member).
    """
    services = request.app[SERVICES]
    skew_ms_max = services.config.api.read_clock_skew_ms_max
    signer, timestamp_ms, signature = _signed_headers(request)
    skew_ms = abs(wall_clock_ms() - timestamp_ms)
    if skew_ms > skew_ms_max:
        raise _unauthenticated(
            f"{TIMESTAMP_HEADER} is more than {skew_ms_max} ms away from the node's clock"
        )
    payload = read_payload(
        services.genesis.chain_id, request.method, request.raw_path, timestamp_ms
    )
    if not verify(signer, DOMAIN_READ, payload, signature):
        raise _unauthenticated("read signature does not verify for the signer")
    member = lookup_signer(services.store, signer)
    if member is None:
        revoked = is_known_key(services.store, signer)
        raise ChanceryError(
            "request.forbidden",
            "signer key is revoked" if revoked else "signer is not a member",
            {"revoked": revoked},
        )
    return Reader(member.org, member.roles)


def requires_signature(request: web.Request) -> bool:
    """GETs of matched routes, except `OPEN_ROUTES`; unknown routes answer 404 as usual."""
    resource = request.match_info.route.resource
    if request.method != "GET" or resource is None:
        return False
    return resource.canonical not in OPEN_ROUTES


@web.middleware
async def read_auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate reads before the handler runs; only installed for `members` access."""
    if requires_signature(request):
        request[READER] = authenticate_read(request)
    return await handler(request)
