"""Admin → Settings lists the callback URL to register at each sign-in provider, configured or not."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import Role
from hub.app import create_app
from hub.db import Database
from hub.settings import OAuthClientSettings, Settings
from tests.conftest import browser_for
from tests.support.people import Client, person, sign_in, text_of

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # a page: one database is enough
PUBLIC_URL = "https://gpus.lab.example.org"


@pytest.fixture
async def lab(settings: Settings, database: Database) -> AsyncIterator[Client]:
    """The app at its public address, with GitHub and Google configured and no OpenID Connect provider."""
    app = OAuthClientSettings("lab-client-id", "lab-client-secret")
    configured = replace(settings, public_url=PUBLIC_URL, github=app, google=app, oidc=None)
    async with browser_for(create_app(configured, database), PUBLIC_URL) as client:
        yield client


def providers_on(html: str) -> dict[str, tuple[str, str]]:
    """provider → (its status, the callback URL shown), as the Settings page lists them."""
    rows = re.findall(r'<tr class="provider" data-provider="(\w+)">(.*?)</tr>', html, re.S)
    found = {}
    for name, row in rows:
        callback = re.search(r'<code class="callback">([^<]+)</code>', row)
        status = re.search(r'<span class="badge[^"]*">([^<]+)</span>', row)
        assert callback and status, row
        found[name] = (status.group(1), callback.group(1))
    return found


async def test_settings_show_every_providers_callback_url_and_which_are_configured(
    lab: Client, db: AsyncSession
) -> None:
    await sign_in(lab, db, await person(db, "adam@lab.example.org", Role.ADMIN))

    page = await lab.get("/admin/settings")

    assert page.status_code == 200
    assert providers_on(page.text) == {
        "github": ("configured", f"{PUBLIC_URL}/auth/github/callback"),
        "google": ("configured", f"{PUBLIC_URL}/auth/google/callback"),
        "oidc": ("not configured", f"{PUBLIC_URL}/auth/oidc/callback"),
    }
    assert f"now {PUBLIC_URL}" in text_of(page.text)


async def test_the_callback_url_shown_is_the_one_sign_in_sends_to_the_provider(lab: Client, db: AsyncSession) -> None:
    await sign_in(lab, db, await person(db, "adam@lab.example.org", Role.ADMIN))
    shown = providers_on((await lab.get("/admin/settings")).text)

    for name in ("github", "google"):
        started = await lab.get(f"/auth/{name}/login", follow_redirects=False)

        assert started.status_code == 303
        sent = parse_qs(urlsplit(started.headers["location"]).query)["redirect_uri"]
        assert sent == [shown[name][1]]


async def test_members_cannot_open_settings(lab: Client, db: AsyncSession) -> None:
    await sign_in(lab, db, await person(db, "mia@lab.example.org"))

    page = await lab.get("/admin/settings")

    assert page.status_code == 403 and "/auth/github/callback" not in page.text
