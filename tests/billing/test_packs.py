"""Admin → Credit packs: what is on sale, and the amounts an admin may type."""

from __future__ import annotations

import pytest
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import Role
from hub.billing.models import CreditPack
from hub.billing.money import format_money, parse_price
from hub.errors import BadRequest
from tests.billing.steps import CREDIT, add_pack
from tests.support.people import Client, person, post_form, sign_in, text_of

GOOD = {"name": "Starter", "credits": "100", "price": "10.00", "currency": "USD"}


async def test_an_admin_adds_a_pack_and_members_can_buy_it(
    client: Client, their_browser: Client, db: AsyncSession
) -> None:
    await sign_in(client, db, await person(db, "admin@lab.example.org", Role.ADMIN))
    await sign_in(their_browser, db, await person(db, "alice@lab.example.org"))

    added = await post_form(client, "/admin/packs", "/admin/packs", GOOD | {"credits": "2.5", "price": "4.5"})

    assert added.status_code == 303 and added.headers["location"] == "/admin/packs"
    pack = (await db.exec(select(CreditPack))).one()
    assert (pack.name, pack.credits, pack.amount, pack.currency, pack.active) == (
        "Starter",
        2_500_000,
        450,
        "usd",
        True,
    )
    assert "4.50 USD" in (await client.get("/admin/packs")).text
    offered = text_of((await their_browser.get("/credits/buy")).text)
    assert "Starter 2.5 4.50 USD" in offered


async def test_with_htmx_the_pack_list_is_redrawn_in_place(client: Client, db: AsyncSession) -> None:
    await sign_in(client, db, await person(db, "admin@lab.example.org", Role.ADMIN))

    added = await post_form(client, "/admin/packs", "/admin/packs", GOOD, headers={"HX-Request": "true"})

    assert added.status_code == 200 and added.text.lstrip().startswith('<section id="packs"')
    assert "Added Starter." in added.text and "10.00 USD" in added.text


async def test_a_pack_priced_in_yen_takes_whole_yen(client: Client, db: AsyncSession) -> None:
    await sign_in(client, db, await person(db, "admin@lab.example.org", Role.ADMIN))

    await post_form(client, "/admin/packs", "/admin/packs", GOOD | {"price": "1200", "currency": "jpy"})
    refused = await post_form(client, "/admin/packs", "/admin/packs", GOOD | {"price": "1200.5", "currency": "JPY"})

    pack = (await db.exec(select(CreditPack))).one()
    assert (pack.amount, pack.currency, pack.price) == (1200, "jpy", "1,200 JPY")
    assert refused.status_code == 400 and "Prices in JPY take whole amounts" in refused.text


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("credits", "0", "The number of credits must be more than zero."),
        ("credits", "-5", "must be a number of credits such as 10 or 2.5"),
        ("credits", "lots", "must be a number of credits such as 10 or 2.5"),
        ("credits", "2000000000", "at most 1,000,000,000 credits"),
        ("price", "0", "The price must be more than zero."),
        ("price", "-3.00", "The price must be more than zero."),
        ("price", "ten", "The price must be an amount such as 12.50"),
        ("price", "1e3", "The price must be an amount such as 12.50"),
        ("price", "1000000", "The price must be at most 999,999.99 USD."),
        ("price", "9.999", "Prices in USD take at most 2 decimal places"),
        ("currency", "dollars", "The currency must be a three-letter code such as USD or EUR"),
        ("name", "   ", "Please give a pack name."),
    ],
    ids=[
        "zero-credits",
        "negative-credits",
        "word-credits",
        "huge-credits",
        "zero-price",
        "negative-price",
        "word-price",
        "exponent-price",
        "huge-price",
        "sub-cent-price",
        "currency",
        "no-name",
    ],
)
async def test_a_bad_pack_is_refused_with_a_clear_message_and_nothing_is_stored(
    client: Client, db: AsyncSession, field: str, value: str, message: str
) -> None:
    await sign_in(client, db, await person(db, "admin@lab.example.org", Role.ADMIN))

    response = await post_form(client, "/admin/packs", "/admin/packs", GOOD | {field: value})

    assert response.status_code == 400
    assert message in text_of(response.text)
    assert (await db.exec(select(CreditPack))).all() == []


async def test_a_deactivated_pack_is_no_longer_on_sale(client: Client, db: AsyncSession) -> None:
    admin = await person(db, "admin@lab.example.org", Role.ADMIN)
    pack = await add_pack(db, "Old pack", credits=5)
    await sign_in(client, db, admin)

    response = await post_form(client, "/admin/packs", f"/admin/packs/{pack.id}/deactivate", follow_redirects=True)

    assert "inactive" in text_of(response.text)
    await db.refresh(pack)
    assert pack.active is False and pack.credits == 5 * CREDIT
    assert "Old pack" not in text_of((await client.get("/credits/buy")).text)


async def test_members_cannot_see_or_change_packs(client: Client, db: AsyncSession) -> None:
    pack = await add_pack(db, "Starter")
    await sign_in(client, db, await person(db, "alice@lab.example.org"))

    listing = await client.get("/admin/packs")
    added = await post_form(client, "/keys", "/admin/packs", GOOD | {"name": "Free money"})
    withdrawn = await post_form(client, "/keys", f"/admin/packs/{pack.id}/deactivate")

    assert (listing.status_code, added.status_code, withdrawn.status_code) == (403, 403, 403)
    await db.refresh(pack)
    assert [p.name for p in (await db.exec(select(CreditPack))).all()] == ["Starter"] and pack.active


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [("10", "usd", 1000), ("0.5", "eur", 50), ("12.50", "gbp", 1250), ("3", "jpy", 3), ("1.234", "kwd", 1234)],
)
def test_prices_become_minor_units_without_floats(text: str, currency: str, minor: int) -> None:
    assert parse_price(text, currency) == minor


def test_money_reads_as_people_write_it() -> None:
    assert format_money(123456, "usd") == "1,234.56 USD"
    assert format_money(5, "eur") == "0.05 EUR"
    assert format_money(1500, "jpy") == "1,500 JPY"
    with pytest.raises(BadRequest):
        parse_price("0.001", "usd")
