"""Repeat offenders stop: disputes counted per agent in a window, the hub's pause, and who may lift it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import Role, User
from hub.agents import service as agents
from hub.agents.disputes import Disputes, Rules, dispute_rules, set_dispute_rules
from hub.agents.live import Link, Registry
from hub.agents.models import Agent
from hub.background import Background
from hub.db import Database
from hub.errors import BadRequest, Forbidden
from tests.agents.links import REASON, connected
from tests.support.people import person


@dataclass
class Clock:
    """The time the counter sees, moved by the test instead of waited for."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def minutes(self, n: float) -> None:
        self.now += n * 60


@dataclass
class Rig:
    disputes: Disputes
    background: Background
    clock: Clock
    link: Link
    agent: Agent
    owner: User
    admin: User

    async def disputed(self, times: int = 1) -> None:
        for _ in range(times):
            self.disputes.record(self.agent.pk)
        await self.background.drain()


@pytest.fixture
async def rig(database: Database, db: AsyncSession) -> AsyncIterator[Rig]:
    owner = await person(db, "pat@lab.example.org")
    admin = await person(db, "adam@lab.example.org", Role.ADMIN)
    agent, _ = await agents.create_agent(db, owner, name="desk-4090")
    registry, background, clock = Registry(), Background(), Clock()
    link = connected(registry, agent)
    yield Rig(Disputes(database, registry, background, clock=clock), background, clock, link, agent, owner, admin)
    await background.drain()


async def stored(database: Database, agent_id: int) -> tuple[bool, str]:
    """The agent's pause as the database has it, read afresh."""
    async with database.session() as db:
        row = (await db.exec(select(Agent.paused, Agent.paused_reason).where(Agent.id == agent_id))).one()
    return row[0], row[1]


async def test_one_dispute_short_of_the_limit_leaves_the_agent_serving(rig: Rig, database: Database) -> None:
    await rig.disputed(4)

    assert await stored(database, rig.agent.pk) == (False, "")
    assert rig.link.admits(rig.admin.pk)


async def test_reaching_the_limit_pauses_the_agent_at_once_with_a_reason_logged_once(
    rig: Rig, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gpuclub"):
        await rig.disputed(5)
        await rig.disputed(5)  # requests that were still in flight when it was paused

    assert await stored(database, rig.agent.pk) == (True, REASON)
    assert rig.link.paused and not rig.link.admits(rig.admin.pk)
    assert [r.getMessage() for r in caplog.records if REASON in r.getMessage()] == [f"agent {rig.agent.pk}: {REASON}"]


async def test_disputes_older_than_the_window_do_not_count(rig: Rig, database: Database) -> None:
    await rig.disputed(4)
    rig.clock.minutes(61)
    await rig.disputed(4)

    assert await stored(database, rig.agent.pk) == (False, "")

    rig.clock.minutes(30)  # the last four are still within the hour
    await rig.disputed(1)

    assert await stored(database, rig.agent.pk) == (True, REASON)


async def test_reconnecting_does_not_start_the_count_again(rig: Rig, database: Database) -> None:
    await rig.disputed(4)
    newer = connected(rig.disputes.registry, rig.agent)  # the same agent dials in again

    await rig.disputed(1)

    assert await stored(database, rig.agent.pk) == (True, REASON)
    assert newer.paused


async def test_the_clubs_own_limit_and_window_apply(rig: Rig, database: Database) -> None:
    async with database.session() as db:
        await rig.disputes.set_rules(db, rig.admin, limit="2", window="10")
    await rig.disputed(1)
    rig.clock.minutes(11)
    await rig.disputed(2)

    assert await stored(database, rig.agent.pk) == (
        True,
        "Paused by the hub: 2 usage reports above the hub's bounds within 10 minutes.",
    )


async def test_an_admin_clears_the_pause_and_the_count_starts_again(rig: Rig, database: Database) -> None:
    await rig.disputed(5)

    async with database.session() as db:
        await rig.disputes.clear(db, rig.admin, rig.agent.pk)

    assert await stored(database, rig.agent.pk) == (False, "")
    assert rig.link.admits(rig.admin.pk)
    await rig.disputed(4)
    assert await stored(database, rig.agent.pk) == (False, "")


async def test_the_owner_cannot_resume_an_agent_the_hub_paused(rig: Rig, database: Database) -> None:
    await rig.disputed(5)

    async with database.session() as db:
        with pytest.raises(Forbidden) as refused:
            await agents.update_agent(db, rig.owner, rig.agent.pk, paused=False)

    assert refused.value.message == f"Only an admin can resume desk-4090. {REASON}"
    assert await stored(database, rig.agent.pk) == (True, REASON)
    async with database.session() as db:  # other changes are still the owner's to make
        renamed = await agents.update_agent(db, rig.owner, rig.agent.pk, name="desk-4090-b")
    assert (renamed.name, renamed.paused) == ("desk-4090-b", True)


async def test_an_agent_the_owner_paused_is_still_theirs_to_resume(rig: Rig, db: AsyncSession) -> None:
    await agents.update_agent(db, rig.owner, rig.agent.pk, paused=True)

    resumed = await agents.update_agent(db, rig.owner, rig.agent.pk, paused=False)

    assert not resumed.paused


@pytest.mark.parametrize("who", ["owner", "another member"])
async def test_only_an_admin_can_clear_a_pause(rig: Rig, database: Database, db: AsyncSession, who: str) -> None:
    await rig.disputed(5)
    actor = rig.owner if who == "owner" else await person(db, "max@lab.example.org")

    async with database.session() as fresh:
        with pytest.raises(Forbidden):
            await rig.disputes.clear(fresh, actor, rig.agent.pk)

    assert await stored(database, rig.agent.pk) == (True, REASON)
    assert rig.link.paused


async def test_only_an_admin_can_change_the_rule(rig: Rig, db: AsyncSession) -> None:
    with pytest.raises(Forbidden):
        await set_dispute_rules(db, rig.owner, limit=1, window=1)

    assert await dispute_rules(db) == Rules()


@pytest.mark.parametrize(
    ("limit", "window", "message"),
    [
        ("0", "60", "The number of disputes must be between 1 and 1000."),
        ("five", "60", "The number of disputes must be a whole number, got 'five'."),
        ("5", "", "The window in minutes must be a whole number, got ''."),
        ("5", "20000", "The window in minutes must be between 1 and 10080."),
    ],
)
async def test_the_rule_must_be_whole_numbers_in_range(
    rig: Rig, db: AsyncSession, limit: str, window: str, message: str
) -> None:
    with pytest.raises(BadRequest) as refused:
        await set_dispute_rules(db, rig.admin, limit=limit, window=window)

    assert refused.value.message == message
    assert await dispute_rules(db) == Rules()
