"""Retention: housekeeping forgets request log rows older than GPUCLUB_LOG_RETENTION_DAYS, a batch at a time,
never rows the daily rollup has not counted yet, never recent ones, never the ledger. Both databases."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.db import Database, utcnow
from hub.housekeeping import Housekeeping
from hub.ledger.grants import grant
from hub.ledger.models import LedgerTransaction
from hub.ledger.purses import Purses
from hub.quotas.limiter import Limiter
from hub.usage.models import UsageRecord
from hub.usage.retention import delete_old_usage
from tests.support.people import person

DAYS_AGO = (400, 100, 91, 89, 9, 7, 1, 0)


async def log_rows(db: AsyncSession) -> dict[str, int]:
    """A member's rows, one made each of DAYS_AGO days ago; their ids by age."""
    mia = await person(db, "mia@lab.example.org")
    await grant(db, None, mia, 5_000_000)
    now = utcnow()
    for days in DAYS_AGO:
        at = now - timedelta(days=days, minutes=1)
        db.add(
            UsageRecord(request_id=f"r{days}", user_id=mia.pk, model="m", endpoint="chat", status=200, created_at=at)
        )
    await db.commit()
    found = (await db.exec(select(UsageRecord.request_id, UsageRecord.id))).all()
    return {request_id: int(row_id or 0) for request_id, row_id in found}


async def ages(db: AsyncSession) -> list[int]:
    query = select(UsageRecord.request_id).order_by(col(UsageRecord.created_at))
    return [int(request_id[1:]) for request_id in (await db.exec(query)).all()]


async def test_rows_older_than_the_retention_go_in_small_batches_and_the_ledger_stays(db: AsyncSession) -> None:
    await log_rows(db)
    transactions = (await db.exec(select(func.count()).select_from(LedgerTransaction))).one()

    assert await delete_old_usage(db, 0) == 0  # 0 keeps everything
    assert await ages(db) == list(DAYS_AGO)
    assert await delete_old_usage(db, 90, batch=1) == 3  # one row per transaction
    assert await ages(db) == [89, 9, 7, 1, 0]
    # However short the retention, rows stay 8 days: an agent may send a bill back for 7, and only the row being
    # there keeps its second copy out.
    assert await delete_old_usage(db, 1) == 2
    assert await ages(db) == [7, 1, 0]
    assert (await db.exec(select(func.count()).select_from(LedgerTransaction))).one() == transactions


async def test_rows_above_the_watermark_are_kept_until_they_are_rolled_up(db: AsyncSession) -> None:
    ids = await log_rows(db)

    assert await delete_old_usage(db, 90, upto_id=ids["r400"]) == 1  # the others are not counted in a rollup yet
    assert await ages(db) == list(DAYS_AGO[1:])


async def test_housekeeping_rolls_up_then_forgets_what_is_older_than_the_setting(
    database: Database, db: AsyncSession
) -> None:
    await log_rows(db)
    chores = Housekeeping(database, Purses(database, hold_seconds=60), Limiter(), retention_days=30)

    await chores.run_once()

    assert await ages(db) == [9, 7, 1, 0]
