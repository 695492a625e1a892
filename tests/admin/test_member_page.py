"""Admin → Members → one member: the numbers an admin reads, the credits and limits they set there, and what every
member sees of their own standing (the bar, the dashboard, the low-balance warning), and the 402's wording."""

from __future__ import annotations

import html
import json
import re
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import func, text, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import Role, User
from hub.agents import service as agents
from hub.app import create_app
from hub.db import Database, utcnow
from hub.errors import InsufficientCredits, TooManyRequests
from hub.keys import service as keys
from hub.ledger import service as ledger
from hub.ledger.grants import grant
from hub.ledger.models import LedgerTransaction
from hub.pricing import service as pricing
from hub.proxy.bounds import Limits
from hub.quotas import service as quotas
from hub.runtime import runtime_of
from hub.settings import Settings, StripeSettings
from tests.credits.club import CREDIT, charged, used
from tests.support.people import Client, person, post_form, sign_in, text_of

MEMBERS = "/admin/members"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def said(response: httpx.Response) -> str:
    return html.unescape(text_of(response.text))


def facts(page: str) -> dict[str, str]:
    """The member page's numbers, by name (data-fact="...")."""
    return {name: text_of(value) for name, value in re.findall(r'data-fact="([\w-]+)">(.*?)</td>', page)}


def bar(page: str) -> str:
    """The standing bar under the header, as read."""
    match = re.search(r'<div class="standing".*?</div>', page, re.S)
    return html.unescape(text_of(match.group(0))) if match else ""


def banner(page: str) -> str:
    match = re.search(r'<aside class="low-balance".*?</aside>', page, re.S)
    return html.unescape(text_of(match.group(0))) if match else ""


@pytest.fixture
async def adam(client: Client, db: AsyncSession) -> User:
    """An admin, signed in."""
    user = await person(db, "adam@lab.example.org", Role.ADMIN)
    await sign_in(client, db, user)
    return user


async def balance(db: AsyncSession, user: User) -> int:
    return (await ledger.balance_of(db, user.pk)).balance


async def test_the_member_page_shows_the_ledgers_numbers_with_what_is_held_keys_agents_and_requests(
    app: Litestar, client: Client, db: AsyncSession, adam: User
) -> None:
    mia, pat = await person(db, "mia@lab.example.org"), await person(db, "pat@lab.example.org")
    await grant(db, None, mia, 100 * CREDIT)
    await grant(db, None, pat, 10 * CREDIT)
    await charged(db, mia, pat, 10 * CREDIT)  # last month, below
    last = (await db.exec(select(func.max(LedgerTransaction.id)))).one()
    earlier = utcnow().replace(day=1) - timedelta(days=3)
    await db.exec(update(LedgerTransaction).where(col(LedgerTransaction.id) == last).values(created_at=earlier))
    await db.commit()
    await charged(db, mia, pat, 4 * CREDIT)
    await charged(db, pat, mia, 2 * CREDIT, fee_bps=1000)  # mia's GPU earns 1.8 after the club's 10%
    await runtime_of(app).purses.reserve(mia.pk, 3 * CREDIT, "call-in-flight")
    laptop, secret = await keys.create_key(db, mia, name="laptop")
    old, _ = await keys.create_key(db, mia, name="old box")
    await keys.revoke(db, mia, old.id or 0)
    await agents.create_agent(db, mia, name="mia's 4090")
    await used(db, mia, model="qwen-72b", prompt=321, completion=54, key_id=laptop.id)

    page = await client.get(f"{MEMBERS}/{mia.pk}")

    assert page.status_code == 200
    assert facts(page.text) == {
        "balance": "87.8",  # 100 - 10 - 4 + 1.8
        "held": "3",
        "available": "84.8",
        "spent-month": "4",
        "spent-total": "14",
        "earned-month": "1.8",
        "earned-total": "1.8",
        "last-active": facts(page.text)["last-active"],
    }
    assert facts(page.text)["last-active"].startswith(utcnow().strftime("%Y-%m-%d"))
    keys_shown = {m[0]: text_of(m[1]) for m in re.findall(r'data-prefix="([^"]+)">(.*?)</tr>', page.text, re.S)}
    assert keys_shown[laptop.prefix].startswith("laptop") and keys_shown[laptop.prefix].endswith("active")
    assert "revoked" in keys_shown[old.prefix]
    assert secret not in page.text and laptop.key_hash not in page.text
    assert "mia's 4090" in said(page) and "offline" in said(page)
    assert "qwen-72b" in page.text and "321 / 54" in said(page)
    members = await client.get(MEMBERS)
    assert f'href="{MEMBERS}/{mia.pk}"' in members.text


