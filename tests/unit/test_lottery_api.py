"""The lottery draw's proof route and queries through the real API on a real chain."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from contracts import lottery_draw
from node import merkle
from node.genesis import parse_genesis
from node.proof import build_tx_proof, verify_proof_bundle
from tests.unit.test_api import Node, assert_error, running_node

PROJECT = "api-draw"
SPONSOR_SECRET = hashlib.sha256(b"api sponsor").digest()
NOTARY_SECRET = hashlib.sha256(b"api notary").digest()


async def call(node: Node, org: str, method: str, args: dict[str, Any]) -> dict[str, Any]:
    tx = node.testnet.sign(node.testnet.members[org], "lottery", method, args)
    answer = await node.commit(tx)
    assert answer["receipt"]["ok"] is True, answer
    return answer


async def run_draw(node: Node, entries: list[bytes]) -> None:
    await call(
        node,
        "enterprise-a",
        "create",
        {
            "project_id": PROJECT,
            "title": "API draw",
            "rules": {},
            "notary_org": "notary",
            "winners": 2,
            "sponsor_commit": hashlib.sha256(SPONSOR_SECRET).digest(),
        },
    )
    notary_commit = hashlib.sha256(NOTARY_SECRET).digest()
    await call(node, "notary", "approve", {"project_id": PROJECT, "notary_commit": notary_commit})
    await call(
        node, "enterprise-a", "add_participants", {"project_id": PROJECT, "entries": entries}
    )
    await call(node, "enterprise-a", "seal", {"project_id": PROJECT})
    await call(node, "enterprise-a", "reveal", {"project_id": PROJECT, "secret": SPONSOR_SECRET})
    await call(node, "notary", "reveal", {"project_id": PROJECT, "secret": NOTARY_SECRET})


async def test_draw_proof_bundle_recomputes_the_winners_offline(tmp_path: Path) -> None:
    entries = [hashlib.sha256(f"p{n}".encode()).digest() for n in range(40)]
    async with running_node(tmp_path) as node:
        await run_draw(node, entries)
        status, answer = await node.get(f"/v1/contracts/lottery/projects/{PROJECT}/proof")
        assert_error(status, answer, 404, "not_found")
        drawn = await call(node, "notary", "draw", {"project_id": PROJECT})
        status, bundle = await node.get(f"/v1/contracts/lottery/projects/{PROJECT}/proof")
        assert status == 200, bundle
        genesis = parse_genesis(node.testnet.genesis_raw)
        report = verify_proof_bundle(bundle, genesis)
        assert report.ok, report.to_json()
        assert sum(name.startswith("lottery:") for name, _, _ in report.checks) == 3
        section = bundle["lottery"]
        assert verify_proof_bundle(section["seal_proof"], genesis).ok
        assert section["seal_proof"]["block"]["hash"] == section["sealed_block_hash"]
        assert section["participants_root"] == merkle.merkle_root(entries).hex()
        seed = lottery_draw.draw_seed(
            PROJECT,
            bytes.fromhex(section["participants_root"]),
            section["count"],
            bytes.fromhex(section["sponsor_secret"]),
            bytes.fromhex(section["notary_secret"]),
            bytes.fromhex(section["sealed_block_hash"]),
        )
        indices = lottery_draw.draw_winners(seed, 40, 2)
        assert section["seed"] == seed.hex() == drawn["receipt"]["result"]["seed"]
        assert [w["index"] for w in section["winners"]] == indices
        assert [w["entry"] for w in section["winners"]] == [entries[i].hex() for i in indices]
        plain = build_tx_proof(
            node.services.store, node.services.genesis, bytes.fromhex(bundle["tx"]["tx_id"])
        )
        assert {k: v for k, v in bundle.items() if k != "lottery"} == json.loads(json.dumps(plain))

        status, winners = await node.get(f"/v1/contracts/lottery/projects/{PROJECT}/winners")
        assert status == 200 and [w["index"] for w in winners["winners"]] == indices
        status, entry = await node.get(
            f"/v1/contracts/lottery/projects/{PROJECT}/entries/{entries[7].hex()}"
        )
        assert status == 200, entry
        proof = merkle.InclusionProof.from_json(entry["proof"])
        assert merkle.verify_inclusion(entries[7], proof, merkle.merkle_root(entries))

        for path, code, expected in (
            ("/v1/contracts/lottery/projects/none/proof", "not_found", 404),
            ("/v1/contracts/lottery/projects/a%20b/proof", "request.malformed", 400),
        ):
            status, answer = await node.get(path)
            assert_error(status, answer, expected, code)

        for field, value in (
            ("seed", "00" * 32),
            ("count", 41),
            ("sponsor_secret", NOTARY_SECRET.hex()),
            ("winners", list(reversed(section["winners"]))),
        ):
            forged = {**bundle, "lottery": {**section, field: value}}
            assert not verify_proof_bundle(forged, genesis).ok, field
