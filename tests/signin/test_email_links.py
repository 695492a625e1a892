"""Sign-in links by email, through a real SMTP server (aiosmtpd): members, invited people, admins' links."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from litestar import Litestar
from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.accounts.models import LoginLink, Role, User
from hub.app import create_app
from hub.db import Database, utcnow
from hub.housekeeping import Housekeeping
from hub.invitations import service as invitations
from hub.invitations.models import Invitation
from hub.ledger import service as ledger
from hub.ledger.purses import Purses
from hub.parsing import normalize_email
from hub.quotas.limiter import Limiter
from hub.runtime import runtime_of
from hub.settings import Settings
from hub.signin import links
from hub.signin.service import enrol
from hub.signin.throttle import SignInThrottle, Window, client_key
from tests.conftest import browser_for
from tests.support.people import Client, csrf_from, person, post_form, sign_in, text_of
from tests.support.processes import free_port
from tests.support.smtp import Sink, link_in, smtp_sink

NOT_VALID = "This sign-in link is not valid: it was already used, has expired, or was mistyped."
SENT = "a sign-in link is on its way to it. It works once, within 15 minutes."


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with smtp_sink() as running:
        yield running


@pytest.fixture
def app(settings: Settings, database: Database, sink: Sink) -> Iterator[Litestar]:
    sink.taken()  # what an earlier test left unread is not this test's mail
    yield create_app(replace(settings, smtp=sink.settings), database)


async def delivered(app: Litestar, sink: Sink) -> list[str]:
    """The addresses mailed since the last look, once the hub's background sending is done."""
    await runtime_of(app).background.drain()
    return [str(message["To"]) for message in sink.taken()]


async def ask(client: Client, email: str, page: str = "/") -> tuple[int, str]:
    opened = await client.get(page)
    action = "/signin/email" if page == "/" else f"{page}/email"
    response = await client.post(action, data={"_csrf_token": csrf_from(opened.text), "email": email})
    return response.status_code, text_of(response.text)


async def test_a_member_gets_a_link_by_email_that_signs_them_in_once(
    app: Litestar, sink: Sink, client: Client, their_browser: Client, db: AsyncSession
) -> None:
    await person(db, "alice@lab.example.org")

    status, answer = await ask(client, "Alice@Lab.Example.org")

    assert status == 200 and f"If alice@lab.example.org belongs to a member of this hub, {SENT}" in answer
    await runtime_of(app).background.drain()
    [mail] = sink.taken()
    assert (mail["To"], mail["Subject"]) == ("alice@lab.example.org", "Sign in to gpuclub")
    link = link_in(mail)
    signed_in = await client.get(link.removeprefix("http://testserver.local"), follow_redirects=True)
    assert "Welcome, Alice" in text_of(signed_in.text)
    again = await their_browser.get(link.removeprefix("http://testserver.local"))
    assert again.status_code == 404 and NOT_VALID in text_of(again.text)


async def test_an_unknown_or_suspended_address_gets_the_same_answer_and_no_mail(
    app: Litestar, sink: Sink, client: Client, db: AsyncSession
) -> None:
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    await person(db, "bob@lab.example.org")
    sam = await person(db, "sam@lab.example.org")
    await accounts.suspend(db, owner, sam.pk)

    answers = {}
    for name in ("bob", "nobody", "sam"):
        status, text = await ask(client, f"{name}@lab.example.org")
        answers[name] = (status, text.replace(f"{name}@", "someone@"))

    assert answers["bob"] == answers["nobody"] == answers["sam"]
    assert await delivered(app, sink) == ["bob@lab.example.org"]
    assert (await db.exec(select(func.count()).select_from(LoginLink))).one() == 1


async def test_asking_too_often_is_refused_per_address_and_per_client(
    app: Litestar, sink: Sink, client: Client, db: AsyncSession
) -> None:
    await person(db, "bob@lab.example.org")
    for _ in range(3):
        assert (await ask(client, "bob@lab.example.org"))[0] == 200

    status, answer = await ask(client, "bob@lab.example.org")

    assert status == 429 and "Too many sign-in links were asked for" in answer
    assert await delivered(app, sink) == ["bob@lab.example.org"] * 3
    for number in range(7):  # the client's tenth request in the window is its last
        assert (await ask(client, f"n{number}@lab.example.org"))[0] == 200
    assert (await ask(client, "carol@lab.example.org"))[0] == 429
    async with browser_for(app) as elsewhere:  # the same address from elsewhere is still refused
        assert (await ask(elsewhere, "bob@lab.example.org"))[0] == 429


