"""A strict OpenID Connect provider gives the email only at userinfo; the hub asks there."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from litestar import Litestar
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.accounts.models import Role
from hub.app import create_app
from hub.db import Database
from hub.invitations import service as invitations
from hub.settings import OidcSettings, Settings
from tests.conftest import BASE_URL
from tests.support.oidc import OidcProvider, sign_in_at_provider, start_oidc_provider
from tests.support.people import Client, person


@pytest.fixture(scope="module")
def strict_provider() -> Iterator[OidcProvider]:
    yield from start_oidc_provider([f"{BASE_URL}/auth/oidc/callback"], conform=True)


@pytest.fixture
def app(settings: Settings, database: Database, strict_provider: OidcProvider) -> Litestar:
    oidc = OidcSettings(strict_provider.client_id, strict_provider.client_secret, strict_provider.discovery_url)
    return create_app(replace(settings, oidc=oidc), database)


async def test_the_email_from_userinfo_admits_a_domain_member(client: Client, db: AsyncSession) -> None:
    owner = await person(db, "owner@lab.example.org", Role.OWNER)
    await invitations.add_domain_rule(db, owner, "lab.example.org")
    start = await client.get("/auth/oidc/login")
    async with httpx.AsyncClient(timeout=20) as browser:
        callback = await sign_in_at_provider(browser, start.headers["location"], "olga@lab.example.org")

    response = await client.get(callback.removeprefix(BASE_URL))

    assert response.status_code == 303 and response.headers["location"] == "/dashboard"
    olga = await accounts.find_by_email(db, "olga@lab.example.org")
    assert olga is not None and olga.name == "olga"
