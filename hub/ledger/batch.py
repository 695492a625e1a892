"""Posting many finished requests in one database transaction: a handful of statements, whatever their number.

Each request becomes one balanced transaction (consumer pays, provider earns, the club takes its fee), keyed by
the request id, so writing the same request twice posts it once. The caller commits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, insert, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.db import insert_ignoring_duplicates, insert_new, utcnow
from hub.ledger.models import Account, Entry, Kind, LedgerTransaction
from hub.ledger.service import system_account


@dataclass(frozen=True)
class Charge:
    request_id: str
    consumer_id: int
    provider_id: int | None  # the agent's owner; None when nobody earns (e.g. the agent is gone)
    cost: int
    fee_bps: int  # the club's fee in basis points (1% = 100)
    memo: str = ""


async def settle_many(db: AsyncSession, charges: Sequence[Charge]) -> dict[int, int]:
    """Post what each request cost; returns the new balance of every member involved, by user id.

    A consumer is never taken below zero: anything beyond their balance is not charged (policy: balances stay at
    or above zero), counting the requests before it in the same batch.
    """
    users = {c.consumer_id for c in charges} | {c.provider_id for c in charges if c.provider_id is not None}
    accounts = await _member_accounts(db, users)
    club = await system_account(db, Kind.CLUB)
    balance = {user_id: account.balance for user_id, account in accounts.items()}
    postings: list[tuple[Charge, list[tuple[int, int]]]] = []
    for charge in charges:
        if charge.provider_id is None or charge.provider_id == charge.consumer_id:
            continue
        charged = max(0, min(charge.cost, balance[charge.consumer_id]))
        if not charged:
            continue
        fee = charged * charge.fee_bps // 10_000
        balance[charge.consumer_id] -= charged
        balance[charge.provider_id] += charged - fee
        moves = [
            (accounts[charge.consumer_id].id or 0, -charged),
            (accounts[charge.provider_id].id or 0, charged - fee),
        ]
        postings.append((charge, [*moves, (club.id or 0, fee)]))
    if postings:
        await _post_many(db, postings)
    rows = await db.exec(select(Account.user_id, Account.balance).where(col(Account.user_id).in_(users)))
    return {int(user_id): int(amount) for user_id, amount in rows.all() if user_id is not None}


async def _member_accounts(db: AsyncSession, users: set[int]) -> dict[int, Account]:
    query = select(Account).where(col(Account.user_id).in_(users))
    found = {account.user_id: account for account in (await db.exec(query)).all()}
    for user_id in users - found.keys():  # first use; opened by another writer at the same moment is fine too
        values = {"kind": Kind.MEMBER, "user_id": user_id, "balance": 0, "held": 0, "created_at": utcnow()}
        await insert_new(db, Account, values)
    if users - found.keys():
        found = {account.user_id: account for account in (await db.exec(query)).all()}
    return {int(user_id): account for user_id, account in found.items() if user_id is not None}


async def _post_many(db: AsyncSession, postings: list[tuple[Charge, list[tuple[int, int]]]]) -> None:
    now = utcnow()
    headers = [
        {"key": f"request:{c.request_id}", "kind": "usage", "memo": c.memo[:500], "created_by": None, "created_at": now}
        for c, _ in postings
    ]
    statement = insert_ignoring_duplicates(db, LedgerTransaction).values(headers)
    statement = statement.returning(LedgerTransaction.id, LedgerTransaction.key)
    ids = {key: int(tid) for tid, key in (await db.exec(statement)).all()}
    entries: list[dict[str, int]] = []
    change: defaultdict[int, int] = defaultdict(int)
    for charge, moves in postings:
        if (transaction_id := ids.get(f"request:{charge.request_id}")) is None:
            continue  # written before: posting it again would count it twice
        for account_id, amount in moves:
            if amount:
                entries.append({"transaction_id": transaction_id, "account_id": account_id, "amount": amount})
                change[account_id] += amount
    if not entries:
        return
    await db.exec(insert(Entry), params=entries)
    accounts = Account.__table__  # type: ignore[attr-defined]
    adjust = (
        update(accounts)
        .where(accounts.c.id == bindparam("account"))
        .values(balance=accounts.c.balance + bindparam("delta"))
    )
    await db.exec(adjust, params=[{"account": a, "delta": d} for a, d in change.items()])
