"""`charge.dispute.closed`: a dispute the club wins gives back what it took, once; a lost one changes nothing."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy import func
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import User
from hub.billing.models import Purchase, StripeEvent
from hub.db import Database
from hub.ledger.grants import deduct
from hub.ledger.models import LedgerTransaction
from tests.billing.steps import CREDIT, add_pack, balance, buy, deliver, ledger_problems
from tests.support.fake_stripe import FakeStripe, Json, event
from tests.support.people import Client, person, sign_in, text_of


async def disputed(
    client: Client, db: AsyncSession, stripe: FakeStripe, *, refunded: int = 0
) -> tuple[User, str, Json]:
    """Alice bought a 100-credit pack for 10.00 USD, `refunded` cents came back to her, then she disputed the charge."""
    alice = await person(db, "alice@lab.example.org")
    pack = await add_pack(db, credits=100, amount=1000)
    await sign_in(client, db, alice)
    session_id = await buy(client, stripe, pack)
    await deliver(client, stripe.pay(session_id))
    if refunded:
        await deliver(client, stripe.refund(session_id, refunded))
    created = stripe.dispute(session_id)
    return alice, session_id, created["data"]["object"]


def closed(dispute: Json, status: str) -> Json:
    """The event Stripe sends when the bank decides: the same dispute, now `won`, `lost` or `warning_closed`."""
    return event("charge.dispute.closed", dispute | {"status": status})


async def counts(db: AsyncSession) -> tuple[int, int]:
    events = (await db.exec(select(func.count()).select_from(StripeEvent))).one()
    transactions = (await db.exec(select(func.count()).select_from(LedgerTransaction))).one()
    return events, transactions


async def the_purchase(db: AsyncSession) -> Purchase:
    purchase = (await db.exec(select(Purchase))).one()
    await db.refresh(purchase)  # read afresh: the webhook changed it in another session
    return purchase


async def test_a_won_dispute_gives_back_what_it_took_and_the_member_sees_it(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice, session_id, dispute = await disputed(client, db, stripe_fake, refunded=300)  # 30 credits refunded first
    taken = await deliver(client, event("charge.dispute.created", dispute))
    assert taken.json()["outcome"] == "took back 70 credits"
    assert await balance(database, alice) == 0

    won = await deliver(client, closed(dispute, "won"))

    assert won.status_code == 200 and won.json()["outcome"] == "gave back 70 credits"
    assert await balance(database, alice) == 70 * CREDIT
    purchase = await the_purchase(db)
    assert (purchase.status, purchase.reversed_credits) == ("dispute_won", 30 * CREDIT)
    assert await ledger_problems(database) == []

    history = text_of((await client.get("/credits")).text)
    assert f"dispute {dispute['id']} won for purchase #{purchase.id}: gave back 70 credits" in history
    assert "dispute won" in text_of((await client.get("/credits/buy")).text)

    # The purchase is whole again: refunding the rest later takes back only the rest.
    refunded = await deliver(client, stripe_fake.refund(session_id, 1000))
    assert refunded.json()["outcome"] == "took back 70 credits"
    assert await balance(database, alice) == 0
    assert await ledger_problems(database) == []


async def test_a_won_dispute_gives_back_only_what_was_taken_not_what_was_written_off(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice, _, dispute = await disputed(client, db, stripe_fake)
    await deduct(db, None, alice, 90 * CREDIT, reason="spent on requests")
    taken = await deliver(client, event("charge.dispute.created", dispute))
    assert taken.json()["outcome"] == "took back 10 credits, 90 short"

    won = await deliver(client, closed(dispute, "won"))

    assert won.json()["outcome"] == "gave back 10 credits"
    assert await balance(database, alice) == 10 * CREDIT
    assert await ledger_problems(database) == []


async def test_the_same_closing_twice_or_two_closings_of_one_dispute_give_back_once(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice, _, dispute = await disputed(client, db, stripe_fake)
    await deliver(client, event("charge.dispute.created", dispute))
    won = closed(dispute, "won")

    first = await deliver(client, won)
    again = await deliver(client, won)
    later = await deliver(client, closed(dispute, "won"))  # Stripe's next event about the same dispute

    assert first.json()["outcome"] == "gave back 100 credits"
    assert again.json()["outcome"] == "already handled"
    assert later.json()["outcome"] == "nothing to do"
    assert await balance(database, alice) == 100 * CREDIT
    given_back = select(func.count()).where(LedgerTransaction.kind == "dispute_won")
    assert (await db.exec(given_back)).one() == 1
    assert await ledger_problems(database) == []


async def test_two_closings_arriving_together_give_back_once(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice, _, dispute = await disputed(client, db, stripe_fake)
    await deliver(client, event("charge.dispute.created", dispute))

    answers = await asyncio.gather(*(deliver(client, closed(dispute, "won")) for _ in range(3)))

    assert [a.status_code for a in answers] == [200] * 3
    assert sorted(a.json()["outcome"] for a in answers) == ["gave back 100 credits"] + ["nothing to do"] * 2
    assert await balance(database, alice) == 100 * CREDIT
    assert await ledger_problems(database) == []


async def test_an_inquiry_closed_without_a_chargeback_gives_back_too(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice, _, dispute = await disputed(client, db, stripe_fake)
    inquiry = dispute | {"status": "warning_needs_response"}
    await deliver(client, event("charge.dispute.created", inquiry))

    answer = await deliver(client, closed(inquiry, "warning_closed"))

    assert answer.json()["outcome"] == "gave back 100 credits"
    assert await balance(database, alice) == 100 * CREDIT
    assert await ledger_problems(database) == []


async def test_a_lost_dispute_changes_nothing(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice, _, dispute = await disputed(client, db, stripe_fake)
    await deliver(client, event("charge.dispute.created", dispute))
    before = await counts(db)

    lost = await deliver(client, closed(dispute, "lost"))

    assert lost.status_code == 200 and lost.json()["outcome"] == "nothing to do"
    assert await counts(db) == before
    assert await balance(database, alice) == 0
    purchase = await the_purchase(db)
    assert (purchase.status, purchase.reversed_credits) == ("disputed", 100 * CREDIT)


async def test_a_won_dispute_that_took_nothing_here_changes_nothing_and_is_logged(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe, caplog: pytest.LogCaptureFixture
) -> None:
    alice, _, dispute = await disputed(client, db, stripe_fake)  # Stripe never delivered charge.dispute.created
    stranger = dispute | {"id": "dp_elsewhere", "payment_intent": "pi_elsewhere"}
    before = await counts(db)

    with caplog.at_level(logging.INFO, logger="gpuclub.billing"):
        unseen = await deliver(client, closed(dispute, "won"))
        unknown = await deliver(client, closed(stranger, "won"))

    assert [unseen.json()["outcome"], unknown.json()["outcome"]] == ["nothing to do"] * 2
    assert await counts(db) == before
    assert await balance(database, alice) == 100 * CREDIT
    assert (await the_purchase(db)).status == "paid"
    logged = [r.getMessage() for r in caplog.records if "nothing to give back" in r.getMessage()]
    assert [dispute["id"] in logged[0], "dp_elsewhere" in logged[1]] == [True, True]


async def test_a_refund_during_an_inquiry_stays_refunded_when_the_inquiry_closes(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice, session_id, dispute = await disputed(client, db, stripe_fake)
    inquiry = dispute | {"status": "warning_needs_response"}
    await deliver(client, event("charge.dispute.created", inquiry))
    refunded = await deliver(client, stripe_fake.refund(session_id, 300))  # 3.00 of 10.00 back in cash

    answer = await deliver(client, closed(inquiry, "warning_closed"))

    assert refunded.json()["outcome"] == "noted a refund of 3.00 USD in all"
    assert answer.json()["outcome"] == "gave back 70 credits"
    assert await balance(database, alice) == 70 * CREDIT
    later = await deliver(client, stripe_fake.refund(session_id, 1000))
    assert later.json()["outcome"] == "took back 70 credits"
    assert await balance(database, alice) == 0
    assert await ledger_problems(database) == []


async def test_a_refund_event_after_the_dispute_and_a_refund_before_it_both_stay_refunded_when_it_is_won(
    client: Client, db: AsyncSession, database: Database, stripe_fake: FakeStripe
) -> None:
    alice, session_id, dispute = await disputed(client, db, stripe_fake, refunded=200)  # 20 credits back first
    await deliver(client, event("charge.dispute.created", dispute))
    await deliver(client, stripe_fake.refund(session_id, 500))  # Stripe's event for 3.00 more, arriving late

    won = await deliver(client, closed(dispute, "won"))

    assert won.json()["outcome"] == "gave back 50 credits"
    assert await balance(database, alice) == 50 * CREDIT
    purchase = await the_purchase(db)
    assert (purchase.status, purchase.refunded_amount, purchase.reversed_credits) == ("dispute_won", 500, 50 * CREDIT)
    assert await ledger_problems(database) == []
