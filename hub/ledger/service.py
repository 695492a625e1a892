"""Moving credits: one balanced transaction per movement, idempotent by key; holds that can never overdraw.

Every write here happens inside the caller's database transaction; callers commit once, so a movement and the
cached balances it changes land together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.db import insert_new, utcnow
from hub.errors import InsufficientCredits
from hub.ledger.models import Account, Entry, Hold, Kind, LedgerTransaction
from hub.parsing import format_credits


@dataclass(frozen=True)
class Balance:
    balance: int
    held: int

    @property
    def available(self) -> int:
        return self.balance - self.held


async def account_for(db: AsyncSession, user_id: int) -> Account:
    """The member's account, opened on first use."""
    found = (await db.exec(select(Account).where(Account.user_id == user_id))).first()
    if found is not None:
        return found
    # Opened at the same moment by another request? Then the insert does nothing and we read theirs.
    await insert_new(
        db, Account, {"kind": Kind.MEMBER, "user_id": user_id, "balance": 0, "held": 0, "created_at": utcnow()}
    )
    return (await db.exec(select(Account).where(Account.user_id == user_id))).one()


async def system_account(db: AsyncSession, kind: Kind) -> Account:
    found = (await db.exec(select(Account).where(Account.kind == kind, col(Account.user_id).is_(None)))).first()
    if found is not None:
        return found
    account = Account(kind=kind)
    db.add(account)
    await db.flush()
    return account


async def balance_of(db: AsyncSession, user_id: int) -> Balance:
    account = (await db.exec(select(Account).where(Account.user_id == user_id))).first()
    return Balance(account.balance, account.held) if account else Balance(0, 0)


async def post(
    db: AsyncSession,
    *,
    key: str,
    kind: str,
    moves: Sequence[tuple[Account, int]],
    memo: str = "",
    created_by: int | None = None,
) -> LedgerTransaction | None:
    """Record one movement (entries summing to zero); None when `key` was already recorded (a no-op)."""
    moves = [(account, amount) for account, amount in moves if amount != 0]
    if sum(amount for _, amount in moves) != 0:
        raise ValueError("a transaction's entries must sum to zero")
    values = {"key": key[:200], "kind": kind, "memo": memo[:500], "created_by": created_by, "created_at": utcnow()}
    transaction_id = await insert_new(db, LedgerTransaction, values)
    if transaction_id is None:
        return None
    for account, amount in moves:
        db.add(Entry(transaction_id=transaction_id, account_id=account.id or 0, amount=amount))
        await db.exec(update(Account).where(col(Account.id) == account.id).values(balance=Account.balance + amount))
    await db.flush()
    return await db.get(LedgerTransaction, transaction_id)


# Holds -------------------------------------------------------------------------------------------------


async def place_hold(db: AsyncSession, user_id: int, amount: int, request_id: str, *, seconds: float) -> Hold:
    """Reserve `amount` or refuse; one guarded UPDATE, so concurrent requests can never overdraw."""
    account = await account_for(db, user_id)
    result = await db.exec(
        update(Account)
        .where(col(Account.id) == account.id, col(Account.balance) - col(Account.held) >= amount)
        .values(held=Account.held + amount)
    )
    if result.rowcount != 1:  # nothing was changed, so there is nothing to roll back
        current = await balance_of(db, user_id)
        raise InsufficientCredits(
            f"This request needs {format_credits(amount)} credits reserved, but you have "
            f"{format_credits(max(current.available, 0))} available. Ask an admin for credits or buy some."
        )
    hold = Hold(
        request_id=request_id,
        account_id=account.id or 0,
        amount=amount,
        expires_at=utcnow() + timedelta(seconds=seconds),
    )
    db.add(hold)
    await db.commit()
    return hold


