"""An admin's member page and a member's low-balance warning in a real Chromium, with JavaScript (htmx swaps the
member page in place) and without (every form posts and comes back): the admin grants credits and sets a limit,
and the member's warning goes away and their bar shows the new limit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.accounts.models import Role
from hub.ledger.grants import grant
from hub.pricing import service as pricing
from tests.support.cluster import provision
from tests.support.hub import LiveHub, hub_env, live_hub
from tests.support.processes import free_port

ADMIN = "ada@lab.example.org"
MEMBERS = {True: "mia@lab.example.org", False: "nia@lab.example.org"}  # by whether their browser runs JavaScript
CREDIT = 1_000_000


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    """A club that charges for every model; its members start with half a credit."""

    async def club(db: AsyncSession) -> None:
        await pricing.set_price(db, None, "*", input_micro=CREDIT, output_micro=CREDIT)
        await accounts.add_member(db, ADMIN, role=Role.ADMIN, name="Ada")
        for email in MEMBERS.values():
            await grant(db, None, await accounts.add_member(db, email, name=email.split("@")[0].title()), CREDIT // 2)

    with live_hub(hub_env(tmp_path_factory.mktemp("member-page"), port=free_port())) as running:
        provision(running, club)
        yield running


def signed_in(chromium: Browser, hub: LiveHub, email: str, *, javascript: bool) -> Page:
    async def link(db: AsyncSession) -> str:
        return await accounts.create_login_link(db, await accounts.get_member(db, email), minutes=30)

    context = chromium.new_context(viewport={"width": 1280, "height": 800}, java_script_enabled=javascript)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(f"{hub.url}/login/{provision(hub, link)}")
    page.wait_for_url(f"{hub.url}/dashboard")
    return page


@pytest.mark.browser
@pytest.mark.parametrize("javascript", [True, False], ids=["with JavaScript", "without JavaScript"])
def test_an_admin_tops_up_a_member_from_their_page_and_the_members_warning_goes_away(
    hub: LiveHub, chromium: Browser, javascript: bool, tmp_path: Path
) -> None:
    email = MEMBERS[javascript]
    name = email.split("@")[0].title()
    member = signed_in(chromium, hub, email, javascript=javascript)
    warning = member.get_by_role("complementary", name="Low balance")
    expect(warning).to_contain_text("Your balance is low: 0.5 credits available.")
    expect(warning).to_contain_text("Ask an admin for credits.")
    expect(member.locator(".standing")).to_contain_text("Balance 0.5 credits")
    shot = tmp_path / f"low-balance-{'js' if javascript else 'no-js'}.png"
    member.screenshot(path=str(shot), full_page=True)
    print(f"screenshot of the low-balance warning: {shot}")

    admin = signed_in(chromium, hub, ADMIN, javascript=javascript)
    admin.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    admin.get_by_role("link", name=email).click()
    admin.wait_for_url(f"{hub.url}/admin/members/*")
    page_url = admin.url
    expect(admin.get_by_role("heading", level=2).first).to_contain_text(name)
    expect(admin.locator('[data-fact="balance"]')).to_have_text("0.5")
    if javascript:
        admin.evaluate("window.stillTheSamePage = true")

    admin.get_by_label("Amount (credits)").fill("5")
    admin.get_by_label("Reason (optional)").fill("for the reading group")
    admin.get_by_role("button", name="Move credits").click()
    expect(admin.locator('[data-fact="balance"]')).to_have_text("5.5")
    admin.get_by_label("Requests per minute").fill("30")
    admin.get_by_role("button", name="Save limits").click()
    expect(admin.get_by_label("Requests per minute")).to_have_value("30")

    if javascript:
        expect(admin.get_by_role("status")).to_have_text(f"The limits of {name} are saved.")
        assert admin.evaluate("window.stillTheSamePage === true"), "a form reloaded the whole page"
    assert admin.url == page_url
    shot = tmp_path / f"member-page-{'js' if javascript else 'no-js'}.png"
    admin.screenshot(path=str(shot), full_page=True)
    print(f"screenshot of the member page: {shot}")

    for narrow in (admin, member):  # a phone's width: nothing scrolls sideways
        narrow.set_viewport_size({"width": 390, "height": 800})
        assert narrow.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), narrow.url

    member.reload()
    expect(member.get_by_role("complementary", name="Low balance")).to_have_count(0)
    expect(member.locator(".standing")).to_contain_text("Balance 5.5 credits")
    expect(member.locator(".standing")).to_contain_text("30 requests a minute")
    expect(member.locator("#standing [data-limit=rpm]")).to_have_text("30")


@pytest.mark.browser
def test_a_non_admin_who_guesses_the_member_page_address_is_refused(hub: LiveHub, chromium: Browser) -> None:
    member = signed_in(chromium, hub, "mia@lab.example.org", javascript=False)
    response = member.goto(f"{hub.url}/admin/members/1")
    assert response is not None and response.status == 403
    expect(member.get_by_role("heading", level=1)).to_have_text("Not allowed")
