"""What an admin reads about one member: standing, money spent and earned, when they were last active, their keys,
agents and recent requests. Read-only; the amounts come from the ledger, which is the truth for money.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func
from sqlalchemy import select as select_columns
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.accounts.models import User
from hub.agents import service as agents
from hub.agents.models import Agent
from hub.club.standing import Standing, standing
from hub.db import utcnow
from hub.keys import service as keys
from hub.keys.models import ApiKey
from hub.ledger.models import Account, Entry, LedgerTransaction
from hub.usage import service as usage
from hub.usage.models import UsageRecord

RECENT = 20


@dataclass(frozen=True)
class Money:
    """Micro-credits the member paid for requests and earned with their GPUs (after the club's fee)."""

    spent_month: int = 0
    spent_total: int = 0
    earned_month: int = 0
    earned_total: int = 0


@dataclass(frozen=True)
class MemberReport:
    member: User
    standing: Standing
    money: Money
    month: str  # "2026-12": what "this month" means (UTC)
    last_active: datetime | None
    keys: list[ApiKey]
    agents: list[Agent]
    recent: list[UsageRecord]


def start_of_month(now: datetime | None = None) -> datetime:
    return (now or utcnow()).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def member_report(
    db: AsyncSession, actor: User, user_id: int, *, held: int = 0, now: datetime | None = None
) -> MemberReport:
    """One member, for an admin (others get Forbidden; a removed member is not found). `held` comes from the
    hub's purses: what the member's requests in flight hold."""
    member = await accounts.get_member_by_id(db, actor, user_id)
    month = start_of_month(now)
    return MemberReport(
        member=member,
        standing=await standing(db, member.pk, held=held),
        money=await money_of(db, member.pk, month),
        month=month.strftime("%Y-%m"),
        last_active=await last_active(db, member),
        keys=await keys.list_keys(db, member),
        agents=await agents.list_agents(db, member),
        recent=await usage.recent(db, member, RECENT),
    )


async def money_of(db: AsyncSession, user_id: int, month: datetime) -> Money:
    """What usage transactions took from (spent) and gave to (earned) the member's account, in one pass.

    A usage transaction has one negative entry, the consumer's, and positive ones for the GPU's owner and the
    club; a member using their own GPU pays nothing, so no transaction has both on one account.
    """
    amount = col(Entry.amount)
    recent = col(LedgerTransaction.created_at) >= month

    def total(condition: Any, value: Any) -> Any:
        return func.coalesce(func.sum(case((condition, value), else_=0)), 0)

    query = (
        select_columns(
            total(amount < 0, -amount),
            total(and_(amount < 0, recent), -amount),
            total(amount > 0, amount),
            total(and_(amount > 0, recent), amount),
        )
        .select_from(Entry)
        .join(LedgerTransaction, col(LedgerTransaction.id) == Entry.transaction_id)
        .join(Account, col(Account.id) == Entry.account_id)
        .where(col(Account.user_id) == user_id, col(LedgerTransaction.kind) == "usage")
    )
    spent, spent_month, earned, earned_month = (await db.exec(query)).one()  # type: ignore[call-overload]
    return Money(int(spent_month), int(spent), int(earned_month), int(earned))


async def last_active(db: AsyncSession, member: User) -> datetime | None:
    """The latest of: signing in, a key used, a request recorded."""
    used = select_columns(func.max(ApiKey.last_used_at)).where(col(ApiKey.user_id) == member.pk)
    requested = select_columns(func.max(UsageRecord.created_at)).where(col(UsageRecord.user_id) == member.pk)
    row = (await db.exec(select_columns(used.scalar_subquery(), requested.scalar_subquery()))).one()  # type: ignore[call-overload]
    seen = [when for when in (member.last_seen_at, *row) if isinstance(when, datetime)]
    return max(seen) if seen else None
