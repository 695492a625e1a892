"""Repeat offenders stop: an agent whose usage reports exceed the hub's bounds too often is paused by the hub.

The proxy calls `Disputes.record(agent_id)` whenever it billed less than a provider reported. The count is kept in
memory per agent id (not per connection, so reconnecting does not reset it) over a sliding window; reaching the
club's limit pauses the agent at once on its live tunnel and in the database, with a reason only an admin can
clear. A hub restart starts every count again; the disputed usage rows stay, for the admin to read.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import or_, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import User
from hub.accounts.service import require_admin
from hub.agents.live import Registry
from hub.agents.models import Agent
from hub.background import Background
from hub.club.service import read_number, stage
from hub.db import Database
from hub.errors import NotFound
from hub.parsing import parse_count

log = logging.getLogger("gpuclub")

LIMIT_KEY = "dispute_limit"
WINDOW_KEY = "dispute_window_minutes"
DEFAULT_LIMIT = 5
DEFAULT_WINDOW_MINUTES = 60
MAX_LIMIT = 1000
MAX_WINDOW_MINUTES = 7 * 24 * 60
CACHE_SECONDS = 10.0


@dataclass(frozen=True)
class Rules:
    """How many disputed reports within how many minutes pause an agent."""

    limit: int = DEFAULT_LIMIT
    window_minutes: int = DEFAULT_WINDOW_MINUTES

    @property
    def reason(self) -> str:
        reports = "a usage report" if self.limit == 1 else f"{self.limit} usage reports"
        minutes = "minute" if self.window_minutes == 1 else f"{self.window_minutes} minutes"
        return f"Paused by the hub: {reports} above the hub's bounds within {minutes}."


async def dispute_rules(db: AsyncSession) -> Rules:
    limit = await read_number(db, LIMIT_KEY)
    window = await read_number(db, WINDOW_KEY)
    # A value outside the range (typed into the database by hand) falls back to the default, never to "off".
    return Rules(
        limit=limit if limit is not None and 1 <= limit <= MAX_LIMIT else DEFAULT_LIMIT,
        window_minutes=window if window is not None and 1 <= window <= MAX_WINDOW_MINUTES else DEFAULT_WINDOW_MINUTES,
    )


async def set_dispute_rules(db: AsyncSession, actor: User | None, *, limit: str | int, window: str | int) -> Rules:
    """Save the club's rule; `actor` None is the operator's command line."""
    if actor is not None:
        require_admin(actor)
    rules = Rules(
        limit=parse_count(limit, what="number of disputes", high=MAX_LIMIT),
        window_minutes=parse_count(window, what="window in minutes", high=MAX_WINDOW_MINUTES),
    )
    await stage(db, LIMIT_KEY, rules.limit)
    await stage(db, WINDOW_KEY, rules.window_minutes)
    await db.commit()
    return rules


async def auto_pause(db: AsyncSession, agent_id: int, reason: str) -> bool:
    """Pause the agent with `reason`; False when the hub had paused it already (so it is logged once)."""
    paused = await db.exec(
        update(Agent)
        .where(col(Agent.id) == agent_id)
        # An owner's resume racing the hub's pause can leave the reason without the pause: pausing again fixes it.
        .where(or_(col(Agent.paused_reason) == "", col(Agent.paused).is_(False)))
        .values(paused=True, paused_reason=reason[:300])
    )
    await db.commit()
    return bool(paused.rowcount)


async def clear_pause(db: AsyncSession, actor: User | None, agent_id: int) -> Agent:
    """Resume an agent the hub paused, and forget why; `actor` None is the operator's command line."""
    if actor is not None:
        require_admin(actor)
    agent = await db.get(Agent, agent_id)
    if agent is None or agent.revoked_at is not None:
        raise NotFound("No such GPU.")
    if agent.paused_reason:
        agent.paused, agent.paused_reason = False, ""
        db.add(agent)
        await db.commit()
    return agent


class Disputes:
    """Disputed usage reports per agent in the last window, and the pause that reaching the limit brings."""

    def __init__(
        self,
        database: Database,
        registry: Registry,
        background: Background,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.registry = registry
        self.background = background
        self.clock = clock
        self.times: dict[int, deque[float]] = {}
        self._rules: Rules | None = None
        self._rules_until = 0.0

    def record(self, agent_id: int) -> None:
        """A report from `agent_id` exceeded the hub's bounds. Cheap: the check and any pause run in the background."""
        self.times.setdefault(agent_id, deque()).append(self.clock())
        self.background.spawn(self._check(agent_id))

    def count(self, agent_id: int, rules: Rules) -> int:
        """Disputes counted against the agent in the current window."""
        times = self.times.get(agent_id)
        if not times:
            return 0
        oldest = self.clock() - rules.window_minutes * 60
        while times and times[0] < oldest:
            times.popleft()
        return len(times)

    async def rules(self) -> Rules:
        # Read again every few seconds, so a change from the command line counts soon too.
        if self._rules is None or self._rules_until <= time.monotonic():
            async with self.database.session() as db:
                self._remember(await dispute_rules(db))
        assert self._rules is not None
        return self._rules

    async def set_rules(self, db: AsyncSession, actor: User, *, limit: str | int, window: str | int) -> Rules:
        rules = await set_dispute_rules(db, actor, limit=limit, window=window)
        self._remember(rules)
        return rules

    async def clear(self, db: AsyncSession, actor: User, agent_id: int) -> Agent:
        """An admin resumes an agent the hub paused: the reason goes, the count starts again, the tunnel serves."""
        agent = await clear_pause(db, actor, agent_id)
        self.times.pop(agent.pk, None)
        self.registry.configure(agent.pk, name=agent.name, shared=agent.shared, paused=agent.paused)
        return agent

    def _remember(self, rules: Rules) -> None:
        self._rules, self._rules_until = rules, time.monotonic() + CACHE_SECONDS

    async def _check(self, agent_id: int) -> None:
        rules = await self.rules()
        if self.count(agent_id, rules) < rules.limit:
            return
        # From here to the write nothing awaits, so of many checks racing only one pauses. The pause is the
        # consequence of these disputes: once an admin clears it, counting starts from zero.
        del self.times[agent_id]
        self._pause_live(agent_id)
        async with self.database.session() as db:
            first = await auto_pause(db, agent_id, rules.reason)
        self._pause_live(agent_id)  # again: the agent may have reconnected before the pause was written
        if first:
            log.warning("agent %s: %s", agent_id, rules.reason)

    def _pause_live(self, agent_id: int) -> None:
        if link := self.registry.get(agent_id):
            self.registry.configure(agent_id, name=link.name, shared=link.shared, paused=True)
