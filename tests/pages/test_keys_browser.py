"""A key's settings in a real Chromium, with JavaScript (htmx swaps the key list in place) and without (plain forms
and redirects): create a key with a budget, read the ready-to-run snippet, edit its settings, see them on its row."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from tests.proxy.conftest import proxy_hub
from tests.support.cluster import provision
from tests.support.hub import LiveHub


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    with proxy_hub(tmp_path_factory.mktemp("keys") / "hub") as running:
        yield running


def sign_in(page: Page, hub: LiveHub, email: str) -> None:
    async def link(db: AsyncSession) -> str:
        user = await accounts.find_by_email(db, email) or await accounts.add_member(db, email)
        return await accounts.create_login_link(db, user, minutes=5)

    page.goto(f"{hub.url}/login/{provision(hub, link)}")
    page.wait_for_url(f"{hub.url}/dashboard")
    page.goto(f"{hub.url}/keys")


def settings_row(page: Page, name: str) -> Locator:
    return page.locator(f'tr.key-settings[data-key="{name}"]')


def edit(page: Page, name: str, **fields: str) -> None:
    """Open the key's Settings and fill in the fields given (by their labels), then save."""
    row = settings_row(page, name)
    row.locator("summary", has_text="Settings").click()
    form = row.locator("form")
    for label, value in fields.items():
        form.get_by_label(label, exact=False).fill(value)
    form.get_by_role("button", name="Save settings").click()


@pytest.mark.browser
def test_with_javascript_a_member_creates_a_key_with_a_budget_and_edits_its_settings_in_place(
    hub: LiveHub, page: Page
) -> None:
    sign_in(page, hub, "lena@lab.example.org")
    page.evaluate("window.stillTheSamePage = true")  # a full page load would wipe it
    new = page.locator("form[action='/keys']")
    new.get_by_label("Name").fill("laptop")
    new.get_by_label("Budget per day").fill("2.5")
    new.get_by_label("Models it may use").fill("qwen3-coder")
    new.get_by_role("button", name="Create key").click()

    secret = page.locator("#new-secret").inner_text().strip()
    assert secret.startswith("gpc_")
    expect(page.locator("#new-curl")).to_contain_text(f"curl {hub.url}/v1/chat/completions")
    expect(page.locator("#new-curl")).to_contain_text(f'-H "Authorization: Bearer {secret}"')
    expect(page.locator("#new-curl")).to_contain_text('"model": "qwen3-coder"')
    expect(page.locator("#new-python")).to_contain_text(f'OpenAI(base_url="{hub.url}/v1", api_key="{secret}")')
    row = settings_row(page, "laptop")
    expect(row).to_contain_text("Budget: 2.5 a day (2.5 left today) · Models: qwen3-coder · your own limits only")
    expect(new.get_by_label("Budget per day")).to_have_value("")  # the new-key form is ready for the next one

    edit(page, "laptop", **{"Budget per month": "40", "Requests per minute": "30", "Requests at once": "2"})
    expect(page.locator("#flash")).to_have_text("Saved the settings of laptop.")  # where errors show too
    expect(page.locator(".flash")).to_have_count(1)  # one place for messages
    expect(row).to_contain_text(
        "Budget: 2.5 a day (2.5 left today), 40 a month (40 left this month) · Models: qwen3-coder · "
        "30 requests per minute, 2 requests at once"
    )
    expect(page.locator("#new-secret")).to_have_count(0)  # shown once

    edit(page, "laptop", **{"Budget per day": "-1"})
    expect(page.locator("#flash")).to_contain_text("The budget per day must be a number of credits such as 10 or 2.5")
    expect(row).to_contain_text("Budget: 2.5 a day (2.5 left today), 40 a month")
    assert page.evaluate("window.stillTheSamePage === true"), "the page reloaded instead of updating in place"
    table = page.locator("#keys .scroll")  # at 1200 px the key list fits its card, with no scrolling
    width = table.evaluate("(box) => [box.scrollWidth, box.clientWidth]")
    assert width[0] <= width[1], f"the key list is wider than its card: {width}"


@pytest.mark.browser
def test_without_javascript_the_settings_form_saves_and_a_bad_value_changes_nothing(
    hub: LiveHub, browser: Browser, tmp_path: Path
) -> None:
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1200, "height": 800})
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        sign_in(page, hub, "omar@lab.example.org")
        new = page.locator("form[action='/keys']")
        new.get_by_label("Name").fill("ci")
        new.get_by_role("button", name="Create key").click()
        expect(page.locator("#new-secret")).to_have_text(re.compile(r"^gpc_"))
        expect(settings_row(page, "ci")).to_contain_text("No budget of its own · Every model")

        edit(page, "ci", **{"Name": "nightly", "Budget per month": "12.75", "Tokens per day": "50000"})
        page.wait_for_url(f"{hub.url}/keys")
        row = settings_row(page, "nightly")
        expect(row).to_contain_text(
            "Budget: 12.75 a month (12.75 left this month) · Every model · 50,000 tokens per day"
        )
        expect(page.locator("#new-secret")).to_have_count(0)

        edit(page, "nightly", **{"Expires": "2001-01-01", "Budget per month": "99"})
        expect(page.get_by_text("The expiry date must be in the future.")).to_be_visible()
        page.goto(f"{hub.url}/keys")
        expect(settings_row(page, "nightly")).to_contain_text("Budget: 12.75 a month")
        page.screenshot(path=str(tmp_path / "keys.png"), full_page=True)
    finally:
        context.close()
