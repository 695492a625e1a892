"""One-time sign-in links, the first-start owner link, and signing out."""

from __future__ import annotations

from datetime import timedelta

import httpx
from litestar import Litestar
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.accounts.models import LoginLink, Role, User
from hub.db import utcnow
from hub.web.context import SESSION_COOKIE
from tests.conftest import browser_for
from tests.support.people import Client, csrf_from, person, post_form, sign_in, text_of

NOT_VALID = "This sign-in link is not valid: it was already used, has expired, or was mistyped."


async def submit(browser: Client, form: httpx.Response, data: dict[str, str]) -> httpx.Response:
    """Submit a form the browser opened earlier, with the CSRF token it came with."""
    return await browser.post(form.url.path, data={"_csrf_token": csrf_from(form.text), **data})


async def users(db: AsyncSession) -> list[tuple[str, str]]:
    return [(row[0], row[1]) for row in (await db.exec(select(User.email, User.role))).all()]


async def test_a_login_link_signs_in_once(client: Client, their_browser: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    token = await accounts.create_login_link(db, alice, minutes=5)

    signed_in = await client.get(f"/login/{token}", follow_redirects=True)

    assert str(signed_in.url).endswith("/dashboard")
    assert "Welcome, Alice" in text_of(signed_in.text)
    again = await their_browser.get(f"/login/{token}")
    assert again.status_code == 404
    assert NOT_VALID in text_of(again.text)
    assert (await their_browser.get("/dashboard")).headers["location"] == "/"


async def test_an_expired_login_link_is_refused(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    token = await accounts.create_login_link(db, alice, minutes=5)
    link = (await db.exec(select(LoginLink))).one()
    link.expires_at = utcnow() - timedelta(seconds=1)
    db.add(link)
    await db.commit()

    response = await client.get(f"/login/{token}")

    assert response.status_code == 404
    assert NOT_VALID in text_of(response.text)
    assert (await client.get("/dashboard")).headers["location"] == "/"


async def test_a_suspended_members_login_link_is_refused(client: Client, db: AsyncSession) -> None:
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    alice = await person(db, "alice@lab.example.org")
    token = await accounts.create_login_link(db, alice, minutes=5)
    await accounts.suspend(db, owner, alice.pk)

    response = await client.get(f"/login/{token}")

    assert response.status_code == 403
    assert "This account is suspended or was removed. Ask an admin." in text_of(response.text)
    assert (await client.get("/dashboard")).headers["location"] == "/"


async def test_the_owner_link_is_not_a_login_link(client: Client, db: AsyncSession) -> None:
    token = await accounts.create_login_link(db, None, minutes=15)

    response = await client.get(f"/login/{token}")

    assert response.status_code == 404
    assert "open it in a browser to claim the hub" in text_of(response.text)
    assert (await client.get(f"/setup/{token}")).status_code == 200


async def test_the_first_start_link_makes_whoever_opens_it_the_owner(client: Client, db: AsyncSession) -> None:
    token = await accounts.create_login_link(db, None, minutes=15)

    form = await client.get(f"/setup/{token}")
    assert form.status_code == 200
    assert "Become the owner of this hub" in text_of(form.text)
    claimed = await post_form(
        client, f"/setup/{token}", f"/setup/{token}", {"name": "Olive", "email": "Olive@Lab.Example.org"}
    )

    assert (claimed.status_code, claimed.headers["location"]) == (303, "/dashboard")
    assert "Welcome, Olive" in text_of((await client.get("/dashboard")).text)
    assert (await client.get("/admin/members")).status_code == 200
    assert await users(db) == [("olive@lab.example.org", "owner")]


async def test_the_first_start_link_works_once_even_if_two_people_opened_it(
    client: Client, their_browser: Client, db: AsyncSession
) -> None:
    token = await accounts.create_login_link(db, None, minutes=15)
    theirs = await their_browser.get(f"/setup/{token}")
    assert theirs.status_code == 200

    await post_form(client, f"/setup/{token}", f"/setup/{token}", {"name": "Olive", "email": "olive@lab.example.org"})
    late = await submit(their_browser, theirs, {"name": "Mallory", "email": "mallory@evil.example.com"})

    assert late.status_code == 404
    assert NOT_VALID in text_of(late.text)
    assert (await their_browser.get(f"/setup/{token}")).status_code == 404
    assert await users(db) == [("olive@lab.example.org", "owner")]


async def test_a_new_owner_link_is_refused_once_the_hub_has_an_owner(client: Client, db: AsyncSession) -> None:
    await person(db, "olive@lab.example.org", Role.OWNER)
    token = await accounts.create_login_link(db, None, minutes=15)

    response = await client.get(f"/setup/{token}")

    assert response.status_code == 409
    assert "This hub already has an owner. Ask them for an invitation." in text_of(response.text)
    assert "Become the owner" not in text_of(response.text)


async def test_an_owner_form_left_open_is_refused_once_someone_else_owns_the_hub(
    client: Client, db: AsyncSession
) -> None:
    token = await accounts.create_login_link(db, None, minutes=15)
    form = await client.get(f"/setup/{token}")
    await person(db, "olive@lab.example.org", Role.OWNER)

    response = await submit(client, form, {"name": "Mallory", "email": "mallory@evil.example.com"})

    assert response.status_code == 409
    assert "This hub already has an owner." in text_of(response.text)
    assert await users(db) == [("olive@lab.example.org", "owner")]


async def test_a_members_login_link_does_not_open_the_owner_form(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    token = await accounts.create_login_link(db, alice, minutes=5)

    response = await client.get(f"/setup/{token}")

    assert response.status_code == 404
    assert "This is not an owner set-up link." in text_of(response.text)


async def test_a_bad_email_on_the_owner_form_is_refused_and_nothing_is_created(
    client: Client, db: AsyncSession
) -> None:
    token = await accounts.create_login_link(db, None, minutes=15)

    response = await post_form(client, f"/setup/{token}", f"/setup/{token}", {"name": "Olive", "email": "olive"})

    assert response.status_code == 400
    assert "is not an email address" in text_of(response.text)
    assert await users(db) == []
    assert (
        await db.exec(select(func.count()).select_from(LoginLink).where(col(LoginLink.used_at).is_(None)))
    ).one() == 1
    assert (await client.get(f"/setup/{token}")).status_code == 200


async def test_signing_out_ends_the_session_even_for_a_copied_cookie(
    app: Litestar, client: Client, db: AsyncSession
) -> None:
    alice = await person(db, "alice@lab.example.org")
    await sign_in(client, db, alice)
    cookie = client.cookies[SESSION_COOKIE]
    async with browser_for(app) as copy:
        copy.cookies.set(SESSION_COOKIE, cookie)
        assert (await copy.get("/dashboard")).status_code == 200  # the copied cookie works while signed in

    signed_out = await post_form(client, "/dashboard", "/logout")

    assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/")
    assert (await client.get("/dashboard")).headers["location"] == "/"
    async with browser_for(app) as replay:
        replay.cookies.set(SESSION_COOKIE, cookie)
        dashboard = await replay.get("/dashboard")
    assert (dashboard.status_code, dashboard.headers["location"]) == (303, "/")