async def test_grant_and_deduct_on_the_member_page_move_credits_once_and_keep_the_ledger_sound(
    app: Litestar, client: Client, db: AsyncSession, adam: User
) -> None:
    mia = await person(db, "mia@lab.example.org")
    page = f"{MEMBERS}/{mia.pk}"
    form = await client.get(page)
    once = re.search(r'name="once" value="(\w+)"', form.text)
    assert once

    granted = await post_form(client, page, f"{page}/credits", {"amount": "12.5", "once": once.group(1)})
    again = await post_form(client, page, f"{page}/credits", {"amount": "12.5", "once": once.group(1)})
    deducted = await post_form(
        client,
        page,
        f"{page}/credits",
        {"action": "deduct", "amount": "2", "reason": "typo"},
        headers={"HX-Request": "true"},
    )

    assert (granted.status_code, granted.headers["location"]) == (303, page)
    assert again.status_code == 303
    assert deducted.status_code == 200 and "Deducted 2 credits from Mia." in said(deducted)
    assert facts(deducted.text)["balance"] == "10.5"
    assert await balance(db, mia) == 10_500_000
    assert await ledger.check(db) == []

    # Bad input is refused in words and moves nothing; a deduction never takes what is held for requests in flight.
    await runtime_of(app).purses.reserve(mia.pk, 10 * CREDIT, "call-in-flight")
    refusals = {
        "ten": await post_form(client, page, f"{page}/credits", {"amount": "ten"}),
        "more than available": await post_form(client, page, f"{page}/credits", {"action": "deduct", "amount": "1"}),
        "steal": await post_form(client, page, f"{page}/credits", {"action": "steal", "amount": "1"}),
    }
    assert {name: r.status_code for name, r in refusals.items()} == dict.fromkeys(refusals, 400)
    assert "must be a number of credits" in said(refusals["ten"])
    assert "does not have 1 credits available" in said(refusals["more than available"])
    assert await balance(db, mia) == 10_500_000
    assert await ledger.check(db) == []


async def test_a_deduction_sent_twice_from_one_form_takes_once_here_and_on_the_money_page(
    client: Client, db: AsyncSession, adam: User
) -> None:
    mia = await person(db, "mia@lab.example.org")
    await grant(db, None, mia, 10 * CREDIT)
    sent = []
    for page, action, extra in (
        (f"{MEMBERS}/{mia.pk}", f"{MEMBERS}/{mia.pk}/credits", {}),
        ("/admin/money", "/admin/money/credits", {"email": mia.email}),
    ):
        once = re.search(r'name="once" value="(\w+)"', (await client.get(page)).text)
        assert once
        form = {"action": "deduct", "amount": "3", "once": once.group(1), **extra}
        sent += [await post_form(client, page, action, form, headers={"HX-Request": "true"}) for _ in range(2)]

    assert [said(r).count("Deducted 3 credits from Mia.") for r in sent] == [1, 0, 1, 0]
    assert all("already deducted (the form was sent twice)" in said(r) for r in sent[1::2])
    assert await balance(db, mia) == 4 * CREDIT
    assert await ledger.check(db) == []


async def test_limits_set_on_the_member_page_are_what_admission_enforces_next(
    app: Litestar, client: Client, db: AsyncSession, adam: User
) -> None:
    mia = await person(db, "mia@lab.example.org")
    await quotas.set_defaults(db, None, quotas.Limits(rpm=100, concurrency=7))
    admission = runtime_of(app).admission

    async def admit(n: int) -> None:
        size = lambda default: Limits.of(BODY, len(json.dumps(BODY)), default_max_tokens=default, embeddings=False)  # noqa: E731
        await admission.admit(
            call_id=f"c{n}", user_id=mia.pk, key_id=0, model="m", size=size, owns_agent_for_model=False
        )

    await admit(0)  # admission now caches "100 a minute" for mia
    page = f"{MEMBERS}/{mia.pk}"
    saved = await post_form(client, page, f"{page}/limits", {"rpm": "2", "tokens_per_day": "", "allowance": "5"})
    bad = await post_form(client, page, f"{page}/limits", {"rpm": "-3"})

    assert saved.status_code == 303 and bad.status_code == 400
    assert "requests per minute limit must be between" in said(bad)
    policy = await quotas.limits_for(db, mia.pk, 0)
    assert policy[0] == quotas.Limits(rpm=2, tokens_per_day=None, concurrency=7)
    await admit(1)
    await admit(2)  # a new limit counts afresh
    with pytest.raises(TooManyRequests, match="2 requests per minute"):
        await admit(3)
    shown = await client.get(page)
    rows = {name: text_of(row) for name, row in re.findall(r'<tr data-limit="(\w+)">(.*?)</tr>', shown.text, re.S)}
    assert 'name="rpm" inputmode="numeric" size="9" value="2"' in shown.text
    assert (
        rows["rpm"].endswith("100")
        and rows["concurrency"].endswith("7")
        and rows["tokens_per_day"].endswith("no limit")
    )
    assert 'name="allowance" inputmode="decimal" size="9" value="5"' in shown.text


