"""The Models page in a real Chromium, with JavaScript (the try-it answer streams into the box) and without (the
form posts and the page comes back with the whole answer): prices, status, and a prompt charged like any request.
Hub, agent and model server are real processes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from tests.proxy.conftest import database_of, proxy_hub
from tests.support.cluster import agent_process, agent_token, member, provision, recorded, signed_in, submit
from tests.support.fake_upstream import fake_upstream
from tests.support.hub import LiveHub

MODEL = "llama-3-8b"
PRICE = ("--input", "2", "--output", "4")  # credits per million prompt / completion tokens


@dataclass
class Club:
    hub: LiveHub
    database: Path


@pytest.fixture(scope="module")
def club(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Club]:
    """Owen shares a GPU serving MODEL; another model has a price but no GPU; Mia and Nia use the club."""
    with proxy_hub(tmp_path_factory.mktemp("models")) as hub, fake_upstream([MODEL]) as upstream:
        for email in ("owen@lab.example.org", "mia@lab.example.org", "nia@lab.example.org"):
            member(hub, email)
        assert hub.cli("price", "set", MODEL, *PRICE).returncode == 0
        assert hub.cli("price", "set", "qwen-offline", "--input", "1", "--output", "1").returncode == 0
        assert hub.cli("credits", "grant", "mia@lab.example.org", "100").returncode == 0
        token = agent_token(hub, "owen@lab.example.org", "owen-4090")
        with agent_process(hub, token, f"{upstream.url}/v1", name="owen-4090"):
            yield Club(hub, database_of(hub))


def open_models(chromium: Browser, club: Club, email: str, *, javascript: bool) -> Page:
    async def link(db: AsyncSession) -> str:
        return await accounts.create_login_link(db, await accounts.get_member(db, email), minutes=30)

    context = chromium.new_context(viewport={"width": 1280, "height": 800}, java_script_enabled=javascript)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(f"{club.hub.url}/login/{provision(club.hub, link)}")
    page.wait_for_url(f"{club.hub.url}/dashboard")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Models").click()
    page.wait_for_url(f"{club.hub.url}/models")
    return page


def balance(page: Page, club: Club) -> int:
    """The member's balance on their Credits page, in micro-credits."""
    page.goto(f"{club.hub.url}/credits")
    shown = page.locator("[data-balance]").inner_text().replace(",", "")
    return int(Decimal(shown) * 1_000_000)


def try_it(page: Page, prompt: str, max_tokens: int) -> None:
    box = page.locator("#try-it")
    box.get_by_label("Model").select_option(MODEL)
    box.get_by_label("Prompt").fill(prompt)
    box.get_by_label("Longest answer (tokens)").fill(str(max_tokens))
    box.get_by_role("button", name="Send").click()


def the_tries_row(club: Club, rows_before: int) -> dict[str, object]:
    """The usage row the try wrote (the recorder writes just after the answer; bounded wait)."""
    rows = recorded(club.database, rows_before + 1)
    assert len(rows) == rows_before + 1, rows
    return rows[-1]


def expected_cost(row: dict[str, object]) -> int:
    """What MODEL's price makes of the row's tokens, rounded up to a micro-credit (hub.pricing.service.Rate)."""
    tokens = int(str(row["prompt_tokens"])) * 2_000_000 + int(str(row["completion_tokens"])) * 4_000_000
    return -(-tokens // 1_000_000)


@pytest.mark.browser
def test_with_javascript_prices_and_status_show_and_the_answer_streams_into_the_box_and_is_charged(
    club: Club, chromium: Browser, tmp_path: Path
) -> None:
    page = open_models(chromium, club, "mia@lab.example.org", javascript=True)
    row = page.locator("tr.model", has_text=MODEL)
    expect(row.locator(".price")).to_contain_text("2 / 4 per 1M tokens")
    expect(row.locator(".where")).to_contain_text("1 GPU")
    expect(row.locator(".badge")).to_have_text("online")
    expect(page.locator("tr.model", has_text="qwen-offline").locator(".badge")).to_have_text("offline")
    before = balance(page, club)
    rows_before = len(recorded(club.database, 0))
    page.goto(f"{club.hub.url}/models")
    page.evaluate("window.stillTheSamePage = true")

    try_it(page, "three little words", 5)

    expect(page.locator("#try-it")).to_have_attribute("data-done", "true")
    expect(page.locator("[data-tryit-answer]")).to_have_text("tok0 tok1 tok2 tok3 tok4")
    expect(page.locator("[data-tryit-error]")).to_be_hidden()
    assert page.evaluate("window.stillTheSamePage === true"), "the page reloaded instead of streaming in place"
    page.screenshot(path=str(tmp_path / "models.png"), full_page=True)
    print(f"screenshot of the Models page: {tmp_path / 'models.png'}")
    charged = the_tries_row(club, rows_before)
    assert (charged["model"], charged["status"], charged["key_id"], charged["stream"]) == (MODEL, 200, None, 1)
    assert int(str(charged["cost"])) == expected_cost(charged) > 0
    assert balance(page, club) == before - expected_cost(charged)


@pytest.mark.browser
def test_without_javascript_the_form_posts_and_the_page_shows_the_whole_answer_and_it_is_charged(
    club: Club, chromium: Browser
) -> None:
    page = open_models(chromium, club, "mia@lab.example.org", javascript=False)
    expect(page.locator("tr.model", has_text=MODEL).locator(".price")).to_contain_text("2 / 4 per 1M tokens")
    expect(page.locator("tr.model", has_text="qwen-offline").locator(".badge")).to_have_text("offline")
    before = balance(page, club)
    rows_before = len(recorded(club.database, 0))
    page.goto(f"{club.hub.url}/models")

    try_it(page, "two words", 3)

    page.wait_for_url(f"{club.hub.url}/models/try")
    expect(page.locator("[data-tryit-answer]")).to_have_text("tok0 tok1 tok2")
    expect(page.locator("#try-it").get_by_label("Prompt")).to_have_value("two words")
    charged = the_tries_row(club, rows_before)
    assert (charged["status"], charged["key_id"]) == (200, None)
    assert balance(page, club) == before - expected_cost(charged)


@pytest.mark.browser
def test_a_member_without_credits_reads_why_in_the_box(club: Club, chromium: Browser) -> None:
    page = open_models(chromium, club, "nia@lab.example.org", javascript=True)

    try_it(page, "hello there", 5)

    error = page.locator("[data-tryit-error]")
    expect(error).to_be_visible()
    expect(error).to_contain_text(re.compile(r"needs [\d.]+ credits reserved, but you have 0 available"))
    expect(page.locator("[data-tryit-answer]")).to_be_hidden()


def test_a_model_with_no_gpu_online_gets_a_503_page_that_says_so_and_bad_input_a_clear_400(club: Club) -> None:
    with signed_in(club.hub, "mia@lab.example.org") as browser:
        offline = submit(browser, "/models", "/models/try", {"model": "qwen-offline", "prompt": "hi"})
        too_long = submit(browser, "/models", "/models/try", {"model": MODEL, "prompt": "x" * 4001})
        too_many = submit(browser, "/models", "/models/try", {"model": MODEL, "prompt": "hi", "max_tokens": "5000"})

    assert offline.status_code == 503
    assert "No GPU serving &#39;qwen-offline&#39; is online now" in offline.text
    assert too_long.status_code == 400 and "at most 4000" in too_long.text
    assert too_many.status_code == 400 and "max tokens" in too_many.text
