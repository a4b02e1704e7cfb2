"""`GET /ui/lottery/{project_id}`: the live page of a lottery draw, for the notary's screen.

The page (`static/lottery.html`) is one self-contained HTML file with inline CSS and
JavaScript and no external assets. It is the same bytes for every project: its script
reads the project id from the address, follows `GET /v1/events` and re-reads the project
through the contract query routes, so nothing from the request or the chain is ever
written into the HTML on the server. A Content-Security-Policy allows exactly the page's
own inline script and style (by hash) and connections to this node, so even text that
slipped into the DOM as markup could not run or load anything.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Final

from aiohttp import web

from contracts.runtime import IDENTIFIER_PATTERN
from node.api.params import malformed
from node.invariants import require

LOTTERY_PAGE_RESOURCE: Final = "lottery.html"
HTML_CONTENT_TYPE: Final = "text/html"
INLINE_BLOCK_PATTERNS: Final = {
    tag: re.compile(rf"<{tag}>(.*?)</{tag}>", re.DOTALL) for tag in ("script", "style")
}


@dataclass(frozen=True)
class StaticPage:
    """A page's bytes and the headers it is served with."""

    body: bytes
    headers: dict[str, str]


def inline_block_hashes(html: str, tag: str) -> list[str]:
    """CSP source expressions (`'sha256-...'`) for each inline `<tag>` block of `html`."""
    hashes = []
    for block in INLINE_BLOCK_PATTERNS[tag].findall(html):
        digest = hashlib.sha256(block.encode()).digest()
        hashes.append(f"'sha256-{base64.b64encode(digest).decode()}'")
    return hashes


def content_security_policy(html: str) -> str:
    """Nothing but the page's own inline script and style, and requests to this node."""
    scripts = inline_block_hashes(html, "script")
    styles = inline_block_hashes(html, "style")
    require(len(scripts) == 1 and len(styles) == 1, "a UI page has one script and one style")
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {' '.join(scripts)}",
            f"style-src {' '.join(styles)}",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def load_page(name: str) -> StaticPage:
    """A page shipped in `node/api/static/` (package data), with its security headers."""
    html = (resources.files("node.api") / "static" / name).read_text(encoding="utf-8")
    headers = {
        "Content-Security-Policy": content_security_policy(html),
        # Chain state changes under the page; the page itself only with the node version.
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    return StaticPage(html.encode(), headers)


LOTTERY_PAGE: Final = load_page(LOTTERY_PAGE_RESOURCE)


async def get_lottery_page(request: web.Request) -> web.Response:
    """The live page of one project; a project not created yet shows once it is.

    Raises:
        ChanceryError: `request.malformed` unless the project id is an identifier.
    """
    project_id = request.match_info["project_id"]
    if not IDENTIFIER_PATTERN.fullmatch(project_id):
        raise malformed("project_id must be an identifier", parameter="project_id")
    return web.Response(
        body=LOTTERY_PAGE.body,
        content_type=HTML_CONTENT_TYPE,
        charset="utf-8",
        headers=LOTTERY_PAGE.headers,
    )