async def test_an_invited_person_joins_by_email_link_with_the_role_and_the_credits_once(
    app: Litestar, sink: Sink, client: Client, their_browser: Client, db: AsyncSession
) -> None:
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    _, token = await invitations.create_invitation(db, owner, role=Role.ADMIN, max_uses=3, credits=5_000_000)
    page = f"/invite/{token}"
    assert "Email me a sign-in link" in text_of((await client.get(page)).text)

    status, answer = await ask(client, "Kim@Lab.Example.org", page)

    assert status == 200 and "A sign-in link is on its way to kim@lab.example.org." in answer
    await runtime_of(app).background.drain()
    [mail] = sink.taken()
    assert mail["Subject"] == "Join gpuclub" and "You were invited to gpuclub as admin" in str(mail.get_body())
    path = link_in(mail).removeprefix("http://testserver.local")
    joined = await client.get(path, follow_redirects=True)
    assert "Welcome, kim@lab.example.org" in text_of(joined.text)
    assert (await client.get("/admin/members")).status_code == 200
    kim = await accounts.find_by_email(db, "kim@lab.example.org")
    assert kim is not None and kim.role == Role.ADMIN
    assert await ledger.balance_of(db, kim.pk) == ledger.Balance(5_000_000, 0)
    again = await their_browser.get(path)
    assert again.status_code == 404 and NOT_VALID in text_of(again.text)
    assert (await db.exec(select(Invitation.uses))).one() == 1
    assert await ledger.check(db) == []


async def test_two_links_raced_or_one_link_clicked_twice_make_one_member_with_the_credits_once(
    app: Litestar, db: AsyncSession
) -> None:
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    invitation, _ = await invitations.create_invitation(db, owner, max_uses=5, credits=2_000_000)
    first = await links.link_for_invited(db, invitation, "lee@lab.example.org", minutes=15)
    second = await links.link_for_invited(db, invitation, "lee@lab.example.org", minutes=15)

    async def follow(token: str | None) -> int:
        async with browser_for(app) as browser:
            return (await browser.get(f"/login/{token}")).status_code

    statuses = await asyncio.gather(follow(first), follow(second), follow(first), follow(second))

    assert sorted(statuses) == [303, 404, 404, 409]  # the other link says lee is a member now; it signs no one in
    lee = (await db.exec(select(User).where(User.email == "lee@lab.example.org"))).one()
    assert await ledger.balance_of(db, lee.pk) == ledger.Balance(2_000_000, 0)
    assert (await db.exec(select(Invitation.uses))).one() == 1
    assert await ledger.check(db) == []


async def test_an_expired_invitation_link_is_refused_and_makes_no_member(client: Client, db: AsyncSession) -> None:
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    invitation, _ = await invitations.create_invitation(db, owner, credits=1_000_000)
    token = await links.link_for_invited(db, invitation, "ivy@lab.example.org", minutes=15)
    link = (await db.exec(select(LoginLink))).one()
    link.expires_at = utcnow() - timedelta(seconds=1)
    db.add(link)
    await db.commit()

    response = await client.get(f"/login/{token}")

    assert response.status_code == 404 and NOT_VALID in text_of(response.text)
    assert await accounts.find_by_email(db, "ivy@lab.example.org") is None


async def test_an_admin_makes_a_sign_in_link_for_an_invited_person_shown_once(
    client: Client, their_browser: Client, db: AsyncSession
) -> None:
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    invitation, _ = await invitations.create_invitation(db, owner, credits=3_000_000, email="Nia@Lab.Example.org")
    await sign_in(client, db, owner)

    made = await post_form(client, "/admin/invitations", f"/admin/invitations/{invitation.id}/link")

    assert made.status_code == 200
    assert "Sign-in link for nia@lab.example.org" in text_of(made.text)
    link = made.text.split('id="new-signin-link">')[1].split("<")[0]
    assert link.split("/login/")[1] not in (await client.get("/admin/invitations")).text
    joined = await their_browser.get(link.removeprefix("http://testserver.local"))
    assert (joined.status_code, joined.headers["location"]) == (303, "/dashboard")
    nia = await accounts.find_by_email(db, "nia@lab.example.org")
    assert nia is not None and await ledger.balance_of(db, nia.pk) == ledger.Balance(3_000_000, 0)


