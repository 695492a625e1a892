"""Stripe's webhook events: each handled at most once, its record and its effect written in one transaction.

    checkout.session.completed                 credit the purchase when it is paid
    checkout.session.async_payment_succeeded   the same, for payment methods that settle later
    charge.refunded                            take back credits in proportion to what was refunded so far
    charge.dispute.created                     take back what is left of the purchase
    charge.dispute.closed                      won (or an inquiry closed without a chargeback): give back exactly
                                               what the dispute took; lost: nothing changes
    anything else                              ignored

Taking back never leaves a member below zero (nor below what their requests in flight hold): what they have
already spent is written off and said so in the ledger memo.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.billing.models import Purchase, PurchaseStatus, StripeEvent
from hub.billing.money import format_money
from hub.billing.service import fulfil_checkout, id_of, purchase_by
from hub.billing.stripe_api import Json
from hub.db import utcnow
from hub.ledger.models import Account, Entry, Kind, LedgerTransaction
from hub.ledger.service import account_for, post, system_account
from hub.parsing import format_credits

log = logging.getLogger("gpuclub.billing")

CHECKOUT_PAID = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})
HANDLED = CHECKOUT_PAID | {"charge.refunded", "charge.dispute.created", "charge.dispute.closed"}
# `warning_closed`: an inquiry ended without becoming a chargeback, so the club keeps the money, as when it wins.
KEPT = frozenset({"won", "warning_closed"})
ATTEMPTS = 5  # a concurrent change to the same row makes a guarded UPDATE miss; read again and retry


async def handle_event(db: AsyncSession, event: Json, held_by: Callable[[int], int] = lambda _: 0) -> str:
    """Apply one verified event; returns what happened, in a few words. Commits only when something changed.

    `held_by(user_id)` is what the member's requests in flight hold (the hub's purses): taking credits back
    leaves those alone.
    """
    kind: str = event["type"]
    if kind not in HANDLED:
        return "ignored"
    if not await _first_delivery(db, event["id"], kind):
        await db.rollback()
        return "already handled"
    obj: Json = event["data"]["object"]
    if kind in CHECKOUT_PAID:
        outcome = "credited" if await fulfil_checkout(db, obj) else None
    elif kind == "charge.refunded":
        outcome = await _refund(db, obj, held_by)
    elif kind == "charge.dispute.closed":
        outcome = await _dispute_closed(db, obj)
    else:
        outcome = await _dispute(db, obj, held_by)
    if outcome is None:
        await db.rollback()  # nothing to do: no record either, so the event stays as if never received
        return "nothing to do"
    await db.commit()
    return outcome


async def _first_delivery(db: AsyncSession, event_id: str, kind: str) -> bool:
    """Insert the event's row unless it exists; a concurrent delivery waits on the key, then finds it."""
    insert = postgresql_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(StripeEvent)
        .values(id=event_id[:255], type=kind[:100], received_at=utcnow())
        .on_conflict_do_nothing()
        .returning(col(StripeEvent.id))
    )
    return (await db.exec(statement)).first() is not None


async def _refund(db: AsyncSession, charge: Json, held_by: Callable[[int], int]) -> str | None:
    charge_id, payment_intent = charge.get("id"), id_of(charge.get("payment_intent"))
    purchase = await purchase_by(db, payment_intent=payment_intent) if payment_intent else None
    if purchase is None or purchase.status == PurchaseStatus.PENDING:
        log.info(
            "stripe: refund of charge %s (payment %s) is not for a purchase credited here", charge_id, payment_intent
        )
        return None
    amount, refunded = _whole(charge.get("amount")), _whole(charge.get("amount_refunded"))
    if amount <= 0 or refunded <= 0:
        return None
    refunded = min(refunded, amount)
    outcome = await _take_back(
        db,
        purchase,
        held_by(purchase.user_id),
        purchase.credits * refunded // amount,
        key=f"stripe:refund:{charge_id}:{refunded}",
        kind="refund",
        why=f"refund of {format_money(refunded, purchase.currency)} in all",
        status=PurchaseStatus.REFUNDED if refunded >= amount else PurchaseStatus.PARTIALLY_REFUNDED,
        refunded_amount=refunded,
    )
    if outcome is not None:
        return outcome
    # Nothing left to take back (a dispute took it all): still remember the refund, so a dispute closed in the
    # club's favour gives back only what was not refunded.
    noted = await db.exec(
        update(Purchase)
        .where(col(Purchase.id) == purchase.id, col(Purchase.refunded_amount) < refunded)
        .values(refunded_amount=refunded)
    )
    return f"noted a refund of {format_money(refunded, purchase.currency)} in all" if noted.rowcount == 1 else None


async def _dispute(db: AsyncSession, dispute: Json, held_by: Callable[[int], int]) -> str | None:
    dispute_id, payment_intent = dispute.get("id"), id_of(dispute.get("payment_intent"))
    purchase = await purchase_by(db, payment_intent=payment_intent) if payment_intent else None
    if purchase is None or purchase.status == PurchaseStatus.PENDING:
        log.info("stripe: dispute %s (payment %s) is not for a purchase credited here", dispute_id, payment_intent)
        return None
    return await _take_back(
        db,
        purchase,
        held_by(purchase.user_id),
        purchase.credits,
        key=f"stripe:dispute:{dispute_id}",
        kind="dispute",
        why=f"dispute {dispute_id}",
        status=PurchaseStatus.DISPUTED,
    )


