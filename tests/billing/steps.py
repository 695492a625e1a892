"""What the billing tests do over and over: add a pack, buy it, deliver Stripe's events, read the ledger."""

from __future__ import annotations

import httpx
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import User
from hub.billing.models import CreditPack
from hub.db import Database
from hub.ledger import service as ledger
from tests.support.fake_stripe import FakeStripe, Json, signed
from tests.support.people import post_form

SECRET_KEY = "sk_test_gpuclub_billing"
WEBHOOK_SECRET = "whsec_test_gpuclub_billing"
CREDIT = 1_000_000


async def add_pack(
    db: AsyncSession, name: str = "Starter", *, credits: int = 100, amount: int = 1000, currency: str = "usd"
) -> CreditPack:
    pack = CreditPack(name=name, credits=credits * CREDIT, amount=amount, currency=currency)
    db.add(pack)
    await db.commit()
    return pack


async def buy(client: httpx.AsyncClient, stripe: FakeStripe, pack: CreditPack) -> str:
    """Press Buy on the pack, as the signed-in member; returns the Checkout Session the hub opened."""
    response = await post_form(client, "/credits/buy", f"/credits/buy/{pack.id}")
    assert response.status_code == 303, response.text
    session_id = response.headers["location"].split("/c/pay/")[1].split("#")[0]
    assert session_id in stripe.sessions
    return session_id


async def deliver(
    client: httpx.AsyncClient, event: Json, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None
) -> httpx.Response:
    """Stripe posting a signed event to the webhook."""
    body, headers = signed(event, secret, timestamp=timestamp)
    return await client.post("/stripe/webhook", content=body, headers=headers)


async def balance(database: Database, user: User) -> int:
    """The member's balance in micro-credits, read afresh."""
    async with database.session() as db:
        return (await ledger.balance_of(db, user.pk)).balance


async def ledger_problems(database: Database) -> list[str]:
    async with database.session() as db:
        return await ledger.check(db)
