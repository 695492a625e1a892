"""Admin → Money: prices, the club fee, default limits and allowance, a member's own limits, grants and deductions."""

from __future__ import annotations

import html
from typing import Any

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import Role, User
from hub.club.models import ClubSetting
from hub.ledger import service as ledger
from hub.ledger.grants import grant
from hub.ledger.models import LedgerTransaction
from hub.pricing.models import Price
from hub.proxy.admission import _Cached
from hub.quotas.models import MemberPolicy
from hub.runtime import runtime_of
from tests.credits.club import CREDIT
from tests.support.people import Client, person, post_form, sign_in, text_of

MONEY = "/admin/money"


async def money_state(db: AsyncSession) -> dict[str, Any]:
    """Everything the Money page can change, as plain values."""
    return {
        "prices": (
            await db.exec(
                select(Price.model, Price.input_per_million, Price.output_per_million, Price.audio_per_minute)
            )
        ).all(),
        "settings": (await db.exec(select(ClubSetting.key, ClubSetting.value).order_by(col(ClubSetting.key)))).all(),
        "policies": (await db.exec(select(MemberPolicy.user_id, MemberPolicy.rpm, MemberPolicy.allowance))).all(),
        "transactions": (await db.exec(select(func.count()).select_from(LedgerTransaction))).one(),
    }


def said(response: httpx.Response) -> str:
    """The page's text as a person reads it (quotes and all)."""
    return html.unescape(text_of(response.text))


async def submit(client: Client, action: str, data: dict[str, str], **kwargs: Any) -> httpx.Response:
    return await post_form(client, MONEY, f"{MONEY}/{action}", data, **kwargs)


@pytest.fixture
async def adam(client: Client, db: AsyncSession) -> User:
    """An admin, signed in."""
    user = await person(db, "adam@lab.example.org", Role.ADMIN)
    await sign_in(client, db, user)
    return user


async def test_a_grant_on_the_money_page_shows_in_the_members_history_and_the_ledger_stays_sound(
    client: Client, their_browser: Client, db: AsyncSession, adam: User
) -> None:
    mia = await person(db, "mia@lab.example.org")
    await sign_in(their_browser, db, mia)

    response = await submit(
        client, "credits", {"email": "MIA@lab.example.org ", "amount": "12.5", "reason": "hackathon", "action": "grant"}
    )

    assert (response.status_code, response.headers["location"]) == (303, MONEY)
    history = text_of((await their_browser.get("/credits")).text)
    assert "grant hackathon +12.5 12.5" in history
    assert "Available to spend: 12.5" in history
    assert "All good" in text_of((await client.get("/admin/ledger")).text)
    assert await ledger.check(db) == []


async def test_a_form_sent_twice_grants_once(client: Client, db: AsyncSession, adam: User) -> None:
    mia = await person(db, "mia@lab.example.org")
    page = await client.get(MONEY)
    once = page.text.split('name="once" value="')[1].split('"')[0]
    form = {"email": mia.email, "amount": "5", "action": "grant", "once": once}

    await submit(client, "credits", form)
    again = await submit(client, "credits", form, headers={"HX-Request": "true"})

    assert "already granted" in text_of(again.text)
    assert (await ledger.balance_of(db, mia.pk)).balance == 5 * CREDIT


async def test_a_deduction_takes_credits_back_with_its_reason(
    client: Client, their_browser: Client, db: AsyncSession, adam: User
) -> None:
    mia = await person(db, "mia@lab.example.org")
    await grant(db, None, mia, 10 * CREDIT)
    await sign_in(their_browser, db, mia)

    response = await submit(
        client, "credits", {"email": mia.email, "amount": "4", "reason": "oops", "action": "deduct"}
    )

    assert response.status_code == 303
    assert "deduct oops -4 6" in text_of((await their_browser.get("/credits")).text)


