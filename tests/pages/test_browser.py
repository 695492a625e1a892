"""A newcomer's first minutes, in a real Chromium: join by invitation, sign in, create and revoke an API key."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Dialog, Page, expect

from tests.support.hub import LiveHub
from tests.support.oidc import OidcProvider


def models_status(hub: LiveHub, secret: str) -> int:
    return httpx.get(f"{hub.url}/v1/models", headers={"Authorization": f"Bearer {secret}"}).status_code


@pytest.mark.browser
def test_a_newcomer_joins_creates_a_key_and_revokes_it(
    hub_process: LiveHub, oidc_provider: OidcProvider, page: Page, tmp_path: Path
) -> None:
    hub = hub_process
    invited = hub.cli("invite", "create")
    assert invited.returncode == 0, invited.stderr
    invitation = invited.stdout.strip()

    page.goto(invitation)
    page.get_by_role("link", name="Sign in with Lab SSO").click()
    page.wait_for_url(f"{oidc_provider.issuer}/**")
    page.locator("input[name=login]").fill("nora@lab.example.org")
    page.locator("input[name=password]").fill("any-password")
    page.get_by_role("button", name="Sign-in").click()
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{hub.url}/dashboard")
    expect(page.get_by_role("heading", level=1)).to_have_text("Welcome, nora")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="API keys").click()
    page.wait_for_url(f"{hub.url}/keys")
    # A mark that survives only while this document does: a full page load would wipe it.
    page.evaluate("window.stillTheSamePage = true")
    page.get_by_label("Name").fill("laptop")
    with page.expect_response(lambda r: r.url == f"{hub.url}/keys" and r.request.method == "POST") as created:
        page.get_by_role("button", name="Create key").click()
    assert created.value.request.headers.get("hx-request") == "true", "the form was not sent by htmx"
    secret_box = page.locator("#new-secret")
    expect(secret_box).to_have_text(re.compile(r"^gpc_\S+$"))
    secret = secret_box.inner_text().strip()
    row = page.locator("tr.key", has_text="laptop")
    expect(row).to_have_count(1)
    assert page.evaluate("window.stillTheSamePage === true"), "creating the key reloaded the whole page"
    assert page.url == f"{hub.url}/keys"
    expect(page.locator("form[action='/keys']").get_by_label("Name")).to_have_value("")  # ready for the next key
    shot = tmp_path / "api-keys.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot of the API keys page: {shot}")
    assert models_status(hub, secret) == 200

    page.reload()
    expect(page.locator("#new-secret")).to_have_count(0)
    assert secret not in page.content()
    prefix = row.locator("code").inner_text().removesuffix("…")
    assert secret.startswith(prefix) and len(prefix) < len(secret)
    expect(row.locator(".badge")).to_have_text("active")

    confirmations: list[str] = []

    def accept(dialog: Dialog) -> None:
        confirmations.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    row.get_by_role("button", name="Revoke").click()
    expect(row.locator(".badge")).to_have_text("revoked")
    expect(page.get_by_role("status").filter(has_text="Revoked laptop")).to_be_visible()
    assert confirmations and "Revoke laptop?" in confirmations[0]
    expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
    assert models_status(hub, secret) == 401
