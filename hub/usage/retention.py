"""Forgetting old request log rows (`GPUCLUB_LOG_RETENTION_DAYS`), a small batch per transaction.

Only usage rows go: the ledger keeps every charge for ever, and the per-day rollups (`hub.usage.rollup`) keep the
totals, so housekeeping folds rows into them first and passes the watermark here: a row not folded yet is never
deleted. Rows younger than MIN_AGE_DAYS stay whatever the setting: an agent may send a bill back for up to
7 days (`hub.proxy.bills`), and only the row still being there keeps its second copy out of the log and rollups.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.db import utcnow
from hub.usage.models import UsageRecord
from hub.usage.service import start_of_day

MIN_AGE_DAYS = 8
BATCH = 1000  # rows per transaction: the table is never locked for long
MAX_BATCHES = 50  # per call (housekeeping calls every minute): the rest goes next time


def cutoff(days: int, now: datetime | None = None) -> datetime:
    """Rows created before this are old enough to delete."""
    now = now or utcnow()
    return min(now - timedelta(days=days), start_of_day(now) - timedelta(days=MIN_AGE_DAYS))


async def delete_old_usage(
    db: AsyncSession,
    days: int,
    *,
    upto_id: int | None = None,
    now: datetime | None = None,
    batch: int = BATCH,
    batches: int = MAX_BATCHES,
) -> int:
    """Delete usage rows older than `days` (0: keep everything) with ids up to `upto_id`; how many went."""
    if days <= 0:
        return 0
    conditions = [col(UsageRecord.created_at) < cutoff(days, now)]
    if upto_id is not None:
        conditions.append(col(UsageRecord.id) <= upto_id)
    deleted = 0
    for _ in range(batches):
        oldest = select(UsageRecord.id).where(*conditions).order_by(col(UsageRecord.created_at)).limit(batch)
        ids = list((await db.exec(oldest)).all())
        if not ids:
            break
        await db.exec(delete(UsageRecord).where(col(UsageRecord.id).in_(ids)))
        await db.commit()
        deleted += len(ids)
        if len(ids) < batch:
            break
    return deleted
