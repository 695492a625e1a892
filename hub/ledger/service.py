"""Moving credits: one balanced transaction per movement, idempotent by key.

Every write here happens inside the caller's database transaction; callers commit once, so a movement and the
cached balances it changes land together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.db import insert_new, utcnow
from hub.ledger.models import Account, Entry, Kind, LedgerTransaction


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
    for account in (await db.exec(select(Account))).all():
        entries = int(sums.get(account.id or 0, 0) or 0)
        name = f"account {account.id} ({account.kind})"
        if account.balance != entries:
            problems.append(f"{name} caches a balance of {account.balance} but its entries sum to {entries}")
        if account.held != 0:  # only ever set inside the transaction that takes credits back
            problems.append(f"{name} has {account.held} left reserved by an unfinished deduction")
        if account.kind == Kind.MEMBER and account.balance < 0:
            problems.append(f"{name} is below zero ({account.balance})")
    return problems
