"""A GPU owner's first minutes on "My GPUs", in a real Chromium: create a token, run the agent, watch it live."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.proxy.conftest import proxy_hub
from tests.support.cluster import agent_process
from tests.support.fake_upstream import fake_upstream
from tests.support.hub import LiveHub

# The agent list polls every 2 s; a change must show within a few polls.
LIVE = 8_000


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[LiveHub]:
    with proxy_hub(tmp_path / "hub") as running:
        yield running


def sign_in(page: Page, hub: LiveHub, email: str) -> None:
    """Through a one-time sign-in link from the operator's command line."""
    added = hub.cli("member", "add", email)
    assert added.returncode == 0, added.stderr
    link = hub.cli("login-link", email)
    assert link.returncode == 0, link.stderr
    page.goto(link.stdout.strip())
    page.wait_for_url(f"{hub.url}/dashboard")


@pytest.mark.browser
def test_an_owner_creates_a_token_and_watches_the_agent_come_online_and_go_offline(
    hub: LiveHub, page: Page, tmp_path: Path
) -> None:
    sign_in(page, hub, "gina@lab.example.org")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="My GPUs").click()
    page.wait_for_url(f"{hub.url}/gpus")
    expect(page.get_by_text("No agents yet")).to_be_visible()
    # A mark that survives only while this document does: a full page load would wipe it.
    page.evaluate("window.stillTheSamePage = true")

    page.get_by_label("Name").fill("desk-4090")
    page.get_by_role("button", name="Create agent token").click()
    command = page.locator("#agent-command")
    shown = re.compile(
        rf"^pipx run --spec {re.escape(hub.url)}/agent/gpuclub_agent-\S+-py3-none-any\.whl gpuclub-agent "
        rf"--hub {re.escape(hub.url)} --token (gpa_\S+) --upstream http://127\.0\.0\.1:11434/v1$"
    )
    expect(command).to_have_text(shown)
    token = re.fullmatch(shown, command.inner_text().strip())
    assert token, command.inner_text()
    row = page.locator("tr.agent", has_text="desk-4090")
    expect(row.locator(".badge")).to_have_text("offline")

    with fake_upstream(["llama-3-8b", "qwen2.5-7b"]) as upstream:
        with agent_process(hub, token.group(1), f"{upstream.url}/v1", name="desk-4090", capacity=4):
            expect(row.locator(".badge")).to_have_text("online", timeout=LIVE)
            expect(row).to_contain_text("llama-3-8b, qwen2.5-7b")
            expect(row).to_contain_text("0 / 4")
            shot = tmp_path / "my-gpus.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot of the My GPUs page: {shot}")
        expect(row.locator(".badge")).to_have_text("offline", timeout=LIVE)

    expect(row).not_to_contain_text("llama-3-8b")
    assert page.evaluate("window.stillTheSamePage === true"), "the page reloaded instead of updating in place"
    page.reload()
    expect(page.locator("#agent-command")).to_have_count(0)
    assert token.group(1) not in page.content(), "the token was shown a second time"