async def test_deducting_more_than_is_available_is_refused_and_writes_nothing(
    app: Litestar, client: Client, db: AsyncSession, adam: User
) -> None:
    mia = await person(db, "mia@lab.example.org")
    await grant(db, None, mia, 10 * CREDIT)
    await runtime_of(app).purses.reserve(mia.pk, 3 * CREDIT, "in-flight")  # a request in flight: 7 available
    before = await money_state(db)

    response = await submit(client, "credits", {"email": mia.email, "amount": "8", "action": "deduct"})

    assert response.status_code == 400
    assert "Mia does not have 8 credits available to deduct." in text_of(response.text)
    assert await money_state(db) == before
    assert (await ledger.balance_of(db, mia.pk)).balance == 10 * CREDIT
    assert runtime_of(app).purses.held_by(mia.pk) == 3 * CREDIT


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("-5", "must be a number of credits such as 10 or 2.5"),
        ("0", "must be more than zero"),
        ("0.0000001", "must be a number of credits"),
        ("2000000000", "must be at most 1,000,000,000 credits"),
        ("abc", "must be a number of credits such as 10 or 2.5, got 'abc'"),
        ("", "must be a number of credits"),
    ],
)
@pytest.mark.parametrize("action", ["grant", "deduct"])
async def test_a_bad_amount_is_refused_with_a_readable_message_and_writes_nothing(
    client: Client, db: AsyncSession, adam: User, amount: str, message: str, action: str
) -> None:
    mia = await person(db, "mia@lab.example.org")
    await grant(db, None, mia, 10 * CREDIT)
    before = await money_state(db)

    response = await submit(client, "credits", {"email": mia.email, "amount": amount, "action": action})

    assert response.status_code == 400
    assert message in said(response)
    assert await money_state(db) == before


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"email": "nobody@lab.example.org", "amount": "5"}, "No member with the email"),
        ({"email": "not an email", "amount": "5"}, "is not an email address"),
        ({"email": "mia@lab.example.org", "amount": "5", "action": "steal"}, "Choose whether to grant or deduct"),
        ({"email": "mia@lab.example.org", "amount": "5", "reason": "x" * 301}, "at most 300 characters"),
    ],
    ids=["unknown-member", "bad-email", "bad-action", "long-reason"],
)
async def test_a_bad_grant_form_is_refused_and_writes_nothing(
    client: Client, db: AsyncSession, adam: User, form: dict[str, str], message: str
) -> None:
    await person(db, "mia@lab.example.org")
    before = await money_state(db)

    response = await submit(client, "credits", form)

    assert response.status_code == 400
    assert message in said(response)
    assert await money_state(db) == before


async def test_an_admin_sets_and_removes_prices_and_the_proxy_reads_them_afresh(
    client: Client, app: Litestar, db: AsyncSession, adam: User
) -> None:
    runtime_of(app).admission.cache[("rate", "llama-3-8b")] = _Cached(float("inf"), None)  # remembered for a while

    await submit(client, "prices", {"model": "*", "input": "0.5", "output": "1.5", "max_tokens": "512"})
    await submit(
        client, "prices", {"model": "llama-3-8b", "input": "2", "output": "6", "audio": "0.006", "max_tokens": "2048"}
    )

    assert runtime_of(app).admission.cache == {}
    page = await client.get(MONEY)
    prices = [text_of(row.split(">", 1)[1]) for row in page.text.split('<tr class="price"')[1:]]
    assert prices[0].startswith("* (default) 0.5 1.5 0 512")
    assert prices[1].startswith("llama-3-8b 2 6 0.006 2,048")
    removed = await submit(client, "prices/remove", {"model": "llama-3-8b"}, follow_redirects=True)
    assert "llama-3-8b" not in removed.text and "(default)" in text_of(removed.text)
    assert (await db.exec(select(Price.model))).all() == ["*"]


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"model": "m", "input": "abc", "output": "1"}, "The input price must be a number of credits"),
        ({"model": "m", "input": "1", "output": "-1"}, "The output price must be a number of credits"),
        ({"model": "m", "input": "1", "output": "1", "max_tokens": "0"}, "default max tokens must be between"),
        ({"model": "m", "input": "1", "output": "1", "max_tokens": "lots"}, "must be a whole number"),
        ({"model": "", "input": "1", "output": "1"}, "Please give a model name."),
        ({"model": "m", "input": "1", "output": "1", "audio": "-1"}, "The price per audio minute must be a number of"),
        ({"model": "m", "input": "1", "output": "1", "audio": "abc"}, "price per audio minute must be a number"),
    ],
    ids=["input", "output", "max-tokens-zero", "max-tokens-text", "no-model", "audio-negative", "audio-text"],
)
async def test_a_bad_price_is_refused_and_writes_nothing(
    client: Client, db: AsyncSession, adam: User, form: dict[str, str], message: str
) -> None:
    before = await money_state(db)

    response = await submit(client, "prices", form)

    assert response.status_code == 400
    assert message in said(response)
    assert await money_state(db) == before


