"""Sign-in through a real OpenID Connect provider process (node `oidc-provider`), forms submitted for real."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import func
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.accounts.models import Identity, Role, User, WebSession
from hub.app import create_app
from hub.db import Database
from hub.invitations import service as invitations
from hub.invitations.models import Invitation
from hub.ledger import service as ledger
from hub.settings import Settings
from tests.conftest import BASE_URL
from tests.support.oidc import sign_in_at_provider
from tests.support.people import Client, person, text_of


@pytest.fixture
def app(oidc_settings: Settings, database: Database) -> Litestar:
    return create_app(oidc_settings, database)


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    """The person's browser at the provider (its own cookies, like a real browser)."""
    async with httpx.AsyncClient(timeout=20) as client:
        yield client


async def oidc_sign_in(client: Client, browser: httpx.AsyncClient, login: str) -> httpx.Response:
    """Click "Sign in with Lab SSO", log in and consent at the provider, come back to the hub."""
    start = await client.get("/auth/oidc/login")
    assert start.status_code == 303
    callback = await sign_in_at_provider(browser, start.headers["location"], login)
    assert callback.startswith(f"{BASE_URL}/auth/oidc/callback?")
    return await client.get(callback.removeprefix(BASE_URL))


async def count(db: AsyncSession, table: type) -> int:
    return (await db.exec(select(func.count()).select_from(table))).one()


