"""`/healthz` reports the process and the database; pages get friendly errors, never a traceback."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.app import create_app
from hub.db import Database
from hub.settings import Settings
from tests.conftest import browser_for
from tests.support.people import Client, person, text_of


async def test_healthz_reports_the_database(client: Client) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


async def test_healthz_says_when_the_database_is_down(settings: Settings) -> None:
    unreachable = Database("postgresql+asyncpg://nobody@127.0.0.1:1/nothing")
    async with browser_for(create_app(settings, unreachable)) as client:
        response = await client.get("/healthz")
    await unreachable.dispose()

    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "unreachable"}


async def test_an_unknown_page_is_a_friendly_404(client: Client) -> None:
    response = await client.get("/no/such/page")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "There is nothing at this address" in text_of(response.text)
    assert "Traceback" not in response.text


async def test_pages_need_a_signed_in_member(client: Client) -> None:
    response = await client.get("/keys", follow_redirects=False)

    assert response.status_code == 303 and response.headers["location"] == "/"


async def test_a_form_without_its_csrf_token_is_refused_readably(client: Client) -> None:
    response = await client.post("/logout", data={})

    assert response.status_code == 403
    assert "Reload the page and try again" in text_of(response.text)


@pytest.mark.parametrize("public_url", ["http://testserver.local", "https://testserver.local"])
async def test_the_session_cookie_is_http_only_lax_and_secure_on_https(
    settings: Settings, database: Database, db: AsyncSession, public_url: str
) -> None:
    app = create_app(replace(settings, public_url=public_url), database)
    alice = await person(db, "alice@lab.example.org")
    token = await accounts.create_login_link(db, alice, minutes=5)
    async with browser_for(app, public_url) as client:
        response = await client.get(f"/login/{token}")

    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("gpuclub_session="))
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert "httponly" in flags and "samesite=lax" in flags and "path=/" in flags
    assert ("secure" in flags) == public_url.startswith("https")
