"""The draw's live page (`GET /ui/lottery/{id}`) in headless Chromium, against a real
one-validator network (node process, LevelDB, PBFT).

The page is opened before the project exists and never reloaded; the draw is then driven
through `chancery lottery ...` and after every step the test waits for the page to show
what the chain's queries answer: status, entry count, roots, step heights, seed and
winners. Midway the node is restarted, so the page has to reconnect its event stream from
the last height it saw. Chromium is Debian's `/usr/bin/chromium` (`make browser`); the test
fails, never skips, without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from node.localnet import LocalNetwork
from tests.integration.test_lottery import cli_ok

CHROMIUM: Final = Path("/usr/bin/chromium")
# The machine has no network: nothing may try to reach one, nor need a sandbox or a GPU.
CHROMIUM_ARGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# How long the page may take to show a committed change (a commit is ~100 ms here).
LIVE_TIMEOUT_MS: Final = 10_000
PARTICIPANTS: Final = 40
CHUNK_ENTRIES: Final = 20
WINNERS: Final = 3
SALT: Final = b"shown-on-the-big-screen"
# The title is the sponsor's free text; markup in it must show as text and never run.
HOSTILE_TITLE: Final = '<img src=x onerror="window.injected = 1">Draw & <b>"win"</b>'


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium under Playwright; fails the test when it is not installed."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the lottery page's test needs Debian's chromium. "
            "Install it with `make browser` (apt-get install chromium); "
            "`playwright install` cannot download browsers on this machine.",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def live_page(browser: Browser, net: LocalNetwork, project_id: str) -> Iterator[Page]:
    """The project's page, open and following the stream; on exit, checks that it was
    never reloaded and that no script error or policy violation happened."""
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    response = page.goto(f"{net.url()}/ui/lottery/{project_id}")
    assert response is not None and response.status == 200
    expect(page.locator("#connection")).to_have_text("live", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#status")).to_have_text("missing", timeout=LIVE_TIMEOUT_MS)
    page.evaluate("window.loadedOnce = true")
    try:
        yield page
        assert page.evaluate("window.loadedOnce") is True, "the page was reloaded"
        assert problems == []
    finally:
        page.close()


def expect_text(page: Page, selector: str, text: str) -> None:
    expect(page.locator(selector)).to_have_text(text, timeout=LIVE_TIMEOUT_MS)


def project_of(net: LocalNetwork, project_id: str) -> dict[str, Any]:
    status, project = net.get_json(f"/v1/contracts/lottery/projects/{project_id}")
    assert status == 200, project
    return project


def expect_step(page: Page, net: LocalNetwork, project_id: str, step: str) -> None:
    """The steps table shows the height and organisation the chain stamped on `step`."""
    stamp = project_of(net, project_id)["steps"][step]
    expect_text(page, f'#steps-body tr[data-step="{step}"] .height', str(stamp["height"]))
    expect_text(page, f'#steps-body tr[data-step="{step}"] .org', stamp["org"])


def create(net: LocalNetwork, project_id: str, title: str, secret_file: Path) -> None:
    cli_ok(
        net,
        "create",
        project_id,
        "--title",
        title,
        "--winners",
        str(WINNERS),
        "--notary-org",
        "notary",
        "--secret-file",
        str(secret_file),
        org="enterprise-a",
    )


def restart_node(page: Page, net: LocalNetwork) -> None:
    """Stop and start the node under the page; its stream must resume after the last
    height it saw."""
    events_requested: list[str] = []
    page.on("request", lambda request: events_requested.append(request.url))
    height_seen = int(page.locator("#height").text_content() or "")
    assert height_seen == net.get_json("/v1/status")[1]["height"]
    net.stop(0)
    expect_text(page, "#connection", "reconnecting…")
    net.start(0)
    expect_text(page, "#connection", "live")
    resumed = f"{net.url()}/v1/events?from_height={height_seen + 1}"
    assert resumed in events_requested, events_requested


def test_the_page_shows_each_step_of_a_draw_live_across_a_node_restart(
    network: LocalNetwork, tmp_path: Path
) -> None:
    project_id = "screen-draw"
    participants = tmp_path / "participants.txt"
    participants.write_text("".join(f"+86 139 {n:08d}\n" for n in range(PARTICIPANTS)))
    salt_file = tmp_path / "salt"
    salt_file.write_bytes(SALT)
    sponsor_secret, notary_secret = tmp_path / "sponsor.secret", tmp_path / "notary.secret"
    with chromium() as browser, live_page(browser, network, project_id) as page:
        create(network, project_id, HOSTILE_TITLE, sponsor_secret)
        expect_text(page, "#status", "created")
        expect_text(page, "#title", HOSTILE_TITLE)
        assert page.locator("main img, header img, header b").count() == 0
        assert page.evaluate("window.injected") is None
        expect_text(page, "#sponsor-org", "enterprise-a")
        expect_step(page, network, project_id, "create")

        cli_ok(network, "approve", project_id, "--secret-file", str(notary_secret), org="notary")
        expect_text(page, "#status", "open")
        expect_text(page, "#count", "0")
        expect_step(page, network, project_id, "approve")

        common = ["--salt-file", str(salt_file), "--chunk-entries", str(CHUNK_ENTRIES)]
        cli_ok(network, "import", project_id, str(participants), *common, org="enterprise-a")
        expect_text(page, "#count", str(PARTICIPANTS))
        expect_text(page, "#current-root", project_of(network, project_id)["current_root"])

        cli_ok(network, "seal", project_id, org="notary")
        expect_text(page, "#status", "sealed")
        sealed = project_of(network, project_id)
        expect_text(page, "#participants-root", sealed["participants_root"])
        expect_text(page, "#sealed-height", str(sealed["sealed_height"]))
        expect_step(page, network, project_id, "seal")

        restart_node(page, network)

        cli_ok(
            network, "reveal", project_id, "--secret-file", str(sponsor_secret), org="enterprise-a"
        )
        expect_step(page, network, project_id, "sponsor_reveal")
        cli_ok(network, "reveal", project_id, "--secret-file", str(notary_secret), org="notary")
        expect_step(page, network, project_id, "notary_reveal")
        expect_text(page, "#status", "sealed")
        expect_text(page, "#winners-empty", "Not drawn yet.")

        cli_ok(network, "draw", project_id, org="notary")
        expect_text(page, "#status", "drawn")
        drawn = project_of(network, project_id)
        expect_text(page, "#seed", drawn["seed"])
        expect_text(page, "#sealed-block-hash", drawn["sealed_block_hash"])
        expect_step(page, network, project_id, "draw")
        expect(page.locator("#winners li")).to_have_count(WINNERS, timeout=LIVE_TIMEOUT_MS)
        shown = page.locator("#winners li").evaluate_all(
            """items => items.map(item => ({
                index: Number(item.querySelector('.winner-index').textContent),
                entry: item.querySelector('.winner-entry').textContent,
            }))"""
        )
        status, answer = network.get_json(f"/v1/contracts/lottery/projects/{project_id}/winners")
        assert status == 200, answer
        assert shown == answer["winners"]

        statement = tmp_path / "certificate.pdf"
        statement.write_bytes(b"%PDF- notarial certificate")
        cli_ok(network, "notarize", project_id, "--statement", str(statement), org="notary")
        expect_text(page, "#status", "notarized")
        digest = project_of(network, project_id)["statement_digest"]
        expect_text(page, "#statement-digest", digest)
        expect_step(page, network, project_id, "notarize")


def test_the_page_shows_a_cancelled_draw_and_its_reason_live(
    network: LocalNetwork, tmp_path: Path
) -> None:
    project_id = "screen-cancel"
    reason = "the sponsor withdrew the campaign"
    with chromium() as browser, live_page(browser, network, project_id) as page:
        create(network, project_id, "Autumn draw", tmp_path / "sponsor.secret")
        expect_text(page, "#status", "created")
        cli_ok(network, "cancel", project_id, "--reason", reason, org="notary")
        expect_text(page, "#status", "cancelled")
        expect_text(page, "#cancel-reason", reason)
        expect_step(page, network, project_id, "cancel")
        expect_text(page, "#winners-empty", "Not drawn yet.")
