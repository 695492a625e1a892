"""`gpuclub quota set … --key`: a key's budget and models from the command line, as on the API keys page."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.keys import service as keys
from hub.keys.models import KeyModel
from hub.quotas.models import KeyPolicy
from tests.support.hub import cli, hub_env
from tests.support.people import person


async def test_a_keys_budget_and_models_are_set_and_cleared_from_the_command_line(
    tmp_path: Path, database_url: str, db: AsyncSession
) -> None:
    env = hub_env(tmp_path, port=8000, database_url=database_url)
    alice = await person(db, "alice@lab.example.org")
    key, _ = await keys.create_key(db, alice, name="ci")
    key_id, prefix = key.id, key.prefix
    base = ["quota", "set", alice.email, "--key", prefix]

    set_ = cli(env, *base, "--budget-day", "2.5", "--budget-month", "40", "--models", "m, other", "--rpm", "3")
    cleared = cli(env, *base, "--budget-day", "none", "--models", "")
    no_key = cli(env, "quota", "set", alice.email, "--budget-day", "1")
    negative = cli(env, *base, "--budget-month", "-1")

    assert set_.stdout == f"{alice.email} key {prefix}: rpm=3, budget_day=2.5, budget_month=40, models=m,other\n"
    assert cleared.stdout == f"{alice.email} key {prefix}: rpm=3, budget_month=40\n"
    assert no_key.returncode != 0 and "add --key gpc_PREFIX" in no_key.stderr
    assert negative.returncode != 0 and "budget per month must be a number of credits" in negative.stderr
    db.expire_all()
    policy = await db.get(KeyPolicy, key_id)
    assert policy is not None and (policy.budget_day, policy.budget_month, policy.rpm) == (None, 40_000_000, 3)
    assert (await db.exec(select(KeyModel).where(KeyModel.key_id == key_id))).all() == []
