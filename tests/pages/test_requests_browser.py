"""My requests in a real Chromium, with JavaScript (htmx swaps the log in place) and without (the form reloads
the page): filter by status through the form, and download the filtered rows as CSV."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.agents import service as agents
from hub.db import utcnow
from hub.keys import service as keys
from hub.usage.models import UsageRecord
from tests.support.cluster import provision
from tests.support.hub import LiveHub, hub_env, live_hub
from tests.support.processes import free_port

MEMBER = "mia@lab.example.org"


async def _history(db: AsyncSession) -> None:
    """Mia's requests: two answered on Owen's GPU, one refused for credits, one over her limit."""
    mia = await accounts.add_member(db, MEMBER, name="Mia")
    owen = await accounts.add_member(db, "owen@lab.example.org", name="Owen")
    agent, _ = await agents.create_agent(db, owen, name="owen-4090")
    key, _ = await keys.create_key(db, mia, name="laptop")
    now = utcnow()
    made = [
        ("qwen-7b", 200, "", agent.pk, 12, 30, 2_500_000, now - timedelta(minutes=4)),
        ("llama-3-8b", 200, "", agent.pk, 5, 9, 400_000, now - timedelta(minutes=3)),
        ("qwen-7b", 402, "insufficient_quota", None, 0, 0, 0, now - timedelta(minutes=2)),
        ("qwen-7b", 429, "rate_limit_exceeded", None, 0, 0, 0, now - timedelta(minutes=1)),
    ]
    for n, (model, status, code, agent_id, prompt, completion, cost, at) in enumerate(made):
        db.add(
            UsageRecord(
                request_id=f"req{n:029d}",
                user_id=mia.pk,
                key_id=key.id,
                agent_id=agent_id,
                model=model,
                endpoint="chat/completions",
                status=status,
                code=code,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost=cost,
                earned=cost * 9 // 10,
                ttft_ms=120 if agent_id else None,
                created_at=at,
            )
        )
    await db.commit()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    with live_hub(hub_env(tmp_path_factory.mktemp("hub"), port=free_port())) as running:
        provision(running, _history)
        yield running


def signed_in(chromium: Browser, hub: LiveHub, *, javascript: bool) -> Page:
    context = chromium.new_context(viewport={"width": 1280, "height": 800}, java_script_enabled=javascript)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(f"{hub.url}/login/{provision(hub, _link)}")
    page.wait_for_url(f"{hub.url}/dashboard")
    return page


async def _link(db: AsyncSession) -> str:
    mia = await accounts.find_by_email(db, MEMBER)
    assert mia is not None
    return await accounts.create_login_link(db, mia, minutes=30)


def downloaded(page: Page, tmp_path: Path) -> list[dict[str, str]]:
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.browser
def test_with_javascript_the_status_filter_swaps_the_log_in_place_and_the_csv_has_those_rows(
    hub: LiveHub, chromium: Browser, tmp_path: Path
) -> None:
    page = signed_in(chromium, hub, javascript=True)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Requests").click()
    page.wait_for_url(f"{hub.url}/requests")
    rows = page.locator("tr.request")
    expect(rows).to_have_count(4)
    expect(rows.nth(0)).to_contain_text("429")
    expect(rows.nth(3)).to_contain_text("Owen")
    expect(rows.nth(3)).to_contain_text("2.5")
    page.evaluate("window.stillTheSamePage = true")

    page.get_by_label("Status").select_option(label="refused by the hub")
    page.get_by_role("button", name="Show").click()

    expect(rows).to_have_count(2)
    expect(page).to_have_url(f"{hub.url}/requests?since=&until=&model=&key=&status=refused")
    assert page.evaluate("window.stillTheSamePage") is True  # htmx swapped the log; no reload
    shot = tmp_path / "requests.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot of My requests: {shot}")
    lines = downloaded(page, tmp_path)
    assert [(r["status"], r["error_code"], r["cost_credits"], r["key"][:6]) for r in lines] == [
        ("429", "rate_limit_exceeded", "0", "laptop"),
        ("402", "insufficient_quota", "0", "laptop"),
    ]
    page.context.close()


@pytest.mark.browser
def test_without_javascript_the_form_reloads_the_page_filtered_and_the_csv_link_still_works(
    hub: LiveHub, chromium: Browser, tmp_path: Path
) -> None:
    page = signed_in(chromium, hub, javascript=False)
    page.goto(f"{hub.url}/requests")
    page.get_by_label("Status").select_option(label="answered")
    page.get_by_label("Model").fill("qwen-7b")
    page.get_by_role("button", name="Show").click()

    page.wait_for_url("**/requests?*status=ok*")
    rows = page.locator("tr.request")
    expect(rows).to_have_count(1)
    expect(rows.nth(0)).to_contain_text("qwen-7b")
    expect(rows.nth(0)).to_contain_text("12 / 30")
    expect(rows.nth(0)).to_contain_text("120 ms")
    lines = downloaded(page, tmp_path)
    assert [(r["model"], r["status"], r["cost_credits"], r["gpu_owner"]) for r in lines] == [
        ("qwen-7b", "200", "2.5", "Owen")
    ]
    page.context.close()
