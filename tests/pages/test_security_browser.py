"""Under the hub's Content-Security-Policy, in a real Chromium: every signed-in page loads without a violation and
htmx keeps working (forms swap in place, live lists refresh and pause)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.accounts.models import Role
from tests.credits.club import used
from tests.support.cluster import provision
from tests.support.hub import LiveHub, hub_env, live_hub
from tests.support.processes import free_port

ADMIN = "ada@lab.example.org"
# Besides every page the main and admin navigation link to (read from the pages, so new ones are covered).
MORE_PAGES = ["/usage", "/earnings", "/no/such/page"]
# Listens from before any page script runs; Playwright's init scripts are not subject to the page's CSP.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${where}`);
});
"""


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[LiveHub]:
    with live_hub(hub_env(tmp_path / "hub", port=free_port())) as running:
        yield running


@pytest.fixture
def watched(page: Page) -> Iterator[tuple[Page, list[str]]]:
    """The page, and every CSP complaint Chromium printed to its console."""
    complaints: list[str] = []

    def listen(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            complaints.append(message.text)

    page.add_init_script(RECORD_VIOLATIONS)
    page.on("console", listen)
    yield page, complaints


def sign_in_as_admin_with_usage(page: Page, hub: LiveHub) -> None:
    async def link(db: AsyncSession) -> str:
        user = await accounts.add_member(db, ADMIN, role=Role.ADMIN)
        await used(db, user, prompt=1200, completion=300)  # so /usage draws its chart
        return await accounts.create_login_link(db, user, minutes=5)

    token = provision(hub, link)
    page.goto(f"{hub.url}/login/{token}")
    page.wait_for_url(f"{hub.url}/dashboard")


def links(page: Page, hub: LiveHub, path: str, navigation: str) -> list[str]:
    page.goto(f"{hub.url}{path}")
    hrefs = (
        page.get_by_role("navigation", name=navigation)
        .get_by_role("link")
        .evaluate_all("(links) => links.map((link) => link.getAttribute('href'))")
    )
    return [str(href) for href in hrefs]


def violations(page: Page, complaints: list[str]) -> list[str]:
    return [*page.evaluate("window.cspViolations"), *complaints]


@pytest.mark.browser
def test_every_signed_in_page_loads_without_a_csp_violation(hub: LiveHub, watched: tuple[Page, list[str]]) -> None:
    page, complaints = watched
    sign_in_as_admin_with_usage(page, hub)

    pages = links(page, hub, "/dashboard", "Main") + links(page, hub, "/admin/members", "Admin") + MORE_PAGES
    assert {"/keys", "/gpus", "/admin/ledger"} <= set(pages)
    for path in dict.fromkeys(pages):
        page.goto(f"{hub.url}{path}")
        page.wait_for_load_state("load")
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        assert page.evaluate("typeof htmx") == "object", f"htmx did not load on {path}"
        assert violations(page, complaints) == [], path

    page.goto(f"{hub.url}/usage")
    bar = page.locator("svg rect.bar").first
    expect(bar).to_be_visible()
    box = bar.bounding_box()
    assert box is not None and box["height"] > 0, "the usage chart drew no bar"
    assert violations(page, complaints) == []


@pytest.mark.browser
def test_htmx_forms_and_live_lists_still_work_under_the_policy(hub: LiveHub, watched: tuple[Page, list[str]]) -> None:
    page, complaints = watched
    sign_in_as_admin_with_usage(page, hub)

    page.goto(f"{hub.url}/keys")
    page.evaluate("window.stillTheSamePage = true")
    page.get_by_role("textbox", name="Name", exact=True).fill("laptop")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#new-secret")).to_have_text(re.compile(r"^gpc_\S+$"))
    expect(page.locator("tr.key", has_text="laptop")).to_have_count(1)
    name = page.get_by_role("textbox", name="Name", exact=True)
    expect(name).to_have_value("")  # emptied by data-reset-on-success, not an hx-on handler (eval)
    assert page.evaluate("window.stillTheSamePage === true"), "the form reloaded the page instead of swapping"

    page.goto(f"{hub.url}/gpus")
    page.evaluate(
        """() => {
          window.polls = {sent: 0, paused: 0};
          window.addEventListener("htmx:beforeRequest", (e) => {
            if (e.detail.elt.id === "agent-list") e.defaultPrevented ? window.polls.paused++ : window.polls.sent++;
          });
        }"""
    )
    page.get_by_role("textbox", name="Name", exact=True).fill("desk-4090")
    page.get_by_role("button", name="Create agent token").click()
    expect(page.locator("#agent-command")).to_contain_text("gpuclub-agent --hub")
    page.wait_for_function("() => window.polls.sent > 0")  # the list refreshes itself every 2 s
    rename = page.locator("tr.agent details.rename")
    rename.locator("summary").click()
    page.wait_for_function("() => window.polls.paused > 0")  # ...but not while the reader has it open
    expect(rename).to_have_attribute("open", "")
    assert violations(page, complaints) == []
