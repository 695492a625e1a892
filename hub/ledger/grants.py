"""Credits given and taken by admins, and the monthly allowance, each one idempotent by its key."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import Status, User
from hub.accounts.service import require_admin
from hub.db import utcnow
from hub.errors import BadRequest
from hub.ledger.models import Account, Kind, LedgerTransaction
from hub.ledger.service import account_for, post, system_account
from hub.parsing import clean_text, format_credits
from hub.quotas.models import MemberPolicy
from hub.quotas.service import default_allowance


async def grant(
    db: AsyncSession, actor: User | None, user: User, amount: int, *, reason: str = "", key: str | None = None
) -> LedgerTransaction | None:
    """Give `amount` micro-credits to `user`; None if `key` was already used (nothing happens twice)."""
    if actor is not None:
        require_admin(actor)
    if amount <= 0:
        raise BadRequest("The amount must be more than zero.")
    reason = clean_text(reason, what="reason", max_length=300)
    issuance = await system_account(db, Kind.ISSUANCE)
    member = await account_for(db, user.pk)
    done = await post(
        db,
        key=key or f"grant:{uuid.uuid4().hex}",
        kind="grant",
        moves=[(issuance, -amount), (member, amount)],
        memo=reason or "granted by an admin",
        created_by=actor.id if actor else None,
    )
    await db.commit()
    return done


async def deduct(
    db: AsyncSession,
    actor: User | None,
    user: User,
    amount: int,
    *,
    reason: str = "",
    held: int = 0,
    key: str | None = None,
) -> LedgerTransaction | None:
    """Take credits back, never more than the member has available; None if `key` was already used (a form sent
    twice takes once).

    `held` is what the member's requests in flight hold (the hub's purses know it): those credits stay with them.
    """
    if actor is not None:
        require_admin(actor)
    if amount <= 0:
        raise BadRequest("The amount must be more than zero.")
    reason = clean_text(reason, what="reason", max_length=300)
    member = await account_for(db, user.pk)
    # Reserve the amount first with the same guard a hold uses, so a deduction cannot overdraw either.
    taken = await db.exec(
        update(Account)
        .where(col(Account.id) == member.id, col(Account.balance) - col(Account.held) >= amount + held)
        .values(held=Account.held + amount)
    )
    if taken.rowcount != 1:  # nothing was changed, so there is nothing to roll back
        raise BadRequest(f"{user.display_name} does not have {format_credits(amount)} credits available to deduct.")
    await db.exec(update(Account).where(col(Account.id) == member.id).values(held=Account.held - amount))
    issuance = await system_account(db, Kind.ISSUANCE)
    done = await post(
        db,
        key=key or f"deduct:{uuid.uuid4().hex}",
        kind="deduct",
        moves=[(member, -amount), (issuance, amount)],
        memo=reason or "deducted by an admin",
        created_by=actor.id if actor else None,
    )
    await db.commit()
    return done


async def grant_monthly_allowances(db: AsyncSession, now: datetime | None = None) -> int:
    """Give every active member this month's allowance, once per calendar month; returns how many were granted."""
    month = (now or utcnow()).strftime("%Y-%m")
    default = await default_allowance(db)
    overrides = {p.user_id: p.allowance for p in (await db.exec(select(MemberPolicy))).all()}
    granted = 0
    for user in (await db.exec(select(User).where(User.status == Status.ACTIVE))).all():
        amount = overrides.get(user.pk)
        amount = default if amount is None else amount
        if amount > 0 and await grant(
            db, None, user, amount, reason=f"monthly allowance {month}", key=f"allowance:{user.pk}:{month}"
        ):
            granted += 1
    return granted
