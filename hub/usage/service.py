"""Recording and reading usage: one row per request, written after the response so it never holds it up."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import User
from hub.db import utcnow
from hub.usage.models import UsageRecord


async def record(db: AsyncSession, entry: UsageRecord) -> None:
    db.add(entry)
    await db.commit()


async def recent(db: AsyncSession, user: User, limit: int = 20) -> list[UsageRecord]:
    query = (
        select(UsageRecord)
        .where(UsageRecord.user_id == user.id)
        .order_by(col(UsageRecord.created_at).desc(), col(UsageRecord.id).desc())
        .limit(limit)
    )
    return list((await db.exec(query)).all())


def start_of_day(now: datetime | None = None) -> datetime:
    now = now or utcnow()
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


async def requests_today_by_agent(db: AsyncSession, agent_ids: list[int]) -> dict[int, int]:
    if not agent_ids:
        return {}
    query = (
        select(UsageRecord.agent_id, func.count())
        .where(col(UsageRecord.agent_id).in_(agent_ids), UsageRecord.created_at >= start_of_day())
        .group_by(col(UsageRecord.agent_id))
    )
    return {int(agent_id): int(count) for agent_id, count in (await db.exec(query)).all() if agent_id is not None}


def since(hours: int) -> datetime:
    return utcnow() - timedelta(hours=hours)
