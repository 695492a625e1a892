"""The ledger's rules, on both databases: balanced, idempotent, never overdrawn, and checkable."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.db import utcnow
from hub.errors import BadRequest
from hub.ledger import service as ledger
from hub.ledger.grants import deduct, grant, grant_monthly_allowances
from hub.ledger.models import Account, LedgerTransaction
from hub.quotas import service as quotas
from tests.support.people import person

CREDIT = 1_000_000


async def test_a_grant_with_the_same_key_happens_once(db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")

    first = await grant(db, None, alice, 5 * CREDIT, reason="welcome", key="grant:welcome:alice")
    again = await grant(db, None, alice, 5 * CREDIT, reason="welcome", key="grant:welcome:alice")

    assert first is not None and again is None
    assert await ledger.balance_of(db, alice.pk) == ledger.Balance(5 * CREDIT, 0)
    assert await ledger.check(db) == []


async def test_a_deduction_cannot_take_credits_that_are_held_or_missing(db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    await grant(db, None, alice, 3 * CREDIT)
    busy = 2 * CREDIT  # what her requests in flight hold

    with pytest.raises(BadRequest, match="does not have 2 credits available"):
        await deduct(db, None, alice, 2 * CREDIT, reason="too much", held=busy)
    await deduct(db, None, alice, CREDIT, reason="correction", held=busy)

    assert await ledger.balance_of(db, alice.pk) == ledger.Balance(2 * CREDIT, 0)
    assert await ledger.check(db) == []


async def test_the_monthly_allowance_is_granted_once_per_month(db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    bob = await person(db, "bob@lab.example.org")
    await quotas.set_default_allowance(db, None, 5 * CREDIT)
    await quotas.set_member_limits(db, None, bob, allowance=7 * CREDIT)
    november, december = utcnow().replace(month=11, day=2), utcnow().replace(month=12, day=1)

    assert await grant_monthly_allowances(db, november) == 2
    assert await grant_monthly_allowances(db, november) == 0
    assert await grant_monthly_allowances(db, december) == 2

    assert (await ledger.balance_of(db, alice.pk)).balance == 10 * CREDIT
    assert (await ledger.balance_of(db, bob.pk)).balance == 14 * CREDIT
    keys = (await db.exec(select(LedgerTransaction.key).where(LedgerTransaction.kind == "grant"))).all()
    assert f"allowance:{alice.pk}:{november:%Y-%m}" in keys


async def test_the_check_reports_a_tampered_balance(db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    await grant(db, None, alice, CREDIT)
    await db.exec(update(Account).where(col(Account.user_id) == alice.pk).values(balance=5 * CREDIT))
    await db.commit()

    problems = await ledger.check(db)

    assert len(problems) == 1 and "caches a balance of 5000000 but its entries sum to 1000000" in problems[0]
