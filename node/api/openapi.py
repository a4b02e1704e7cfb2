"""`GET /v1/openapi.json`: an OpenAPI 3.1 description of every route, built from the config.

Every status a route can answer is listed with its schema, so a schema-driven fuzzer can
hold the node to it. Limits in the schemas (batch size, timeouts, export size) are the
node's configured ones; with `read_access = "members"` the signed reads list 401 and 403.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from aiohttp import web

from contracts import evidence, invoice, lottery
from node.api.body import JSON, MSGPACK
from node.api.keys import OPENAPI_DOCUMENT
from node.api.params import INTEGER_MAX
from node.api.read_auth import OPEN_ROUTES, SIGNATURE_HEADER, SIGNER_HEADER, TIMESTAMP_HEADER
from node.config import ApiSection
from node.errors import HTTP_STATUS_BY_CODE

OPENAPI_VERSION: Final = "3.1.0"
API_VERSION: Final = "1"

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Schema], optional: tuple[str, ...] = ()) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
    }


HEX: Final[Schema] = {"type": "string", "pattern": "^([0-9a-f]{2})*$"}
HASH: Final[Schema] = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
SIGNATURE: Final[Schema] = {"type": "string", "pattern": "^[0-9a-f]{128}$"}
HEIGHT: Final[Schema] = {"type": "integer", "minimum": 0, "maximum": INTEGER_MAX}
NULLABLE_HEIGHT: Final[Schema] = {"type": ["integer", "null"], "minimum": 0}


def _component_schemas() -> dict[str, Schema]:
    error_codes = sorted([*HTTP_STATUS_BY_CODE, "internal"])
    audit_path = _object(
        {"index": HEIGHT, "size": HEIGHT, "path": {"type": "array", "items": HASH}}
    )
    signature_pair = {
        "type": "array",
        "prefixItems": [{"type": "integer", "minimum": 0}, HEX],
        "minItems": 2,
        "maxItems": 2,
    }
    header_fields = {
        "chain_id": {"type": "string"},
        "height": HEIGHT,
        "prev_hash": HASH,
        "proposer": {"type": "integer", "minimum": 0},
        "receipts_root": HASH,
        "state_root": HASH,
        "timestamp": {"type": "integer"},
        "tx_root": HASH,
        "validators_hash": HASH,
        "version": {"type": "integer"},
        "view": {"type": "integer", "minimum": 0},
    }
    contract_event = _object({"name": {"type": "string"}, "data": {"type": "object"}})
    return {
        "Error": _object({"error": _error_body_schema(error_codes)}),
        "EnvelopeJson": {
            **_object({"body": HEX, "signer": HASH, "signature": SIGNATURE}),
            "additionalProperties": False,
        },
        "Receipt": _object(
            {
                "tx_id": HASH,
                "ok": {"type": "boolean"},
                "error": {"type": ["string", "null"]},
                "result": {},
                "events": {"type": "array", "items": contract_event},
            }
        ),
        "TxPending": _object({"tx_id": HASH, "status": {"const": "pending"}}),
        "TxCommitted": _object(
            {
                "tx_id": HASH,
                "status": {"const": "committed"},
                "height": HEIGHT,
                "index": HEIGHT,
                "receipt": ref("Receipt"),
            }
        ),
        "TxRecord": _object(
            {
                "tx_id": HASH,
                "status": {"enum": ["pending", "committed"]},
                "height": NULLABLE_HEIGHT,
                "index": NULLABLE_HEIGHT,
                "receipt": {"anyOf": [ref("Receipt"), {"type": "null"}]},
                "envelope": HEX,
            }
        ),
        "BatchResult": {
            "anyOf": [
                ref("TxPending"),
                _object(
                    {
                        "tx_id": {"anyOf": [HASH, {"type": "null"}]},
                        "error": _error_body_schema(error_codes),
                    }
                ),
            ]
        },
        "Header": _object(header_fields),
        "Commit": _object(
            {
                "height": HEIGHT,
                "block_hash": HASH,
                "signatures": {"type": "array", "items": signature_pair},
            }
        ),
        "Block": _object(
            {
                "hash": HASH,
                "header": ref("Header"),
                "tx_ids": {"type": "array", "items": HASH},
                "commit": ref("Commit"),
                "envelopes": {"type": "array", "items": HEX},
                "receipts": {"type": "array", "items": ref("Receipt")},
            },
            optional=("envelopes", "receipts"),
        ),
        "ProofBundle": _object(
            {
                "format": {"const": "chancery-proof/1"},
                "chain_id": {"type": "string"},
                "genesis_hash": HASH,
                "tx": _object({"envelope": HEX, "tx_id": HASH}),
                "receipt": HEX,
                "block": _object({"header": ref("Header"), "hash": HASH}),
                "tx_proof": audit_path,
                "receipt_proof": audit_path,
                "commit": ref("Commit"),
            }
        ),
        "Status": _status_schema(),
        **_evidence_schemas(),
        **_invoice_schemas(),
        **_lottery_schemas(),
    }


def _lottery_schemas() -> dict[str, Schema]:
    """The lottery draw's proof bundle (CONTRACTS.md, docs/lottery.md)."""
    identifier: Schema = {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$"}
    count: Schema = {"type": "integer", "minimum": 1, "maximum": lottery.ENTRIES_PER_PROJECT_MAX}
    winner = _object({"index": HEIGHT, "entry": HASH})
    section = _object(
        {
            "contract": {"const": lottery.NAME},
            "project_id": identifier,
            "sponsor_org": identifier,
            "notary_org": identifier,
            "winners_count": {"type": "integer", "minimum": 1, "maximum": lottery.WINNERS_MAX},
            "count": count,
            "participants_root": HASH,
            "sealed_height": HEIGHT,
            "sealed_block_hash": HASH,
            "sponsor_commit": HASH,
            "notary_commit": HASH,
            "sponsor_secret": HASH,
            "notary_secret": HASH,
            "seed": HASH,
            "winners": {"type": "array", "items": winner, "maxItems": lottery.WINNERS_MAX},
            "seal_proof": ref("ProofBundle"),
        }
    )
    return {
        "LotteryProofBundle": {
            "allOf": [ref("ProofBundle"), _object({"lottery": section})],
        },
    }


def _evidence_schemas() -> dict[str, Schema]:
    """The evidence contract's query answers and its proof bundle (CONTRACTS.md)."""
    identifier: Schema = {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$"}
    nullable_identifier: Schema = {"anyOf": [identifier, {"type": "null"}]}
    meta: Schema = {"type": ["object", "null"]}
    count: Schema = {"type": "integer", "minimum": 1, "maximum": evidence.BATCH_COUNT_MAX}
    common = {
        "org": identifier,
        "signer": HASH,
        "height": HEIGHT,
        "timestamp": {"type": "integer"},
        "tx_id": HASH,
        "kind": identifier,
        "meta": meta,
    }
    methods = [evidence.METHOD_ANCHOR, evidence.METHOD_ANCHOR_BATCH]
    anchor = _object(
        {
            "hash": HASH,
            **common,
            "subject": nullable_identifier,
            "method": {"enum": methods},
            "count": count,
        },
        optional=("count",),
    )
    single = _object(
        {
            "contract": {"const": evidence.NAME},
            "method": {"const": evidence.METHOD_ANCHOR},
            **common,
            "hash": HASH,
            "subject": nullable_identifier,
        }
    )
    batch = _object(
        {
            "contract": {"const": evidence.NAME},
            "method": {"const": evidence.METHOD_ANCHOR_BATCH},
            **common,
            "root": HASH,
            "count": count,
        }
    )
    page = {"type": "array", "items": anchor, "maxItems": evidence.SUBJECT_PAGE_ANCHORS_MAX}
    return {
        "EvidenceAnchors": _object({"hash": HASH, "anchors": {"type": "array", "items": anchor}}),
        "EvidenceTimeline": _object(
            {
                "subject": identifier,
                "total": HEIGHT,
                "anchors": page,
                "next": NULLABLE_HEIGHT,
            }
        ),
        "EvidenceProofBundle": {
            "allOf": [
                ref("ProofBundle"),
                _object({"evidence": {"oneOf": [single, batch]}}),
            ]
        },
    }


def _invoice_schemas() -> dict[str, Schema]:
    """The invoice contract's query answers (CONTRACTS.md, docs/invoices.md)."""
    identifier: Schema = {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$"}
    invoice_id: Schema = {
        "type": "string",
        "pattern": "^[A-Za-z0-9._:-]{1,64}/[A-Za-z0-9._:-]{1,64}$",
    }
    stamp_fields = {
        "org": identifier,
        "signer": HASH,
        "height": HEIGHT,
        "tx_id": HASH,
        "timestamp": {"type": "integer"},
    }
    stamp = _object(stamp_fields)
    claim = _object({**stamp_fields, "claim_ref": identifier})
    voided = _object(
        {
            **stamp_fields,
            "reason": {"type": "string"},
            "replacement_id": {"anyOf": [invoice_id, {"type": "null"}]},
        }
    )
    methods = ["issue", "transfer", "lock", "unlock", "reimburse", "void"]
    event = {
        **_object({**stamp_fields, "method": {"enum": methods}}),
        "description": "plus holder (issue), from_org and to_org (transfer), claim_ref "
        "(lock, unlock, reimburse), reason and replacement_id (void)",
    }
    statuses = ["issued", "locked", "reimbursed", "void"]
    issuer_counts = ("issued", "issued_total", "reimbursed", "voided")
    nullable_integer: Schema = {"type": ["integer", "null"], "minimum": 0}
    return {
        "InvoiceRecord": _object(
            {
                "id": invoice_id,
                "invoice_no": identifier,
                "issuer": identifier,
                "buyer": identifier,
                "holder": identifier,
                "holders": {"type": "array", "items": identifier},
                "status": {"enum": statuses},
                "digest": HASH,
                "sealed": {
                    "anyOf": [
                        _object({"sha256": HASH, "bytes": HEIGHT}),
                        {"type": "null"},
                    ],
                    "description": "the sealed document is args.sealed of the issued.tx_id "
                    "transaction; this is its SHA-256 and size",
                },
                "issued": stamp,
                "lock": {"anyOf": [claim, {"type": "null"}]},
                "reimbursement": {"anyOf": [claim, {"type": "null"}]},
                "void": {"anyOf": [voided, {"type": "null"}]},
                "history": {
                    "type": "array",
                    "items": event,
                    "maxItems": invoice.EVENTS_PER_INVOICE_MAX,
                },
            }
        ),
        "InvoiceIssuer": _object(
            {
                "org": identifier,
                "active": {"type": "boolean"},
                "authorization": HEIGHT,
                "authorized": stamp,
                "revoked": {"anyOf": [stamp, {"type": "null"}]},
                "max_invoices": nullable_integer,
                "valid_until_ms": nullable_integer,
                **{count: HEIGHT for count in issuer_counts},
            },
            optional=issuer_counts,
        ),
        "InvoiceIssuedPage": _object(
            {
                "org": identifier,
                "total": HEIGHT,
                "invoices": {
                    "type": "array",
                    "items": invoice_id,
                    "maxItems": invoice.ISSUER_PAGE_INVOICES_MAX,
                },
                "next": NULLABLE_HEIGHT,
            }
        ),
    }


def _error_body_schema(error_codes: list[str]) -> Schema:
    return _object(
        {
            "code": {"type": "string", "enum": error_codes},
            "message": {"type": "string"},
            "details": {"type": "object"},
        }
    )


def _status_schema() -> Schema:
    validator = _object(
        {
            "index": HEIGHT,
            "org": {"type": "string"},
            "public_key": HASH,
            "connected": {"type": "boolean"},
        }
    )
    return _object(
        {
            "chain_id": {"type": "string"},
            "genesis_hash": HASH,
            "node": _object({"index": HEIGHT, "org": {"type": "string"}, "public_key": HASH}),
            "height": HEIGHT,
            "last_block_hash": HASH,
            "view": HEIGHT,
            "primary": HEIGHT,
            "validators": {"type": "array", "items": validator},
            "mempool": _object({"size": HEIGHT, "bytes": HEIGHT}),
            "syncing": {"type": "boolean"},
        }
    )


ERROR_DESCRIPTIONS: Final[dict[int, str]] = {
    400: "Cannot decode, wrong fields or types, wrong chain, or a bad parameter",
    401: "A signature does not verify (or a signed read's headers are missing or stale)",
    403: "The signer is unknown, revoked, or not allowed",
    404: "No such transaction, block, record or route",
    409: "This tx_id is already pending or committed (details carry its status)",
    413: "Request body or batch over the limit",
    415: "Content-Type is neither application/msgpack nor application/json",
    429: "Mempool full or too many waiting requests; see Retry-After",
    503: "The node cannot serve now",
    504: "wait=commit timed out; the transaction stays pending",
}


def _json_content(schema: Schema) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": ERROR_DESCRIPTIONS[status],
        "content": _json_content(ref("Error")),
    }
    if status == 429:
        response["headers"] = {
            "Retry-After": {"description": "seconds", "schema": {"type": "integer"}}
        }
    return response


def _ok(description: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": content}


def _query(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


def _boolean_query(name: str, description: str) -> dict[str, Any]:
    return _query(name, {"type": "boolean", "default": False}, description)


def _envelope_body(batch_max: int | None) -> dict[str, Any]:
    msgpack_schema: Schema = {"type": "string", "contentMediaType": MSGPACK}
    json_schema: Schema = ref("EnvelopeJson")
    if batch_max is not None:
        json_schema = {"type": "array", "items": ref("EnvelopeJson"), "maxItems": batch_max}
    return {
        "required": True,
        "content": {MSGPACK: {"schema": msgpack_schema}, JSON: {"schema": json_schema}},
    }


Operations = dict[tuple[str, str], dict[str, Any]]


def _transaction_operations(api: ApiSection) -> Operations:
    tx_id = _path("tx_id", {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}, "64 hex chars")
    return {
        ("/v1/transactions", "post"): {
            "summary": "Submit one envelope",
            "parameters": [
                _query(
                    "wait",
                    {"enum": ["none", "commit"], "default": "none"},
                    "answer once admitted (none) or once committed (commit)",
                ),
                _query(
                    "timeout_ms",
                    {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": api.commit_timeout_ms_max,
                        "default": api.commit_timeout_ms_default,
                    },
                    "how long wait=commit waits",
                ),
            ],
            "requestBody": _envelope_body(None),
            "responses": {
                "200": _ok("Committed (wait=commit)", _json_content(ref("TxCommitted"))),
                "202": _ok("Admitted, pending", _json_content(ref("TxPending"))),
            },
            "errors": [400, 401, 403, 409, 413, 415, 429, 503, 504],
        },
        ("/v1/transactions/batch", "post"): {
            "summary": "Submit many envelopes; one result per envelope, in order",
            "requestBody": {
                **_envelope_body(api.batch_envelopes_max),
                "description": "msgpack: an array of envelope bin strings",
            },
            "responses": {
                "200": _ok(
                    "Results in order",
                    _json_content({"type": "array", "items": ref("BatchResult")}),
                ),
            },
            "errors": [400, 413, 415, 429],
        },
        ("/v1/transactions/{tx_id}", "get"): {
            "summary": "A pending or committed transaction, or its proof bundle",
            "parameters": [tx_id, _boolean_query("proof", "answer the proof bundle instead")],
            "responses": {
                "200": _ok(
                    "The transaction or its proof bundle",
                    _json_content({"anyOf": [ref("TxRecord"), ref("ProofBundle")]}),
                ),
            },
            "errors": [400, 404],
        },
    }


def _block_operations(api: ApiSection) -> Operations:
    full = _boolean_query("full", "add envelopes and receipts")
    return {
        ("/v1/blocks/latest", "get"): {
            "summary": "The latest committed block",
            "parameters": [full],
            "responses": {"200": _ok("The block", _json_content(ref("Block")))},
            "errors": [400],
        },
        ("/v1/blocks/{height}", "get"): {
            "summary": "The committed block at a height",
            "parameters": [_path("height", HEIGHT, "block height"), full],
            "responses": {"200": _ok("The block", _json_content(ref("Block")))},
            "errors": [400, 404],
        },
        ("/v1/blocks", "get"): {
            "summary": "Export whole blocks as a msgpack stream (for auditors)",
            "parameters": [
                _query("from", {**HEIGHT, "default": 0}, "first height"),
                _query(
                    "limit",
                    {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": api.export_blocks_max,
                        "default": 100,
                    },
                    "at most this many blocks",
                ),
            ],
            "responses": {
                "200": _ok(
                    "Concatenated msgpack maps {commit, header, receipts, txs}",
                    {MSGPACK: {"schema": {"type": "string", "contentMediaType": MSGPACK}}},
                ),
            },
            "errors": [400],
        },
    }


def _chain_operations() -> Operations:
    return {
        ("/v1/genesis", "get"): {
            "summary": "The genesis file, byte for byte",
            "responses": {"200": _ok("genesis.json", _json_content({"type": "object"}))},
            "errors": [],
        },
        ("/v1/status", "get"): {
            "summary": "Chain and node status",
            "responses": {"200": _ok("Status", _json_content(ref("Status")))},
            "errors": [],
        },
        ("/v1/health", "get"): {
            "summary": "Liveness",
            "responses": {
                "200": _ok("Serving", _json_content(_object({"ok": {"const": True}}))),
            },
            "errors": [],
        },
        ("/v1/ready", "get"): {
            "summary": "Readiness: connected to a quorum and not syncing",
            "responses": {
                "200": _ok("Ready", _json_content(_object({"ready": {"const": True}}))),
            },
            "errors": [503],
        },
        ("/v1/events", "get"): {
            "summary": "Server-Sent Events: `block` and `tx` events of committed blocks",
            "parameters": [
                _query("from_height", HEIGHT, "replay from this height first"),
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": HEIGHT,
                    "description": "resume after this height (takes precedence)",
                },
            ],
            "responses": {
                "200": _ok(
                    "An endless event stream", {"text/event-stream": {"schema": {"type": "string"}}}
                ),
            },
            "errors": [400, 429],
        },
        ("/v1/contracts/{contract}/{query}", "get"): {
            "summary": "Read-only contract query on committed state (CONTRACTS.md)",
            "description": (
                "evidence answers `anchors/{hash}` with EvidenceAnchors, and "
                "`subjects/{subject}` and `subjects/{subject}/from/{n}` with EvidenceTimeline; "
                "invoice answers `invoices/{issuer}/{invoice_no}` with InvoiceRecord, "
                "`issuers/{org}` with InvoiceIssuer (counts only for the org itself, tax "
                "offices and auditors when reads are signed), and `issuers/{org}/invoices` "
                "and `issuers/{org}/invoices/from/{n}` with InvoiceIssuedPage; with signed "
                "reads an invoice the reader may not see is 404, like one that does not exist; "
                "lottery answers `projects/{id}`, `projects/{id}/winners` and "
                "`projects/{id}/entries/{entry}` (index, winner, audit path; docs/lottery.md)"
            ),
            "parameters": [
                _path("contract", {"type": "string"}, "contract name"),
                _path("query", {"type": "string"}, "query path; may contain '/'"),
            ],
            "responses": {"200": _ok("The query's answer", _json_content({}))},
            "errors": [400, 404],
        },
        ("/metrics", "get"): {
            "summary": "Prometheus metrics",
            "responses": {
                "200": _ok(
                    "Prometheus text format", {"text/plain": {"schema": {"type": "string"}}}
                ),
            },
            "errors": [],
        },
        ("/v1/openapi.json", "get"): {
            "summary": "This document",
            "responses": {"200": _ok("OpenAPI 3.1", _json_content({"type": "object"}))},
            "errors": [],
        },
    }


def _evidence_operations() -> Operations:
    hash_parameter = _path(
        "hash", {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}, "the anchored hash or root"
    )
    org = _query(
        "org",
        {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$"},
        "this organisation's anchor (default: the earliest anchor)",
    )
    return {
        ("/v1/contracts/evidence/anchors/{hash}/proof", "get"): {
            "summary": "Proof bundle of the transaction that anchored a hash, with its anchor",
            "parameters": [hash_parameter, org],
            "responses": {
                "200": _ok("The proof bundle", _json_content(ref("EvidenceProofBundle"))),
            },
            "errors": [400, 404],
        },
    }


def _lottery_operations() -> Operations:
    project = _path(
        "project_id", {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$"}, "the project"
    )
    return {
        ("/v1/contracts/lottery/projects/{project_id}/proof", "get"): {
            "summary": "Proof bundle of a project's draw, with every input of the draw",
            "parameters": [project],
            "responses": {
                "200": _ok("The proof bundle", _json_content(ref("LotteryProofBundle"))),
            },
            "errors": [400, 404],
        },
        ("/ui/lottery/{project_id}", "get"): {
            "summary": 'Live page of a draw for a big screen (docs/lottery.md, "Live view")',
            "description": (
                "One self-contained HTML page that follows /v1/events and the project's "
                "queries; served for any well-formed id, it shows a project once created"
            ),
            "parameters": [project],
            "responses": {
                "200": _ok("The page", {"text/html": {"schema": {"type": "string"}}}),
            },
            "errors": [400],
        },
    }


def _operations(api: ApiSection) -> Operations:
    """(path, method) -> operation with its success responses and `errors` statuses."""
    return {
        **_transaction_operations(api),
        **_block_operations(api),
        **_chain_operations(),
        **_evidence_operations(),
        **_lottery_operations(),
    }


READ_SECURITY_SCHEMES: Final = {
    "signer": {"type": "apiKey", "in": "header", "name": SIGNER_HEADER},
    "timestamp": {"type": "apiKey", "in": "header", "name": TIMESTAMP_HEADER},
    "signature": {"type": "apiKey", "in": "header", "name": SIGNATURE_HEADER},
}


def build_openapi(api: ApiSection) -> dict[str, Any]:
    """The OpenAPI document for a node with this `[api]` configuration."""
    signed_reads = api.read_access == "members"
    paths: dict[str, dict[str, Any]] = {}
    for (path, method), spec in _operations(api).items():
        operation = {key: value for key, value in spec.items() if key != "errors"}
        errors = list(spec["errors"])
        if signed_reads and method == "get" and path not in OPEN_ROUTES:
            errors = sorted({*errors, 401, 403})
            operation["security"] = [{name: [] for name in READ_SECURITY_SCHEMES}]
        elif signed_reads:
            operation["security"] = []
        operation["operationId"] = method + re.sub(r"[^A-Za-z0-9]+", "_", path).rstrip("_")
        for status in errors:
            operation["responses"][str(status)] = _error_response(status)
        paths.setdefault(path, {})[method] = operation
    components: dict[str, Any] = {"schemas": _component_schemas()}
    if signed_reads:
        components["securitySchemes"] = READ_SECURITY_SCHEMES
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Chancery node API", "version": API_VERSION},
        "paths": paths,
        "components": components,
    }


def render_openapi(api: ApiSection) -> bytes:
    return json.dumps(build_openapi(api), indent=1).encode()


async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_DOCUMENT], content_type=JSON)
