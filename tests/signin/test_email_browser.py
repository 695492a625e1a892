"""In a real Chromium, with and without JavaScript: an invited person asks for a link by email on the invitation
page, takes it from the message a real SMTP server (aiosmtpd) received, and lands signed in with the invitation's
role and credits. The hub is a real `gpuclub serve` process with SMTP configured in its data directory's env file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.pages.conftest import launched
from tests.support.hub import LiveHub, hub_env, live_hub
from tests.support.processes import free_port
from tests.support.smtp import Sink, link_in, smtp_sink


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with smtp_sink() as running:
        yield running


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, sink: Sink) -> Iterator[LiveHub]:
    data = tmp_path_factory.mktemp("email-hub")
    (data / "gpuclub.env").write_text("".join(f"{name}={value}\n" for name, value in sink.env().items()))
    with live_hub(hub_env(Path(data), port=free_port())) as running:
        yield running


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with launched() as opened:
        yield opened


@pytest.mark.browser
@pytest.mark.parametrize("javascript", [True, False], ids=["htmx", "no-js"])
def test_an_invited_person_joins_through_an_emailed_link(
    hub: LiveHub, sink: Sink, chromium: Browser, javascript: bool
) -> None:
    email = f"{'jo' if javascript else 'nojs'}@lab.example.org"
    invited = hub.cli("invite", "create", "--role", "admin", "--credits", "5", "--note", "welcome")
    assert invited.returncode == 0, invited.stderr
    context = chromium.new_context(java_script_enabled=javascript, viewport={"width": 1200, "height": 800})
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        page.goto(invited.stdout.strip())
        page.get_by_label("Your email").fill(email)
        with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/email")) as asked:
            page.get_by_role("button", name="Email me a sign-in link").click()
        assert (asked.value.headers.get("hx-request") == "true") is javascript
        expect(page.get_by_role("status")).to_contain_text(f"A sign-in link is on its way to {email}.")

        message = sink.next()
        assert message["To"] == email
        page.goto(link_in(message))

        page.wait_for_url(f"{hub.url}/dashboard")
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Welcome, {email}")
        expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin")).to_be_visible()
        page.goto(f"{hub.url}/credits")
        expect(page.locator("[data-balance]")).to_have_text("5")
    finally:
        context.close()