async def _dispute_closed(db: AsyncSession, dispute: Json) -> str | None:
    """A dispute the club won: undo what `_dispute` did, crediting back the credits it took (not what it wrote off)."""
    dispute_id, status = dispute.get("id"), dispute.get("status")
    if status not in KEPT or not isinstance(dispute_id, str):
        log.info("stripe: dispute %s closed as %s; the credits taken back stay taken", dispute_id, status)
        return None
    payment_intent = id_of(dispute.get("payment_intent"))
    purchase = await purchase_by(db, payment_intent=payment_intent) if payment_intent else None
    taking = await db.exec(select(LedgerTransaction).where(LedgerTransaction.key == f"stripe:dispute:{dispute_id}"))
    reversal = taking.first()
    if purchase is None or reversal is None:
        log.warning(
            "stripe: dispute %s was %s, but it took nothing back here; nothing to give back", dispute_id, status
        )
        return None
    member = await account_for(db, purchase.user_id)
    entries = await db.exec(
        select(func.coalesce(func.sum(Entry.amount), 0)).where(
            Entry.transaction_id == reversal.id, Entry.account_id == member.id
        )
    )
    taken = -int(entries.one())
    # Back to what refunds alone reversed; a later refund then takes back only its own share. A refund while the
    # charge was disputed (Stripe allows them during an inquiry) took nothing then: what it covers stays taken.
    by_refunds = _share(purchase, purchase.refunded_amount)
    before = _share(purchase, await _refunded_before(db, id_of(dispute.get("charge"))))
    taken = max(0, taken - max(0, by_refunds - before))
    # Compare-and-set: two `closed` events cannot both undo it.
    restored = await db.exec(
        update(Purchase)
        .where(col(Purchase.id) == purchase.id, col(Purchase.status) == PurchaseStatus.DISPUTED)
        .values(status=PurchaseStatus.DISPUTE_WON, reversed_credits=by_refunds)
    )
    if restored.rowcount != 1:
        return None  # given back already
    if taken == 0:
        return f"dispute closed as {status}; nothing to give back"
    bank = await system_account(db, Kind.STRIPE)
    ending = "won" if status == "won" else "closed without a chargeback"
    memo = f"dispute {dispute_id} {ending} for purchase #{purchase.id}: gave back {format_credits(taken)} credits"
    moves = [(bank, -taken), (member, taken)]
    if await post(db, key=f"stripe:dispute-won:{dispute_id}", kind="dispute_won", moves=moves, memo=memo) is None:
        return None
    return f"gave back {format_credits(taken)} credits"


async def _take_back(
    db: AsyncSession, purchase: Purchase, held: int, total: int, *, key: str, kind: str, why: str, **values: Any
) -> str | None:
    """Bring the purchase's reversed credits up to `total`, taking back only the difference not yet reversed."""
    for _ in range(ATTEMPTS):
        await db.refresh(purchase)
        seen = purchase.reversed_credits
        due = total - seen
        if due <= 0:
            return None
        # Compare-and-set: two refunds of the same charge arriving together cannot both reverse the same part.
        claimed = await db.exec(
            update(Purchase)
            .where(col(Purchase.id) == purchase.id, col(Purchase.reversed_credits) == seen)
            .values(reversed_credits=total, **values)
        )
        if claimed.rowcount == 1:
            break
    else:
        raise RuntimeError(f"purchase #{purchase.id} kept changing while a {kind} was applied")
    taken = await _reserve_up_to(db, purchase.user_id, due, held)
    memo = f"{why} for purchase #{purchase.id}: took back {format_credits(taken)} of {format_credits(due)} credits"
    if taken < due:
        memo += f"; shortfall {format_credits(due - taken)} credits (already spent, written off)"
        log.warning("stripe: %s", memo)
    bank = await system_account(db, Kind.STRIPE)
    member = await account_for(db, purchase.user_id)
    if await post(db, key=key, kind=kind, moves=[(member, -taken), (bank, taken)], memo=memo) is None:
        return None  # this exact reversal was posted before; the caller rolls everything back
    return f"took back {format_credits(taken)} credits" + (
        f", {format_credits(due - taken)} short" if taken < due else ""
    )


async def _reserve_up_to(db: AsyncSession, user_id: int, wanted: int, held: int) -> int:
    """How much of `wanted` the member has available, made safe to take.

    The same guarded UPDATE a hold uses checks the balance, so a request reserving credits at the same moment
    cannot leave the member holding more than they have. The caller posts the amount in this transaction.
    """
    account = await account_for(db, user_id)
    for _ in range(ATTEMPTS):
        await db.refresh(account)
        take = max(0, min(wanted, account.balance - account.held - held))
        if take == 0:
            return 0
        guarded = await db.exec(
            update(Account)
            .where(col(Account.id) == account.id, col(Account.balance) - col(Account.held) >= take + held)
            .values(held=Account.held + take)
        )
        if guarded.rowcount == 1:
            await db.exec(update(Account).where(col(Account.id) == account.id).values(held=Account.held - take))
            return take
    raise RuntimeError(f"account {account.id} kept changing while credits were taken back")


def _share(purchase: Purchase, refunded: int) -> int:
    """The purchase's credits that `refunded` cents (cumulative) stand for."""
    return purchase.credits * min(refunded, purchase.amount) // max(1, purchase.amount)


async def _refunded_before(db: AsyncSession, charge_id: str | None) -> int:
    """The cents refunded when the dispute came: the last refund posted (none is posted while disputed)."""
    if not charge_id:
        return 0
    prefix = f"stripe:refund:{charge_id}:"
    keys = await db.exec(
        select(LedgerTransaction.key).where(col(LedgerTransaction.key).startswith(prefix, autoescape=True))
    )
    return max((int(key.removeprefix(prefix)) for key in keys if key.removeprefix(prefix).isdigit()), default=0)


def _whole(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