async def _close_hold(db: AsyncSession, request_id: str) -> Hold | None:
    """Mark the hold released and give its amount back to the account; None if already closed."""
    hold = (await db.exec(select(Hold).where(Hold.request_id == request_id))).first()
    if hold is None:
        return None
    result = await db.exec(
        update(Hold).where(col(Hold.id) == hold.id, col(Hold.released_at).is_(None)).values(released_at=utcnow())
    )
    if result.rowcount != 1:
        return None
    await db.exec(update(Account).where(col(Account.id) == hold.account_id).values(held=Account.held - hold.amount))
    return hold


async def release(db: AsyncSession, request_id: str) -> None:
    """The request cost nothing (it failed, or ran on the member's own GPU); the caller commits."""
    await _close_hold(db, request_id)


@dataclass(frozen=True)
class Charge:
    consumer_id: int
    provider_id: int | None  # the agent's owner; None when nobody earns (e.g. the agent is gone)
    cost: int
    fee_bps: int  # the club's fee in basis points (1% = 100)


async def settle(db: AsyncSession, request_id: str, charge: Charge, *, memo: str) -> int:
    """Release the hold and post what was delivered; returns what was charged. The caller commits.

    The consumer is never taken below zero: anything beyond the balance is not charged (policy: balances stay
    at or above zero).
    """
    await _close_hold(db, request_id)
    consumer = await account_for(db, charge.consumer_id)
    await db.refresh(consumer)
    charged = max(0, min(charge.cost, consumer.balance))
    if charged and charge.provider_id is not None and charge.provider_id != charge.consumer_id:
        provider = await account_for(db, charge.provider_id)
        fee = charged * charge.fee_bps // 10_000
        club = await system_account(db, Kind.CLUB)
        moves = [(consumer, -charged), (provider, charged - fee), (club, fee)]
        if await post(db, key=f"request:{request_id}", kind="usage", moves=moves, memo=memo) is None:
            charged = 0
    else:
        charged = 0
    return charged


async def sweep_expired(db: AsyncSession) -> int:
    """Release holds left behind by a crash; returns how many."""
    expired = (
        await db.exec(select(Hold.request_id).where(col(Hold.released_at).is_(None), Hold.expires_at <= utcnow()))
    ).all()
    for request_id in expired:
        await _close_hold(db, request_id)
    await db.commit()
    return len(expired)


# Checking ----------------------------------------------------------------------------------------------


async def check(db: AsyncSession) -> list[str]:
    """Every broken invariant, in plain words; an empty list means the ledger is sound."""
    problems: list[str] = []
    unbalanced = (
        await db.exec(
            select(Entry.transaction_id, func.sum(Entry.amount))
            .group_by(col(Entry.transaction_id))
            .having(func.sum(Entry.amount) != 0)
        )
    ).all()
    problems += [f"transaction {tid} does not sum to zero (off by {total})" for tid, total in unbalanced]
    sums = dict((await db.exec(select(Entry.account_id, func.sum(Entry.amount)).group_by(col(Entry.account_id)))).all())
    open_holds = dict(
        (
            await db.exec(
                select(Hold.account_id, func.sum(Hold.amount))
                .where(col(Hold.released_at).is_(None))
                .group_by(col(Hold.account_id))
            )
        ).all()
    )
    for account in (await db.exec(select(Account))).all():
        entries = int(sums.get(account.id or 0, 0) or 0)
        holds = int(open_holds.get(account.id or 0, 0) or 0)
        name = f"account {account.id} ({account.kind})"
        if account.balance != entries:
            problems.append(f"{name} caches a balance of {account.balance} but its entries sum to {entries}")
        if account.held != holds:
            problems.append(f"{name} caches {account.held} held but its open holds sum to {holds}")
        if account.kind == Kind.MEMBER and account.balance < 0:
            problems.append(f"{name} is below zero ({account.balance})")
        if account.kind == Kind.MEMBER and account.held > max(account.balance, 0):
            problems.append(f"{name} holds {account.held} with a balance of {account.balance}")
    return problems
