"""Credit packs, and buying them through Stripe Checkout: a purchase is credited once, however often it is confirmed.

A purchase is confirmed either by Stripe's webhook (`events.py`) or by the member's return to the hub from the
payment page; both go through `fulfil_checkout`, which claims the pending purchase with one guarded UPDATE and
posts with the key `stripe:checkout:<session id>`, so whichever comes second changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import User
from hub.accounts.service import require_admin
from hub.billing.models import CreditPack, Purchase, PurchaseStatus
from hub.billing.money import parse_currency, parse_price
from hub.billing.stripe_api import Json, StripeApi
from hub.db import utcnow
from hub.errors import NotFound, Unavailable
from hub.ledger.models import Kind
from hub.ledger.service import account_for, post, system_account
from hub.parsing import clean_text, format_credits, parse_credits

log = logging.getLogger("gpuclub.billing")


# Packs -------------------------------------------------------------------------------------------------


async def list_packs(db: AsyncSession, *, on_sale: bool = False) -> list[CreditPack]:
    query = select(CreditPack).order_by(col(CreditPack.active).desc(), col(CreditPack.amount), col(CreditPack.id))
    if on_sale:
        query = query.where(col(CreditPack.active).is_(True))
    return list((await db.exec(query)).all())


async def create_pack(
    db: AsyncSession, actor: User, *, name: str, credits: str, price: str, currency: str
) -> CreditPack:
    require_admin(actor)
    name = clean_text(name, what="pack name", max_length=80, required=True)
    micro = parse_credits(credits, what="number of credits")
    currency = parse_currency(currency)
    pack = CreditPack(name=name, credits=micro, amount=parse_price(price, currency), currency=currency)
    db.add(pack)
    await db.commit()
    return pack


async def deactivate_pack(db: AsyncSession, actor: User, pack_id: int) -> CreditPack:
    """Take a pack off sale; its purchases keep pointing at it."""
    require_admin(actor)
    pack = await db.get(CreditPack, pack_id)
    if pack is None:
        raise NotFound("There is no such credit pack.")
    pack.active = False
    db.add(pack)
    await db.commit()
    return pack


async def pack_on_sale(db: AsyncSession, pack_id: int) -> CreditPack:
    pack = await db.get(CreditPack, pack_id)
    if pack is None or not pack.active:
        raise NotFound("This credit pack is not on sale.")
    return pack


# Buying ------------------------------------------------------------------------------------------------


async def start_checkout(
    db: AsyncSession, api: StripeApi, user: User, pack_id: int, *, success_url: str, cancel_url: str
) -> str:
    """Open a Stripe payment page for the pack and remember it as a pending purchase; returns the page's URL."""
    pack = await pack_on_sale(db, pack_id)
    credits = format_credits(pack.credits).replace(",", "")
    session = await api.create_checkout(
        product=f"{pack.name} ({credits} credits)",
        amount=pack.amount,
        currency=pack.currency,
        success_url=success_url,
        cancel_url=cancel_url,
        client_reference_id=str(user.pk),
        metadata={"pack_id": str(pack.id), "user_id": str(user.pk), "credits": credits},
        customer_email=user.email,
    )
    session_id, url = session.get("id"), session.get("url")
    if not isinstance(session_id, str) or not isinstance(url, str):
        raise Unavailable("Stripe did not return a payment page. Nothing was charged; please try again.")
    db.add(
        Purchase(
            session_id=session_id,
            user_id=user.pk,
            pack_id=pack.id or 0,
            credits=pack.credits,
            amount=pack.amount,
            currency=pack.currency,
            payment_intent=id_of(session.get("payment_intent")),
        )
    )
    await db.commit()
    return url


async def purchases_of(db: AsyncSession, user: User, *, limit: int = 20) -> list[tuple[Purchase, str]]:
    """The member's latest purchases with their packs' names."""
    query = (
        select(Purchase, CreditPack.name)
        .join(CreditPack, col(CreditPack.id) == col(Purchase.pack_id))
        .where(Purchase.user_id == user.pk)
        .order_by(col(Purchase.created_at).desc(), col(Purchase.id).desc())
        .limit(limit)
    )
    return [(purchase, name) for purchase, name in (await db.exec(query)).all()]


async def confirm_return(db: AsyncSession, api: StripeApi, user: User, session_id: str) -> Purchase | None:
    """The member is back from Stripe: credit the purchase now if it is paid, rather than wait for the webhook."""
    purchase = await purchase_by(db, session_id=session_id)
    if purchase is None or purchase.user_id != user.pk:
        return None
    if purchase.status == PurchaseStatus.PENDING:
        try:
            session = await api.retrieve_checkout(session_id)
        except Unavailable:
            return purchase  # the webhook will credit it
        if await fulfil_checkout(db, session):
            await db.commit()
        await db.refresh(purchase)
    return purchase


# Crediting ---------------------------------------------------------------------------------------------


async def purchase_by(
    db: AsyncSession, *, session_id: str | None = None, payment_intent: str | None = None
) -> Purchase | None:
    if session_id is not None:
        return (await db.exec(select(Purchase).where(Purchase.session_id == session_id))).first()
    if payment_intent is not None:
        return (await db.exec(select(Purchase).where(Purchase.payment_intent == payment_intent))).first()
    return None


async def credit_purchase(db: AsyncSession, purchase: Purchase) -> bool:
    """Move the purchase's credits from the Stripe account to the member; False if already done. The caller commits."""
    bank = await system_account(db, Kind.STRIPE)
    member = await account_for(db, purchase.user_id)
    done = await post(
        db,
        key=f"stripe:checkout:{purchase.session_id}",
        kind="purchase",
        moves=[(bank, -purchase.credits), (member, purchase.credits)],
        memo=f"bought {format_credits(purchase.credits)} credits for {purchase.price} (purchase #{purchase.id})",
    )
    return done is not None


async def fulfil_checkout(db: AsyncSession, session: Json) -> bool:
    """Credit a paid Checkout Session's purchase; True when this call credited it. The caller commits."""
    session_id = session.get("id")
    if session.get("payment_status") != "paid" or not isinstance(session_id, str):
        return False
    purchase = await purchase_by(db, session_id=session_id)
    if purchase is None:
        log.warning("stripe: paid checkout session %s is not a purchase made here; nothing credited", session_id)
        return False
    if session.get("amount_total") != purchase.amount or session.get("currency") != purchase.currency:
        log.error(
            "stripe: checkout session %s was paid as %s %s, but purchase #%s costs %s; nothing credited",
            session_id,
            session.get("amount_total"),
            session.get("currency"),
            purchase.id,
            purchase.price,
        )
        return False
    claimed = await db.exec(
        update(Purchase)
        .where(col(Purchase.id) == purchase.id, col(Purchase.status) == PurchaseStatus.PENDING)
        .values(
            status=PurchaseStatus.PAID,
            paid_at=utcnow(),
            payment_intent=id_of(session.get("payment_intent")) or purchase.payment_intent,
        )
    )
    if claimed.rowcount != 1:
        return False  # credited already (by the webhook or by the member's return)
    return await credit_purchase(db, purchase)


def id_of(value: Any) -> str | None:
    """A Stripe reference is an id, or the object itself when it was expanded."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None
