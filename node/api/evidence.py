"""`GET /v1/contracts/evidence/anchors/{hash}/proof`: an anchor's offline proof bundle.

The bundle is the PROTOCOL.md section 8 bundle of the anchoring transaction plus an
`evidence` section naming the anchor. It is served here rather than as a contract query
because contracts see state only, and a bundle needs the committed block and its
certificate from the store.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from contracts import evidence
from contracts.runtime import IDENTIFIER_PATTERN, ReadView
from node.api.keys import SERVICES
from node.api.params import malformed, parse_hash_hex
from node.api.responses import json_response
from node.errors import ChanceryError
from node.invariants import fail
from node.proof import build_tx_proof


def evidence_section(anchor: evidence.Anchor) -> dict[str, Any]:
    """The bundle's `evidence` section: which anchor the bundled transaction made."""
    section: dict[str, Any] = {
        "contract": evidence.NAME,
        "method": anchor.method,
        "org": anchor.org,
        "signer": anchor.signer.hex(),
        "height": anchor.height,
        "timestamp": anchor.timestamp_ms,
        "kind": anchor.kind,
        "meta": anchor.meta,
        "tx_id": anchor.tx_id.hex(),
    }
    if anchor.method == evidence.METHOD_ANCHOR_BATCH:
        section["root"] = anchor.hash.hex()
        section["count"] = anchor.count
    else:
        section["hash"] = anchor.hash.hex()
        section["subject"] = anchor.subject
    return section


def _org_parameter(query: Any) -> str | None:
    """Raises: ChanceryError `request.malformed` when `org` is present but no identifier."""
    org = query.get("org")
    if org is not None and not IDENTIFIER_PATTERN.fullmatch(org):
        raise malformed("org must be an organisation id", parameter="org")
    return org


async def get_anchor_proof(request: web.Request) -> web.Response:
    """The proof bundle of the earliest anchor of the hash, or of `?org=`'s anchor.

    Raises:
        ChanceryError: `request.malformed` (hash, org), `not_found` (no such anchor).
    """
    services = request.app[SERVICES]
    hash_value = parse_hash_hex(request.match_info["hash"], "hash")
    org = _org_parameter(request.query)
    anchor = evidence.find_anchor(ReadView(evidence.NAME, services.store), hash_value, org)
    if anchor is None:
        details = {"contract": evidence.NAME, "hash": hash_value.hex(), "org": org}
        raise ChanceryError("not_found", "no anchor of this hash", details)
    bundle = build_tx_proof(services.store, services.genesis, anchor.tx_id)
    # Committed state and the transaction index are written in one batch (storage.py).
    if bundle is None:
        fail("an anchor in committed state names a transaction the store lacks")
    return json_response({**bundle, "evidence": evidence_section(anchor)})