async def test_an_invited_newcomer_joins_with_the_invitations_role(
    client: Client, browser: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner = await person(db, "owner@lab.example.org", Role.OWNER)
    _, token = await invitations.create_invitation(db, owner, role=Role.ADMIN, note="welcome")
    landing = await client.get(f"/invite/{token}")
    assert "Sign in with Lab SSO" in landing.text and "admin" in text_of(landing.text)

    response = await oidc_sign_in(client, browser, "carol@lab.example.org")

    assert response.status_code == 303 and response.headers["location"] == "/dashboard", text_of(response.text)
    dashboard = await client.get("/dashboard")
    assert "Welcome, carol" in text_of(dashboard.text)
    carol = await accounts.find_by_email(db, "carol@lab.example.org")
    assert carol is not None and carol.role == Role.ADMIN
    invitation = (await db.exec(select(Invitation))).one()
    await db.refresh(invitation)
    assert invitation.uses == 1


async def test_an_uninvited_person_is_refused_and_nothing_is_written(
    client: Client, browser: httpx.AsyncClient, db: AsyncSession
) -> None:
    response = await oidc_sign_in(client, browser, "mallory@elsewhere.example.com")

    assert response.status_code == 403
    assert "Ask an admin for an invitation" in response.text
    assert await count(db, User) == 0
    assert await count(db, Identity) == 0
    assert await count(db, WebSession) == 0
    assert (await client.get("/dashboard", follow_redirects=False)).status_code == 303


async def test_a_verified_address_at_a_ruled_domain_joins_as_member(
    client: Client, browser: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner = await person(db, "owner@lab.example.org", Role.OWNER)
    await invitations.add_domain_rule(db, owner, "lab.example.org")

    response = await oidc_sign_in(client, browser, "dave@lab.example.org")

    assert response.status_code == 303
    dave = await accounts.find_by_email(db, "dave@lab.example.org")
    assert dave is not None and dave.role == Role.MEMBER


async def test_an_unverified_address_does_not_match_a_domain_rule(
    client: Client, browser: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner = await person(db, "owner@lab.example.org", Role.OWNER)
    await invitations.add_domain_rule(db, owner, "lab.example.org")

    response = await oidc_sign_in(client, browser, "unverified:eve@lab.example.org")

    assert response.status_code == 403
    assert await accounts.find_by_email(db, "eve@lab.example.org") is None


async def test_a_forged_state_is_rejected(client: Client, browser: httpx.AsyncClient, db: AsyncSession) -> None:
    await person(db, "frank@lab.example.org")
    start = await client.get("/auth/oidc/login")
    callback = await sign_in_at_provider(browser, start.headers["location"], "frank@lab.example.org")
    forged = callback.replace("state=", "state=forged")

    response = await client.get(forged.removeprefix(BASE_URL))

    assert response.status_code == 400
    assert "could not be verified" in response.text
    assert await count(db, WebSession) == 0


async def test_a_callback_without_the_flow_cookie_is_rejected(
    client: Client, browser: httpx.AsyncClient, db: AsyncSession
) -> None:
    await person(db, "frank@lab.example.org")
    start = await client.get("/auth/oidc/login")
    callback = await sign_in_at_provider(browser, start.headers["location"], "frank@lab.example.org")
    client.cookies.clear()

    response = await client.get(callback.removeprefix(BASE_URL))

    assert response.status_code == 400
    assert await count(db, WebSession) == 0


async def test_a_suspended_member_cannot_sign_in(client: Client, browser: httpx.AsyncClient, db: AsyncSession) -> None:
    owner = await person(db, "owner@lab.example.org", Role.OWNER)
    grace = await person(db, "grace@lab.example.org")
    await accounts.suspend(db, owner, grace.pk)

    response = await oidc_sign_in(client, browser, "grace@lab.example.org")

    assert response.status_code == 403
    assert "suspended" in response.text
    assert await count(db, WebSession) == 0


async def test_an_existing_member_is_linked_by_verified_email_and_recognised_next_time(
    client: Client, browser: httpx.AsyncClient, db: AsyncSession
) -> None:
    await person(db, "heidi@lab.example.org")

    first = await oidc_sign_in(client, browser, "heidi@lab.example.org")
    assert first.status_code == 303
    identity = (await db.exec(select(Identity))).one()
    assert identity.provider == "oidc" and identity.subject == "heidi@lab.example.org"

    client.cookies.clear()
    async with httpx.AsyncClient(timeout=20) as fresh_browser:
        again = await oidc_sign_in(client, fresh_browser, "heidi@lab.example.org")
    assert again.status_code == 303
    assert await count(db, User) == 1 and await count(db, Identity) == 1


async def test_an_expired_invitation_admits_no_one(
    client: Client, browser: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner = await person(db, "owner@lab.example.org", Role.OWNER)
    invitation, token = await invitations.create_invitation(db, owner, expires_in=timedelta(minutes=5))
    await client.get(f"/invite/{token}")
    invitation.expires_at = invitation.created_at - timedelta(minutes=1)
    db.add(invitation)
    await db.commit()

    response = await oidc_sign_in(client, browser, "ivan@lab.example.org")

    assert response.status_code == 404
    assert "not valid any more" in response.text
    assert await accounts.find_by_email(db, "ivan@lab.example.org") is None


async def test_an_invitation_with_starting_credits_gives_them_once_on_joining(
    client: Client, browser: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner = await person(db, "owner@lab.example.org", Role.OWNER)
    _, token = await invitations.create_invitation(db, owner, max_uses=2, credits=5_000_000)
    await client.get(f"/invite/{token}")

    response = await oidc_sign_in(client, browser, "kim@lab.example.org")

    assert response.status_code == 303
    kim = await accounts.find_by_email(db, "kim@lab.example.org")
    assert kim is not None
    assert await ledger.balance_of(db, kim.pk) == ledger.Balance(5_000_000, 0)
    assert await ledger.check(db) == []


async def test_an_invitation_for_one_address_admits_only_that_address(
    client: Client, browser: httpx.AsyncClient, db: AsyncSession
) -> None:
    owner = await person(db, "owner@lab.example.org", Role.OWNER)
    _, token = await invitations.create_invitation(db, owner, credits=1_000_000, email="lena@lab.example.org")
    await client.get(f"/invite/{token}")

    response = await oidc_sign_in(client, browser, "mallory@lab.example.org")

    assert response.status_code == 403 and "this invitation is for another address" in text_of(response.text)
    assert await accounts.find_by_email(db, "mallory@lab.example.org") is None
    assert (await db.exec(select(Invitation.uses))).one() == 0
