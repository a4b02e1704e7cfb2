"""`GET /v1/contracts/lottery/projects/{project_id}/proof`: a draw's offline proof bundle.

The bundle is the PROTOCOL.md section 8 bundle of the draw transaction (its receipt holds
the seed and the winning indices) plus a `lottery` section with every input of the draw
(docs/lottery.md) and, as `seal_proof`, the bundle of the sealing transaction: its
receipt holds `count` and `participants_root`, and its block header's `prev_hash` is the
block hash the seed uses. Anyone with the genesis file can check both bundles and
recompute the seed and winners with `contracts.lottery_draw`. Served here rather than as
a contract query because contracts see state only, and a bundle needs the store.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from contracts import lottery
from contracts.runtime import IDENTIFIER_PATTERN, ReadView
from node.api.keys import SERVICES
from node.api.params import malformed
from node.api.responses import json_response
from node.errors import ChanceryError
from node.invariants import fail
from node.proof import build_tx_proof


def lottery_section(
    project: dict[str, Any], winners: list[tuple[int, bytes]], seal_proof: dict[str, Any]
) -> dict[str, Any]:
    """The bundle's `lottery` section: the draw's inputs and result."""
    return {
        "contract": lottery.NAME,
        "project_id": project["project_id"],
        "sponsor_org": project["sponsor_org"],
        "notary_org": project["notary_org"],
        "winners_count": project["winners"],
        "count": project["count"],
        "participants_root": project["participants_root"].hex(),
        "sealed_height": project["sealed_height"],
        "sealed_block_hash": project["sealed_block_hash"].hex(),
        "sponsor_commit": project["sponsor_commit"].hex(),
        "notary_commit": project["notary_commit"].hex(),
        "sponsor_secret": project["sponsor_secret"].hex(),
        "notary_secret": project["notary_secret"].hex(),
        "seed": project["seed"].hex(),
        "winners": [{"index": index, "entry": entry.hex()} for index, entry in winners],
        "seal_proof": seal_proof,
    }


async def get_draw_proof(request: web.Request) -> web.Response:
    """The proof bundle of a project's draw.

    Raises:
        ChanceryError: `request.malformed` (project id), `not_found` (no such project, or
            not drawn yet).
    """
    services = request.app[SERVICES]
    project_id = request.match_info["project_id"]
    if not IDENTIFIER_PATTERN.fullmatch(project_id):
        raise malformed("project_id must be an identifier", parameter="project_id")
    view = ReadView(lottery.NAME, services.store)
    project = lottery.find_project(view, project_id)
    if project is None or project["seed"] is None:
        details = {"contract": lottery.NAME, "project_id": project_id}
        raise ChanceryError("not_found", "no drawn project with this id", details)
    bundle = build_tx_proof(services.store, services.genesis, project["steps"]["draw"]["tx_id"])
    seal_proof = build_tx_proof(services.store, services.genesis, project["steps"]["seal"]["tx_id"])
    # Committed state and the transaction index are written in one batch (storage.py).
    if bundle is None or seal_proof is None:
        fail("a drawn project names a transaction the store lacks")
    section = lottery_section(project, lottery.winners_of(view, project_id), seal_proof)
    return json_response({**bundle, "lottery": section})