async def test_only_admins_may_open_the_member_page_or_move_a_members_credits(client: Client, db: AsyncSession) -> None:
    mia, max_ = await person(db, "mia@lab.example.org"), await person(db, "max@lab.example.org")
    await grant(db, None, max_, 5 * CREDIT)
    await sign_in(client, db, mia)

    opened = await client.get(f"{MEMBERS}/{max_.pk}")
    moved = await post_form(client, "/dashboard", f"{MEMBERS}/{max_.pk}/credits", {"amount": "100"})
    limited = await post_form(client, "/dashboard", f"{MEMBERS}/{max_.pk}/limits", {"rpm": "1"})
    warned = await post_form(client, "/dashboard", f"{MEMBERS}/low-balance", {"below": "50"})

    assert [r.status_code for r in (opened, moved, limited, warned)] == [403, 403, 403, 403]
    assert "Only admins can do that." in said(opened)
    assert await balance(db, max_) == 5 * CREDIT
    assert (await quotas.limits_for(db, max_.pk, 0))[0] == quotas.Limits()


async def test_every_page_shows_the_members_standing_and_warns_when_the_balance_is_low(
    client: Client, their_browser: Client, db: AsyncSession
) -> None:
    mia, owner = await person(db, "mia@lab.example.org"), await person(db, "olive@lab.example.org", Role.OWNER)
    await sign_in(client, db, mia)
    free = await client.get("/dashboard")
    assert "Balance 0 credits" in bar(free.text) and banner(free.text) == ""  # nothing costs anything yet

    await pricing.set_price(db, None, "*", input_micro=CREDIT, output_micro=CREDIT)
    await grant(db, None, mia, CREDIT // 2)
    await quotas.set_member_limits(db, None, mia, tokens_per_day=1000, rpm=30)
    await used(db, mia, prompt=200, completion=100)
    low = await client.get("/keys")

    assert bar(low.text) == "Balance 0.5 credits 700 of 1,000 tokens left today 30 requests a minute"
    assert banner(low.text).startswith("Your balance is low: 0.5 credits available.")
    assert banner(low.text).endswith("Ask an admin for credits.") and "/credits/buy" not in low.text
    dashboard = said(await client.get("/dashboard"))
    assert "0.5 credits available" in dashboard and "700 of 1,000 left today" in dashboard

    await grant(db, None, mia, 5 * CREDIT)
    assert banner((await client.get("/dashboard")).text) == ""

    await sign_in(their_browser, db, owner)
    members = await their_browser.get(MEMBERS)
    assert 'name="below" inputmode="decimal" required value="1"' in members.text  # the default: 1 credit
    refused = await post_form(their_browser, MEMBERS, f"{MEMBERS}/low-balance", {"below": "lots"})
    saved = await post_form(their_browser, MEMBERS, f"{MEMBERS}/low-balance", {"below": "10"})
    assert refused.status_code == 400 and "low-balance warning must be a number of credits" in said(refused)
    assert (saved.status_code, saved.headers["location"]) == (303, MEMBERS)
    assert banner((await client.get("/dashboard")).text).startswith("Your balance is low: 5.5 credits available.")


async def test_a_page_still_renders_when_the_standing_cannot_be_read(
    app: Litestar, client: Client, db: AsyncSession, database_url: str
) -> None:
    mia = await person(db, "mia@lab.example.org")
    await sign_in(client, db, mia)
    outage = runtime_of(app).outage
    outage.noticed(OSError("the database host went away"))  # readers skip the database until it answers again
    during = await client.get("/models")
    outage.recovered()
    assert during.status_code == 200 and bar(during.text) == "" and "Mia" in said(during)
    if database_url.startswith("sqlite"):  # a broken query (here: a missing table) is logged, not shown
        await db.exec(text("DROP TABLE prices"))  # type: ignore[call-overload]
        await db.commit()
        broken = await client.get("/dashboard")
        assert broken.status_code == 200 and bar(broken.text) == "" and "Welcome, Mia" in said(broken)
        assert "cannot be read right now" in said(broken)


async def test_the_402_and_the_dashboard_mention_buying_only_when_the_hub_sells_credits(
    settings: Settings, database: Database, db: AsyncSession
) -> None:
    mia = await person(db, "mia@lab.example.org")
    await grant(db, None, mia, CREDIT)
    selling = replace(settings, stripe=StripeSettings("sk_test_x", "whsec_x"))

    for stripe, app in ((False, create_app(settings, database)), (True, create_app(selling, database))):
        with pytest.raises(InsufficientCredits) as refused:
            await runtime_of(app).purses.reserve(mia.pk, 2 * CREDIT, "call")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.public_url) as browser:  # type: ignore[arg-type]
            await sign_in(browser, db, mia)
            dashboard = said(await browser.get("/dashboard"))

        if stripe:
            assert str(refused.value).endswith(
                f"you have 1 available. Ask an admin for credits or buy some at {settings.public_url}/credits/buy."
            )
            assert "Buy credits or ask an admin for more." in dashboard
        else:
            assert str(refused.value).endswith("you have 1 available. Ask an admin for credits.")
            assert "Need more? Ask an admin for credits." in dashboard and "Buy" not in dashboard
