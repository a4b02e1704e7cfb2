"""`GET /ui/lottery/{project_id}`: the draw's live page, served by the real app.

The page's behaviour in a browser is tested in tests/integration/test_lottery_ui.py; here
the route: the bytes and headers it answers with, and its refusals.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.api.ui import LOTTERY_PAGE, inline_block_hashes
from tests.unit.test_api import Node, assert_error, running_node

PAGE = "/ui/lottery/"


@pytest.fixture
async def idle_node(tmp_path: Path) -> AsyncIterator[Node]:
    """No block production: the page route reads nothing from the chain."""
    async with running_node(tmp_path, produce=False) as started:
        yield started


async def test_page_is_served_as_utf8_html_for_any_well_formed_id(idle_node: Node) -> None:
    for project_id in ("spring-draw", "draw:2026.11", "A_b-9", "x" * 64, "not-created-yet"):
        response = await idle_node.client.get(PAGE + project_id)
        assert response.status == 200, project_id
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert await response.read() == LOTTERY_PAGE.body
    # Percent-encoded characters of the identifier alphabet name the same project.
    response = await idle_node.client.get(PAGE + "draw%3A2026.11")
    assert response.status == 200


async def test_page_has_no_external_assets(idle_node: Node) -> None:
    html = (await (await idle_node.client.get(PAGE + "p")).read()).decode()
    assert "<script>" in html and "<style>" in html
    assert not re.search(r"""\b(src|href)\s*=""", html), "no external scripts, styles or links"
    assert not re.search(r"https?://", html)
    assert "innerHTML" not in html and "insertAdjacentHTML" not in html


async def test_page_policy_allows_only_its_own_inline_code(idle_node: Node) -> None:
    response = await idle_node.client.get(PAGE + "p")
    html = (await response.read()).decode()
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == " ".join(inline_block_hashes(html, "script"))
    assert policy["style-src"] == " ".join(inline_block_hashes(html, "style"))
    assert policy["connect-src"] == "'self'"
    assert "unsafe" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "project_id",
    ["a%20b", "x" * 65, "caf%C3%A9", "a%3Cb%3E", "semi;colon", "%2A", "%2F", "%00", "%FF"],
)
async def test_malformed_project_id_is_400_request_malformed(
    idle_node: Node, project_id: str
) -> None:
    response = await idle_node.client.get(PAGE + project_id)
    error = assert_error(response.status, await response.json(), 400, "request.malformed")
    assert error["details"] == {"parameter": "project_id"}


async def test_paths_beside_the_page_are_404_json(idle_node: Node) -> None:
    for path in ("/ui/lottery/", "/ui/lottery/a/b", "/ui/lottery"):
        response = await idle_node.client.get(path)
        assert_error(response.status, await response.json(), 404, "not_found")


async def test_openapi_documents_the_page(idle_node: Node) -> None:
    status, document = await idle_node.get("/v1/openapi.json")
    assert status == 200
    operation = document["paths"]["/ui/lottery/{project_id}"]["get"]
    assert set(operation["responses"]["200"]["content"]) == {"text/html"}
    assert set(operation["responses"]) == {"200", "400"}


async def test_page_needs_a_signed_read_when_reads_are_members_only(tmp_path: Path) -> None:
    # A browser cannot sign reads, so the page is for nodes with `read_access = "open"`.
    async with running_node(tmp_path, produce=False, read_access="members") as node:
        response = await node.client.get(PAGE + "p")
        assert_error(response.status, await response.json(), 401, "request.unauthenticated")
