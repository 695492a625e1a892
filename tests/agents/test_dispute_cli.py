"""`gpuclub agent clear ID`: the operator lifts the hub's pause from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.agents import service as agents
from hub.agents.models import Agent
from hub.db import Database
from tests.agents.links import REASON
from tests.support.hub import cli, hub_env
from tests.support.people import person


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return hub_env(tmp_path, port=8000, database_url=database_url)


async def test_agent_clear_resumes_an_agent_the_hub_paused(
    env: dict[str, str], db: AsyncSession, database: Database
) -> None:
    pat = await person(db, "pat@lab.example.org")
    rig, _ = await agents.create_agent(db, pat, name="desk-4090")
    await db.exec(update(Agent).where(col(Agent.id) == rig.pk).values(paused=True, paused_reason=REASON))
    await db.commit()

    result = cli(env, "agent", "clear", str(rig.pk))

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("desk-4090 is no longer paused by the hub")
    async with database.session() as fresh:
        row = (await fresh.exec(select(Agent.paused, Agent.paused_reason).where(Agent.id == rig.pk))).one()
    assert tuple(row) == (False, "")


def test_agent_clear_of_an_unknown_agent_fails_with_one_line(env: dict[str, str]) -> None:
    result = cli(env, "agent", "clear", "4242")

    assert result.returncode == 1
    assert result.stderr.strip() == "gpuclub: No such GPU."