async def test_without_smtp_or_a_provider_the_invitation_page_says_to_ask_an_admin(
    settings: Settings, database: Database, db: AsyncSession
) -> None:
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    _, token = await invitations.create_invitation(db, owner)
    async with browser_for(create_app(settings, database)) as plain:
        page = await plain.get(f"/invite/{token}")
        assert "ask an admin for a sign-in link" in text_of(page.text)
        assert "Email me" not in page.text
        csrf = page.text.split('"x-csrftoken": "')[1].split('"')[0]  # the token every page hands to htmx
        refused = await plain.post(f"/invite/{token}/email", data={"_csrf_token": csrf, "email": "x@lab.example.org"})
        landing = await plain.get("/")
    assert refused.status_code == 404 and "not set up on this hub" in text_of(refused.text)
    assert "Email me" not in landing.text and "gpuclub login-link" in landing.text


async def test_a_mail_server_that_is_down_is_logged_without_the_link(
    settings: Settings, database: Database, db: AsyncSession, caplog: pytest.LogCaptureFixture
) -> None:
    await person(db, "alice@lab.example.org")
    down = replace(Sink(port=free_port()).settings, timeout=2)  # nothing listens there
    app = create_app(replace(settings, smtp=down), database)
    gpuclub = logging.getLogger("gpuclub")
    gpuclub.addHandler(caplog.handler)  # the app's logging set-up took pytest's handler off the root logger
    try:
        async with browser_for(app) as browser:
            status, answer = await ask(browser, "alice@lab.example.org")
        await runtime_of(app).background.drain()
    finally:
        gpuclub.removeHandler(caplog.handler)

    assert status == 200 and SENT in answer  # the page did not wait for the mail server
    [failure] = [r.getMessage() for r in caplog.records if "could not send a sign-in email" in r.getMessage()]
    assert "alice@lab.example.org" in failure and "gpl_" not in caplog.text


async def test_an_invitation_for_one_address_sends_its_link_there_whatever_is_typed(
    app: Litestar, sink: Sink, client: Client, db: AsyncSession
) -> None:
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    _, token = await invitations.create_invitation(db, owner, email="zoe@lab.example.org")
    page = await client.get(f"/invite/{token}")
    assert "We will send a one-time sign-in link to zoe@lab.example.org" in text_of(page.text)

    status, answer = await ask(client, "mallory@elsewhere.example.com", f"/invite/{token}")

    assert status == 200 and "A sign-in link is on its way to zoe@lab.example.org." in answer
    assert await delivered(app, sink) == ["zoe@lab.example.org"]


def shown_link(made: str) -> str:
    return made.split('id="new-signin-link">')[1].split("<")[0].removeprefix("http://testserver.local")


async def test_an_admin_cannot_make_a_link_that_signs_in_a_member_and_an_old_one_signs_in_no_member(
    client: Client, their_browser: Client, db: AsyncSession
) -> None:
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    admin = await person(db, "adam@lab.example.org", Role.ADMIN)
    await sign_in(client, db, admin)
    anyone, _ = await invitations.create_invitation(db, admin, max_uses=5)
    for_owner, _ = await invitations.create_invitation(db, admin, email=owner.email)
    link_of = f"/admin/invitations/{anyone.id}/link"

    typed = await post_form(client, "/admin/invitations", link_of, {"email": owner.email})
    named = await post_form(client, "/admin/invitations", f"/admin/invitations/{for_owner.id}/link")
    made = await post_form(client, "/admin/invitations", link_of, {"email": "kim@lab.example.org"})
    await person(db, "kim@lab.example.org", Role.OWNER)  # kim joins another way before the link is followed
    followed = await their_browser.get(shown_link(made.text))

    for refused in (typed, named):
        assert refused.status_code == 409
        assert "olive@lab.example.org is already a member; they sign in as usual." in text_of(refused.text)
    assert followed.status_code == 409
    assert "kim@lab.example.org is already a member; they sign in as usual." in text_of(followed.text)
    assert (await their_browser.get("/dashboard")).status_code == 303  # signed in as no one: sent to the landing
    assert (await db.exec(select(func.sum(Invitation.uses)))).one() == 0


