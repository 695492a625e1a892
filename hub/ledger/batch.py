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
    first: dict[str, Charge] = {}
    for charge in charges:  # one charge per request, however often it was queued
        first.setdefault(charge.request_id, charge)
    charges = list(first.values())
    users = {c.consumer_id for c in charges} | {c.provider_id for c in charges if c.provider_id is not None}
    accounts, balance = await _member_accounts(db, users)
    postings: list[tuple[Charge, int, int]] = []  # (charge, what was charged, the club's fee)
    for charge in charges:
        if charge.provider_id is None or charge.provider_id == charge.consumer_id:
            continue
        charged = max(0, min(charge.cost, balance[charge.consumer_id]))
        if not charged:
            continue
        fee = charged * charge.fee_bps // 10_000
        balance[charge.consumer_id] -= charged
        balance[charge.provider_id] += charged - fee
        postings.append((charge, charged, fee))
    if not postings:
        return balance
    club = (await system_account(db, Kind.CLUB)).id or 0
    posted = await _post_many(
        db,
        [
            (
                charge,
                [
                    (accounts[charge.consumer_id], -charged),
                    (accounts[charge.provider_id or 0], charged - fee),
                    (club, fee),
                ],
            )
            for charge, charged, fee in postings
        ],
    )
    if not posted:  # some were written before (a retried batch): ask the database what the balances are now
        query = select(Account.user_id, Account.balance).where(col(Account.user_id).in_(users))
        return {int(user_id): int(amount) for user_id, amount in (await db.exec(query)).all() if user_id}
    return balance  # as read at the start, plus this batch (another process's change meanwhile is read later)


async def _member_accounts(db: AsyncSession, users: set[int]) -> tuple[dict[int, int], dict[int, int]]:
    """Account ids and balances of these members, by user id; accounts are opened on first use."""
    # Locked until commit (PostgreSQL), so no deduction lands between this read and the charges; on SQLite the
    # caller's transaction already holds the database's write lock (the recorder writes the usage rows first).
    query = (
        select(Account.user_id, Account.id, Account.balance)
        .where(col(Account.user_id).in_(users))
        .order_by(col(Account.id))
        .with_for_update()
    )
    rows = (await db.exec(query)).all()
    if missing := users - {user_id for user_id, _, _ in rows}:
        for user_id in missing:  # opened by another writer at the same moment is fine too
            values = {"kind": Kind.MEMBER, "user_id": user_id, "balance": 0, "held": 0, "created_at": utcnow()}
            await insert_new(db, Account, values)
        rows = (await db.exec(query)).all()
    return {int(u): int(i) for u, i, _ in rows if u and i}, {int(u): int(b) for u, _, b in rows if u}


async def _post_many(db: AsyncSession, postings: list[tuple[Charge, list[tuple[int, int]]]]) -> bool:
    """Post them all; False when some had been posted before (and were skipped)."""
    now = utcnow()
    headers = [
        {"key": f"request:{c.request_id}", "kind": "usage", "memo": c.memo[:500], "created_by": None, "created_at": now}
        for c, _ in postings
    ]
    # Core statements on the tables (not the ORM's bulk path), executed with many parameter sets: compiled once
    # and cached, whatever the number of rows.
    transactions = LedgerTransaction.__table__  # type: ignore[attr-defined]
    statement = insert_ignoring_duplicates(db, transactions).returning(transactions.c.id, transactions.c.key)
    ids = {key: int(tid) for tid, key in (await db.exec(statement, params=headers)).all()}
    entries: list[dict[str, int]] = []
    change: defaultdict[int, int] = defaultdict(int)
    for charge, moves in postings:
        if (transaction_id := ids.get(f"request:{charge.request_id}")) is None:
            continue  # written before: posting it again would count it twice
        for account_id, amount in moves:
            if amount:
                entries.append({"transaction_id": transaction_id, "account_id": account_id, "amount": amount})
                change[account_id] += amount
    if entries:
        await db.exec(insert(Entry.__table__), params=entries)  # type: ignore[attr-defined]
        accounts = Account.__table__  # type: ignore[attr-defined]
        adjust = (
            update(accounts)
            .where(accounts.c.id == bindparam("account"))
            .values(balance=accounts.c.balance + bindparam("delta"))
        )
        await db.exec(adjust, params=[{"account": a, "delta": d} for a, d in change.items()])
    return len(ids) == len(postings)