async def test_setting_token_prices_with_the_audio_field_empty_keeps_the_audio_price(
    client: Client, db: AsyncSession, adam: User
) -> None:
    await submit(client, "prices", {"model": "whisper", "input": "0", "output": "0", "audio": "0.006"})

    await submit(client, "prices", {"model": "whisper", "input": "1", "output": "2", "audio": ""})

    page = await client.get(MONEY)
    row = text_of(page.text.split('data-model="whisper">')[1].split("</tr>")[0])
    assert row.startswith("whisper 1 2 0.006 1,024")


async def test_an_admin_sets_the_fee_defaults_and_allowance_and_sees_them_on_the_page(
    client: Client, db: AsyncSession, adam: User
) -> None:
    for action, form in [
        ("fee", {"percent": "12.5"}),
        ("quotas", {"rpm": "60", "tokens_per_day": "", "concurrency": "4"}),
        ("allowance", {"allowance": "25"}),
    ]:
        assert (await submit(client, action, form)).status_code == 303

    page = (await client.get(MONEY)).text
    assert 'name="percent" required inputmode="decimal" value="12.5"' in page
    assert 'name="rpm" type="number" min="1" value="60"' in page
    assert 'name="tokens_per_day" type="number" min="1" value=""' in page
    assert 'name="allowance" required inputmode="decimal" value="25"' in page


@pytest.mark.parametrize(
    ("action", "form", "message"),
    [
        ("fee", {"percent": "150"}, "The fee must be between 0 and 100 percent."),
        ("fee", {"percent": "abc"}, "The fee must be a percentage"),
        ("quotas", {"rpm": "0"}, "requests per minute limit must be between 1 and"),
        ("quotas", {"concurrency": "many"}, "must be a whole number"),
        ("allowance", {"allowance": "-1"}, "The monthly allowance must be a number of credits"),
        ("members", {"email": "mia@lab.example.org", "tokens_per_day": "-3"}, "tokens per day limit must be"),
        ("members", {"email": "ghost@lab.example.org", "rpm": "5"}, "No member with the email"),
        ("members", {"email": "", "rpm": "5"}, "Please give the member's email address."),
    ],
)
async def test_bad_fee_and_limit_forms_are_refused_and_write_nothing(
    client: Client, db: AsyncSession, adam: User, action: str, form: dict[str, str], message: str
) -> None:
    await person(db, "mia@lab.example.org")
    before = await money_state(db)

    response = await submit(client, action, form)

    assert response.status_code == 400
    assert message in said(response)
    assert await money_state(db) == before


async def test_an_admin_gives_one_member_their_own_limits_and_allowance(
    client: Client, db: AsyncSession, adam: User
) -> None:
    mia = await person(db, "mia@lab.example.org")

    response = await submit(
        client,
        "members",
        {"email": mia.email, "rpm": "5", "concurrency": "", "allowance": "100"},
        headers={"HX-Request": "true"},
    )

    assert 'id="money"' in response.text and "<html" not in response.text
    assert "The limits of Mia are saved." in text_of(response.text)
    row = text_of(response.text.split('data-email="mia@lab.example.org">')[1].split("</tr>")[0])
    assert row == "Mia mia@lab.example.org 5 default default 100"


@pytest.mark.parametrize("url", [MONEY, "/admin/usage", "/admin/ledger"])
async def test_members_are_not_allowed_on_the_admin_money_pages(client: Client, db: AsyncSession, url: str) -> None:
    mia = await person(db, "mia@lab.example.org")
    await sign_in(client, db, mia)

    response = await client.get(url)

    assert response.status_code == 403
    assert "Only admins can do that." in text_of(response.text)