async def test_a_removed_member_invited_back_by_two_links_at_once_returns_once_with_one_grant(
    database: Database, db: AsyncSession
) -> None:
    owner = await person(db, "olive@lab.example.org", Role.OWNER)
    rita = await person(db, "rita@lab.example.org")
    await accounts.remove(db, owner, rita.pk)
    first, _ = await invitations.create_invitation(db, owner, credits=2_000_000)
    second, _ = await invitations.create_invitation(db, owner, credits=3_000_000)
    token = await links.link_for_invited(db, first, rita.email, minutes=15)
    async with database.session() as one, database.session() as other:
        removed = await accounts.find_by_email(other, rita.email)  # the other link read her as removed...
        await links.follow(one, token or "")  # ...and this one made her a member again meanwhile
        late = await enrol(other, email=rita.email, name="", role=Role.MEMBER, returning=removed, invited=second)
        await other.rollback()

    assert late is None
    assert await ledger.balance_of(db, rita.pk) == ledger.Balance(2_000_000, 0)
    assert await ledger.check(db) == []


def test_the_throttle_counts_an_ipv6_clients_64_and_each_invitation_and_a_full_table_resets_no_one() -> None:
    now = [0.0]
    throttle = SignInThrottle(*(Window(limit, 900, clock=lambda: now[0]) for limit in (3, 10, 20)))
    same_64 = [throttle.take(f"p{n}@lab.example.org", f"2001:db8::{n:x}") for n in range(11)]
    other_64 = throttle.take("q@lab.example.org", "2001:db8:0:1::1")
    invited = [throttle.take(f"i{n}@lab.example.org", f"198.51.100.{n}", invitation=7) for n in range(21)]
    another = throttle.take("j@lab.example.org", "198.51.100.99", invitation=8)

    assert same_64.count(0) == 10 and same_64[-1] > 0 and other_64 == 0
    assert invited.count(0) == 20 and invited[-1] > 0 and another == 0
    assert client_key("::ffff:198.51.100.7") == "198.51.100.7"

    table = Window(3, 900, max_keys=2, clock=lambda: now[0])
    for key in ("a", "a", "a", "b"):
        table.hit(key)
    assert table.full("c") > 0 and table.full("a") > 0  # c waits; a is not forgotten to make room, so still limited
    now[0] = 901.0
    assert table.full("c") == 0 and len(table.hits) < 2  # their window passed: now they may be forgotten


async def test_an_address_a_mail_header_would_read_as_more_than_one_mailbox_is_refused(client: Client) -> None:
    typed = ["x,mallory@elsewhere.example.com", "a<b>@lab.example.org", '"a b"@lab.example.org', "(c)v@lab.example.org"]

    answers = [await ask(client, address) for address in typed]

    assert all(status == 400 and "is not an email address" in answer for status, answer in answers)
    assert [normalize_email(e) for e in ("Ada.L+gpus@Lab.example.org", "o'neil-x@lab.example.org")] == [
        "ada.l+gpus@lab.example.org",
        "o'neil-x@lab.example.org",
    ]


async def test_housekeeping_forgets_sign_in_links_that_expired_unused(database: Database, db: AsyncSession) -> None:
    kim = await person(db, "kim@lab.example.org")
    for minutes in (-1, -1, 15):
        await accounts.create_login_link(db, kim, minutes=minutes)
    spent = await accounts.create_login_link(db, kim, minutes=15)
    await accounts.use_login_link(db, spent)
    await db.exec(
        update(LoginLink).values(expires_at=utcnow() - timedelta(seconds=1)).where(col(LoginLink.used_at).is_not(None))
    )
    await db.commit()

    await Housekeeping(database, Purses(database, hold_seconds=60), Limiter()).run_once()

    assert len((await db.exec(select(LoginLink))).all()) == 2  # the live one, and the used one
