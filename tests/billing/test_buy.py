from __future__ import annotations

from dataclasses import replace

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.app import create_app
from hub.billing.models import Purchase
from hub.db import Database
from hub.settings import Settings
from tests.billing.steps import CREDIT, SECRET_KEY, add_pack, balance, buy, deliver, ledger_problems
from tests.conftest import BASE_URL, browser_for
from tests.support.fake_stripe import FakeStripe
from tests.support.people import Client, person, post_form, sign_in, text_of
from tests.support.processes import free_port


async def test_buying_a_pack_opens_a_checkout_session_for_its_price_and_sends_the_member_there(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice = await person(db, "alice@lab.example.org")
    pack = await add_pack(db, "Big pack", credits=250, amount=1250, currency="eur")
    await sign_in(client, db, alice)

    page = await client.get("/credits/buy")
    assert "Big pack" in text_of(page.text) and "12.50 EUR" in page.text
    response = await post_form(client, "/credits/buy", f"/credits/buy/{pack.id}")

    assert response.status_code == 303
    (sent,) = stripe_fake.calls("POST", "/v1/checkout/sessions")
    (session,) = stripe_fake.sessions.values()
    assert response.headers["location"] == session["url"]
    assert sent.headers["authorization"] == f"Bearer {SECRET_KEY}"
    assert sent.params["mode"] == "payment"
    (item,) = sent.params["line_items"]
    assert item["quantity"] == "1"
    assert item["price_data"]["unit_amount"] == "1250" and item["price_data"]["currency"] == "eur"
    assert "Big pack" in item["price_data"]["product_data"]["name"]
    assert sent.params["client_reference_id"] == str(alice.id)
    assert sent.params["metadata"] == {"pack_id": str(pack.id), "user_id": str(alice.id), "credits": "250"}
    assert sent.params["success_url"] == f"{BASE_URL}/credits/buy?session_id={{CHECKOUT_SESSION_ID}}"
    assert sent.params["cancel_url"] == f"{BASE_URL}/credits/buy?cancelled=1"
    purchase = (await db.exec(select(Purchase))).one()
    assert (purchase.session_id, purchase.user_id, purchase.pack_id) == (session["id"], alice.id, pack.id)
    assert (purchase.credits, purchase.amount, purchase.currency, purchase.status) == (
        250 * CREDIT,
        1250,
        "eur",
        "pending",
    )
    assert await balance(database, alice) == 0
    assert "pending" in text_of((await client.get("/credits/buy")).text)


async def test_back_from_a_paid_checkout_the_credits_are_there_and_the_webhook_adds_nothing_more(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice = await person(db, "alice@lab.example.org")
    pack = await add_pack(db, credits=100)
    await sign_in(client, db, alice)
    session_id = await buy(client, stripe_fake, pack)
    completed = stripe_fake.pay(session_id)

    back = await client.get(f"/credits/buy?session_id={session_id}")

    assert back.status_code == 200
    assert "The credits are in your balance" in text_of(back.text)
    assert len(stripe_fake.calls("GET", f"/v1/checkout/sessions/{session_id}")) == 1
    assert await balance(database, alice) == 100 * CREDIT
    assert (await deliver(client, completed)).status_code == 200
    assert await balance(database, alice) == 100 * CREDIT
    assert await ledger_problems(database) == []


async def test_back_before_stripe_has_the_money_says_the_credits_will_follow(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice = await person(db, "alice@lab.example.org")
    pack = await add_pack(db)
    await sign_in(client, db, alice)
    session_id = await buy(client, stripe_fake, pack)
    stripe_fake.pay(session_id, paid=False)

    back = await client.get(f"/credits/buy?session_id={session_id}")

    assert "as soon as Stripe confirms the payment" in text_of(back.text)
    assert await balance(database, alice) == 0


async def test_someone_elses_checkout_session_credits_nobody(
    client: Client, their_browser: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice = await person(db, "alice@lab.example.org")
    bob = await person(db, "bob@lab.example.org")
    pack = await add_pack(db)
    await sign_in(client, db, alice)
    session_id = await buy(client, stripe_fake, pack)
    stripe_fake.pay(session_id)
    await sign_in(their_browser, db, bob)

    seen = await their_browser.get(f"/credits/buy?session_id={session_id}")

    assert seen.status_code == 200 and "Thank you" not in seen.text
    assert stripe_fake.calls("GET", f"/v1/checkout/sessions/{session_id}") == []
    assert await balance(database, alice) == 0 and await balance(database, bob) == 0


async def test_a_cancelled_checkout_says_nothing_was_charged(
    client: Client, db: AsyncSession, stripe_fake: FakeStripe
) -> None:
    await sign_in(client, db, await person(db, "alice@lab.example.org"))

    back = await client.get("/credits/buy?cancelled=1")

    assert "Checkout was cancelled; nothing was charged." in text_of(back.text)


async def test_only_packs_on_sale_are_offered_and_can_be_bought(
    client: Client, db: AsyncSession, stripe_fake: FakeStripe
) -> None:
    await sign_in(client, db, await person(db, "alice@lab.example.org"))
    await add_pack(db, "Current")
    old = await add_pack(db, "Retired")
    old.active = False
    db.add(old)
    await db.commit()

    page = text_of((await client.get("/credits/buy")).text)
    refused = await post_form(client, "/credits/buy", f"/credits/buy/{old.id}")

    assert "Current" in page and "Retired" not in page
    assert refused.status_code == 404 and "not on sale" in refused.text
    assert stripe_fake.requests == []
    assert (await db.exec(select(Purchase))).all() == []


async def test_when_stripe_refuses_the_member_gets_a_clear_message_and_nothing_is_recorded(
    client: Client, db: AsyncSession, stripe_fake: FakeStripe
) -> None:
    await sign_in(client, db, await person(db, "alice@lab.example.org"))
    pack = await add_pack(db)
    stripe_fake.fail_next = (400, {"message": "Invalid currency: usd.", "type": "invalid_request_error"})

    response = await post_form(client, "/credits/buy", f"/credits/buy/{pack.id}")

    assert response.status_code == 503
    assert "Stripe refused the payment: Invalid currency: usd. Nothing was charged" in text_of(response.text)
    assert (await db.exec(select(Purchase))).all() == []


async def test_when_stripe_cannot_be_reached_the_member_is_told_and_nothing_is_recorded(
    settings: Settings, database: Database, db: AsyncSession
) -> None:
    assert settings.stripe is not None
    unreachable = replace(settings.stripe, api_base=f"http://127.0.0.1:{free_port()}")
    app = create_app(replace(settings, stripe=unreachable), database)
    pack = await add_pack(db)
    async with browser_for(app) as browser:
        await sign_in(browser, db, await person(db, "alice@lab.example.org"))

        response = await post_form(browser, "/credits/buy", f"/credits/buy/{pack.id}")

    assert response.status_code == 503
    assert "Stripe could not be reached. Nothing was charged" in text_of(response.text)
    assert (await db.exec(select(Purchase))).all() == []


async def test_signed_out_visitors_are_sent_to_sign_in(client: Client) -> None:
    response = await client.get("/credits/buy", follow_redirects=False)

    assert response.status_code == 303 and response.headers["location"] == "/"


async def test_with_stripe_keys_the_credits_page_offers_buying(client: Client, db: AsyncSession) -> None:
    await sign_in(client, db, await person(db, "alice@lab.example.org"))

    page = await client.get("/credits")

    assert 'href="/credits/buy"' in page.text


async def test_without_stripe_keys_buying_does_not_exist_and_is_not_offered(
    settings: Settings, database: Database, db: AsyncSession
) -> None:
    app = create_app(replace(settings, stripe=None), database)
    alice = await person(db, "alice@lab.example.org")
    pack = await add_pack(db)
    async with browser_for(app) as browser:
        await sign_in(browser, db, alice)

        page = await browser.get("/credits/buy")
        bought = await post_form(browser, "/keys", f"/credits/buy/{pack.id}")
        webhook = await browser.post("/stripe/webhook", content=b"{}")
        pages = [(await browser.get(path)).text for path in ("/dashboard", "/credits", "/keys")]

    assert page.status_code == 404 and bought.status_code == 404 and webhook.status_code == 404
    assert all("/credits/buy" not in html for html in pages)
    assert (await db.exec(select(Purchase))).all() == []
