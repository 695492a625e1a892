"""What owners and admins read about disputes: disputed requests per agent, the latest ones, and who is paused.

Read from the usage rows (what the provider reported next to what the hub billed); never any content.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import User
from hub.accounts.service import require_admin
from hub.agents.models import Agent
from hub.usage.models import UsageRecord

LATEST = 20


@dataclass(frozen=True)
class AgentDisputes:
    agent_id: int
    name: str  # "desk-4090 (pat@lab.example.org)"
    disputed: int
    paused_reason: str


@dataclass(frozen=True)
class DisputedRequest:
    at: datetime
    agent: str
    model: str
    reported_prompt: int | None
    reported_completion: int | None
    billed_prompt: int
    billed_completion: int


@dataclass(frozen=True)
class ClubDisputes:
    agents: list[AgentDisputes]  # every agent with disputes since the start, or paused by the hub
    latest: list[DisputedRequest]

    @property
    def total(self) -> int:
        return sum(agent.disputed for agent in self.agents)


async def disputed_by_agent(db: AsyncSession, agent_ids: list[int], since: datetime) -> dict[int, int]:
    """Disputed requests per agent since `since` (agents without any are left out)."""
    if not agent_ids:
        return {}
    query = (
        select(UsageRecord.agent_id, func.count())
        .where(col(UsageRecord.agent_id).in_(agent_ids), col(UsageRecord.disputed).is_(True))
        .where(UsageRecord.created_at >= since)
        .group_by(col(UsageRecord.agent_id))
    )
    return {int(agent_id): int(n) for agent_id, n in (await db.exec(query)).all() if agent_id is not None}


async def club_disputes(db: AsyncSession, actor: User, since: datetime) -> ClubDisputes:
    require_admin(actor)
    disputed = col(UsageRecord.disputed).is_(True)
    recent = col(UsageRecord.created_at) >= since
    per_agent = select(UsageRecord.agent_id, func.count()).where(disputed, recent).group_by(col(UsageRecord.agent_id))
    counts = {agent_id: int(n) for agent_id, n in (await db.exec(per_agent)).all() if agent_id is not None}
    named = (
        select(Agent, User.email)
        .join(User, col(User.id) == Agent.user_id)
        .where(col(Agent.id).in_(list(counts)) | ((col(Agent.paused_reason) != "") & col(Agent.revoked_at).is_(None)))
    )
    agents = [
        AgentDisputes(agent.pk, f"{agent.name} ({email})", counts.get(agent.pk, 0), agent.paused_reason)
        for agent, email in (await db.exec(named)).all()
    ]
    # Paused ones first: they wait for an admin.
    agents.sort(key=lambda a: (not a.paused_reason, -a.disputed, a.name))

    rows = (
        select(UsageRecord, Agent.name, User.email)
        .join(Agent, col(Agent.id) == UsageRecord.agent_id)
        .join(User, col(User.id) == Agent.user_id)
        .where(disputed, recent)
        .order_by(col(UsageRecord.created_at).desc(), col(UsageRecord.id).desc())
        .limit(LATEST)
    )
    latest = [
        DisputedRequest(
            at=usage.created_at,
            agent=f"{name} ({email})",
            model=usage.model,
            reported_prompt=usage.reported_prompt_tokens,
            reported_completion=usage.reported_completion_tokens,
            billed_prompt=usage.prompt_tokens,
            billed_completion=usage.completion_tokens,
        )
        for usage, name, email in (await db.exec(rows)).all()
    ]
    return ClubDisputes(agents, latest)
