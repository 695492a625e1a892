"""The charts of Usage, Earnings and Admin → Usage in a real Chromium at 390 px, with JavaScript and without: each
chart's SVG is drawn inside its card (nothing overflows the page), its numbers are in a table, and the date range
form narrows what is shown."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.accounts.models import Role
from hub.agents import service as agents
from hub.db import utcnow
from hub.usage.models import UsageRecord
from tests.support.cluster import provision
from tests.support.hub import LiveHub, hub_env, live_hub
from tests.support.processes import free_port

ADMIN = "ada@lab.example.org"
PAGES = {"/usage": 1, "/earnings": 1, "/admin/usage": 3}  # page: its charts drawn (Ada spent no credits)


async def _history(db: AsyncSession) -> None:
    """Ada (an admin) shares a GPU; Mia used it on three days this month and once 20 days ago; Ada used it too."""
    ada = await accounts.add_member(db, ADMIN, role=Role.ADMIN, name="Ada")
    mia = await accounts.add_member(db, "mia@lab.example.org", name="Mia")
    agent, _ = await agents.create_agent(db, ada, name="ada-4090-with-a-rather-long-name")
    now = utcnow()
    made = [(mia, 0, 2_000_000), (mia, 1, 1_000_000), (mia, 3, 500_000), (mia, 20, 4_000_000), (ada, 0, 0), (ada, 2, 0)]
    for n, (who, days_ago, cost) in enumerate(made):
        for model in ("qwen2.5-72b-instruct", "llama-3.1-8b-instruct"):
            db.add(
                UsageRecord(
                    request_id=f"chart{n:02d}{model[:4]}".ljust(32, "0"),
                    user_id=who.pk,
                    agent_id=agent.pk,
                    model=model,
                    endpoint="chat/completions",
                    status=200,
                    prompt_tokens=1_000 * (n + 1),
                    completion_tokens=100 * (n + 1),
                    cost=cost,
                    earned=cost * 9 // 10,
                    created_at=now - timedelta(days=days_ago),
                )
            )
    await db.commit()


async def _link(db: AsyncSession) -> str:
    ada = await accounts.find_by_email(db, ADMIN)
    assert ada is not None
    return await accounts.create_login_link(db, ada, minutes=30)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    with live_hub(hub_env(tmp_path_factory.mktemp("hub"), port=free_port())) as running:
        provision(running, _history)
        yield running


def signed_in(chromium: Browser, hub: LiveHub, *, javascript: bool) -> Page:
    context = chromium.new_context(viewport={"width": 390, "height": 844}, java_script_enabled=javascript)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(f"{hub.url}/login/{provision(hub, _link)}")
    page.wait_for_url(f"{hub.url}/dashboard")
    return page


def fits(page: Page) -> None:
    """Every chart is drawn, no wider than its card, and the page does not scroll sideways."""
    sizes = page.eval_on_selector_all(
        "figure.chart svg",
        """drawings => drawings.map(d => {
            const svg = d.getBoundingClientRect();
            const card = d.closest('.card').getBoundingClientRect();
            return [svg.width, svg.height, svg.left - card.left, card.right - svg.right];
        })""",
    )
    assert sizes and all(
        width > 200 and height > 50 and left >= 0 and right >= 0 for width, height, left, right in sizes
    )
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), page.url


@pytest.mark.browser
@pytest.mark.parametrize("javascript", [True, False], ids=["with-javascript", "without-javascript"])
def test_charts_fit_their_cards_at_390px_show_their_numbers_and_follow_the_date_range(
    chromium: Browser, hub: LiveHub, javascript: bool
) -> None:
    page = signed_in(chromium, hub, javascript=javascript)

    for path, charts in PAGES.items():
        page.goto(f"{hub.url}{path}")
        expect(page.locator("figure.chart svg")).to_have_count(charts)
        fits(page)

    page.goto(f"{hub.url}/earnings")
    page.get_by_text("The numbers").first.click()
    table = page.get_by_role("table", name="Credits earned per day by model, the last 30 days (credits)")
    expect(table.get_by_role("row")).to_have_count(5)  # the header, and four days with requests from Mia
    page.get_by_role("combobox", name="Last").select_option("7")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/earnings?days=7**")
    expect(page.get_by_text("Who used your agents in the last 7 days")).to_be_visible()
    page.get_by_text("The numbers").first.click()
    expect(page.get_by_role("table", name="Credits earned per day by model, the last 7 days (credits)")).to_be_visible()
    fits(page)
    page.context.close()
