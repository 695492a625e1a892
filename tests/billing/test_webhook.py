"""Stripe's webhook: verified, idempotent, and the only way money events reach the ledger."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import func
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import User
from hub.billing.models import Purchase, StripeEvent
from hub.db import Database
from hub.ledger.grants import deduct
from hub.ledger.models import LedgerTransaction
from tests.billing.steps import CREDIT, add_pack, balance, buy, deliver, ledger_problems
from tests.support.fake_stripe import FakeStripe, event
from tests.support.people import Client, person, sign_in


async def bought(client: Client, db: AsyncSession, stripe: FakeStripe, *, credits: int = 100) -> tuple[User, str]:
    """Alice, signed in, with a purchase of a 10.00 USD pack that Stripe has not confirmed yet."""
    alice = await person(db, "alice@lab.example.org")
    pack = await add_pack(db, credits=credits, amount=1000)
    await sign_in(client, db, alice)
    return alice, await buy(client, stripe, pack)


async def counts(db: AsyncSession) -> tuple[int, int]:
    """How many Stripe events and ledger transactions are recorded."""
    events = (await db.exec(select(func.count()).select_from(StripeEvent))).one()
    transactions = (await db.exec(select(func.count()).select_from(LedgerTransaction))).one()
    return events, transactions


async def test_a_paid_checkout_credits_the_member_once_however_often_stripe_sends_it(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice, session_id = await bought(client, db, stripe_fake)
    completed = stripe_fake.pay(session_id)

    first = await deliver(client, completed)
    again = await deliver(client, completed)

    assert first.status_code == 200 and first.json()["outcome"] == "credited"
    assert again.status_code == 200 and again.json()["outcome"] == "already handled"
    assert await balance(database, alice) == 100 * CREDIT
    purchase = (await db.exec(select(Purchase))).one()
    assert purchase.status == "paid" and purchase.payment_intent == completed["data"]["object"]["payment_intent"]
    assert await counts(db) == (1, 1)
    assert await ledger_problems(database) == []


async def test_two_deliveries_of_the_same_event_at_the_same_moment_credit_once(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice, session_id = await bought(client, db, stripe_fake)
    completed = stripe_fake.pay(session_id)

    answers = await asyncio.gather(deliver(client, completed), deliver(client, completed))

    assert [a.status_code for a in answers] == [200, 200]
    assert sorted(a.json()["outcome"] for a in answers) == ["already handled", "credited"]
    assert await balance(database, alice) == 100 * CREDIT
    assert await ledger_problems(database) == []


async def test_an_unpaid_checkout_credits_nothing_until_the_payment_goes_through(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice, session_id = await bought(client, db, stripe_fake)

    unpaid = await deliver(client, stripe_fake.pay(session_id, paid=False))

    assert unpaid.status_code == 200 and unpaid.json()["outcome"] == "nothing to do"
    assert await balance(database, alice) == 0
    assert await counts(db) == (0, 0)
    assert (await db.exec(select(Purchase))).one().status == "pending"

    settled = await deliver(client, stripe_fake.settle(session_id))

    assert settled.json()["outcome"] == "credited"
    assert await balance(database, alice) == 100 * CREDIT
    assert await ledger_problems(database) == []


async def test_a_wrong_signature_is_refused_and_nothing_is_written(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice, session_id = await bought(client, db, stripe_fake)
    completed = stripe_fake.pay(session_id)

    forged = await deliver(client, completed, secret="whsec_someone_else")
    unsigned = await client.post("/stripe/webhook", json=completed)

    assert forged.status_code == 400 and "The Stripe signature does not check out" in forged.text
    assert unsigned.status_code == 400 and "no Stripe-Signature header" in unsigned.text
    assert await balance(database, alice) == 0
    assert await counts(db) == (0, 0)


async def test_a_delivery_signed_more_than_five_minutes_ago_is_refused(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice, session_id = await bought(client, db, stripe_fake)

    stale = await deliver(client, stripe_fake.pay(session_id), timestamp=int(time.time()) - 301)

    assert stale.status_code == 400 and "Timestamp outside the tolerance zone" in stale.text
    assert await balance(database, alice) == 0
    assert await counts(db) == (0, 0)


async def test_refunds_take_back_credits_in_proportion_to_what_was_refunded_so_far(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice, session_id = await bought(client, db, stripe_fake)
    await deliver(client, stripe_fake.pay(session_id))

    partial = stripe_fake.refund(session_id, 250)  # 2.50 of 10.00
    assert (await deliver(client, partial)).json()["outcome"] == "took back 25 credits"
    assert (await deliver(client, partial)).json()["outcome"] == "already handled"
    assert await balance(database, alice) == 75 * CREDIT
    assert (await db.exec(select(Purchase))).one().status == "partially_refunded"

    await deliver(client, stripe_fake.refund(session_id, 1000))  # the rest: 10.00 refunded in all

    assert await balance(database, alice) == 0
    db.expire_all()
    purchase = (await db.exec(select(Purchase))).one()
    assert (purchase.status, purchase.refunded_amount, purchase.reversed_credits) == ("refunded", 1000, 100 * CREDIT)
    assert await ledger_problems(database) == []


async def test_two_refunds_arriving_together_take_back_the_purchase_once(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice, session_id = await bought(client, db, stripe_fake)
    await deliver(client, stripe_fake.pay(session_id))
    partial, full = stripe_fake.refund(session_id, 400), stripe_fake.refund(session_id, 1000)

    answers = await asyncio.gather(deliver(client, full), deliver(client, partial))

    assert [a.status_code for a in answers] == [200, 200]
    assert await balance(database, alice) == 0
    db.expire_all()
    assert (await db.exec(select(Purchase))).one().reversed_credits == 100 * CREDIT
    assert await ledger_problems(database) == []


async def test_a_refund_never_takes_a_member_below_zero_and_says_what_was_short(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice, session_id = await bought(client, db, stripe_fake)
    await deliver(client, stripe_fake.pay(session_id))
    await deduct(db, None, alice, 90 * CREDIT, reason="spent on requests")

    answer = await deliver(client, stripe_fake.refund(session_id, 1000))

    assert answer.json()["outcome"] == "took back 10 credits, 90 short"
    assert await balance(database, alice) == 0
    refund = (await db.exec(select(LedgerTransaction).where(LedgerTransaction.kind == "refund"))).one()
    assert "took back 10 of 100 credits" in refund.memo and "shortfall 90 credits" in refund.memo
    assert await ledger_problems(database) == []


async def test_a_dispute_takes_back_what_is_left_of_the_purchase(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice, session_id = await bought(client, db, stripe_fake)
    await deliver(client, stripe_fake.pay(session_id))
    await deliver(client, stripe_fake.refund(session_id, 300))  # 30 credits back already
    assert await balance(database, alice) == 70 * CREDIT

    disputed = await deliver(client, stripe_fake.dispute(session_id))

    assert disputed.json()["outcome"] == "took back 70 credits"
    assert await balance(database, alice) == 0
    db.expire_all()
    assert (await db.exec(select(Purchase))).one().status == "disputed"
    assert await ledger_problems(database) == []


async def test_a_refund_for_a_charge_the_hub_does_not_know_changes_nothing(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice, session_id = await bought(client, db, stripe_fake)
    await deliver(client, stripe_fake.pay(session_id))
    before = await counts(db)
    stranger = {"id": "ch_elsewhere", "object": "charge", "amount": 500, "amount_refunded": 500}

    answer = await deliver(client, event("charge.refunded", stranger | {"payment_intent": "pi_elsewhere"}))

    assert answer.status_code == 200 and answer.json()["outcome"] == "nothing to do"
    assert await counts(db) == before
    assert await balance(database, alice) == 100 * CREDIT


async def test_other_events_are_acknowledged_and_ignored(
    client: Client, db: AsyncSession, stripe_fake: FakeStripe
) -> None:
    answer = await deliver(client, event("customer.created", {"id": "cus_1", "object": "customer"}))

    assert answer.status_code == 200 and answer.json()["outcome"] == "ignored"
    assert await counts(db) == (0, 0)
