"""Agent tokens and their settings: create (token shown once), rename, pause, share, revoke."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub import tokens
from hub.accounts.models import Status, User
from hub.accounts.service import require_admin
from hub.agents.models import Agent
from hub.db import utcnow
from hub.errors import Forbidden, NotFound, Unauthorized
from hub.parsing import clean_text

TOKEN_PREFIX = "gpa"  # noqa: S105 - a visible prefix, not a secret
VISIBLE = 12


async def create_agent(db: AsyncSession, user: User, *, name: str) -> tuple[Agent, str]:
    """A new agent and its token, which only opens the tunnel and is never stored in clear."""
    name = clean_text(name, what="GPU name", max_length=100, required=True)
    token = tokens.new_secret(TOKEN_PREFIX)
    agent = Agent(user_id=user.pk, name=name, prefix=token[:VISIBLE], token_hash=tokens.digest(token))
    db.add(agent)
    await db.commit()
    await db.refresh(agent)
    return agent, token


async def list_agents(db: AsyncSession, user: User) -> list[Agent]:
    query = (
        select(Agent)
        .where(Agent.user_id == user.id, col(Agent.revoked_at).is_(None))
        .order_by(col(Agent.created_at), col(Agent.id))
    )
    return list((await db.exec(query)).all())


async def get_owned(db: AsyncSession, user: User, agent_id: int) -> Agent:
    agent = await db.get(Agent, agent_id)
    if agent is None or agent.user_id != user.id or agent.revoked_at is not None:
        raise NotFound("No such GPU.")
    return agent


async def update_agent(
    db: AsyncSession,
    user: User,
    agent_id: int,
    *,
    name: str | None = None,
    paused: bool | None = None,
    shared: bool | None = None,
) -> Agent:
    agent = await get_owned(db, user, agent_id)
    if paused is False and agent.paused_reason:
        # The hub paused it for repeated disputes: resuming is for an admin, who can see why.
        raise Forbidden(f"Only an admin can resume {agent.name}. {agent.paused_reason}")
    if name is not None:
        agent.name = clean_text(name, what="GPU name", max_length=100, required=True)
    if paused is not None:
        agent.paused = paused
    if shared is not None:
        agent.shared = shared
    db.add(agent)
    await db.commit()
    return agent


async def revoke(db: AsyncSession, user: User, agent_id: int) -> Agent:
    agent = await get_owned(db, user, agent_id)
    agent.revoked_at = utcnow()
    db.add(agent)
    await db.commit()
    return agent


async def authenticate(db: AsyncSession, token: str) -> tuple[Agent, User]:
    """The agent behind a tunnel token; API keys and revoked tokens are refused alike."""
    query = (
        select(Agent, User)
        .join(User, col(User.id) == col(Agent.user_id))
        .where(Agent.token_hash == tokens.digest(token), col(Agent.revoked_at).is_(None))
        .where(User.status == Status.ACTIVE)
    )
    row = (await db.exec(query)).first()
    if row is None:
        raise Unauthorized("The hub does not accept this agent token. Create a new one on the My GPUs page.")
    return row


async def seen(
    db: AsyncSession, agent_id: int, *, version: str | None = None, models: Iterable[str] | None = None
) -> None:
    """The agent was connected just now; `models`: what it offered (the tunnel checked the names already)."""
    values: dict[str, object] = {"last_seen_at": utcnow()}
    if version is not None:
        values["version"] = version[:40]
    if models is not None:
        values["models"] = "\n".join(sorted(models))
    await db.exec(update(Agent).where(col(Agent.id) == agent_id).values(**values))
    await db.commit()


async def club_agents(db: AsyncSession, actor: User) -> list[tuple[Agent, User]]:
    """Every member's agent (not revoked) with its owner, for admins."""
    require_admin(actor)
    query = (
        select(Agent, User)
        .join(User, col(User.id) == col(Agent.user_id))
        .where(col(Agent.revoked_at).is_(None), User.status != Status.REMOVED)
        .order_by(col(User.email), col(Agent.created_at), col(Agent.id))
    )
    return list((await db.exec(query)).all())


async def set_verified(db: AsyncSession, actor: User, agent_id: int, *, verified: bool) -> Agent:
    """An admin vouches for an agent (or stops): keys limited to verified agents may use it (or no longer)."""
    require_admin(actor)
    agent = await db.get(Agent, agent_id)
    if agent is None or agent.revoked_at is not None:
        raise NotFound("No such GPU.")
    agent.verified = verified
    db.add(agent)
    await db.commit()
    return agent
