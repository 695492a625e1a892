"""Purses, admission and the outage itself while a PostgreSQL database refuses connections (a real outage: the
database's sessions are terminated and new ones refused), and which errors count as an outage at all."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import exc as sa
from sqlalchemy import text

from hub.accounts.models import User
from hub.db import Database
from hub.errors import DatabaseUnavailable, InsufficientCredits
from hub.ledger.grants import grant
from hub.ledger.purses import Purses
from hub.migrate import upgrade
from hub.outage import Outage, is_outage
from hub.pricing import service as pricing
from hub.proxy.admission import Admission
from hub.proxy.bounds import Limits
from hub.proxy.recorder import Recorder
from hub.quotas import service as quotas
from tests.conftest import fresh_postgres
from tests.proxy.test_outage import refusing
from tests.support.people import person

CREDIT = 1_000_000
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def refusable_url() -> Iterator[str]:
    with fresh_postgres("gpuclub_refusable") as url:
        upgrade(url)
        yield url


@pytest.fixture
async def database(refusable_url: str) -> AsyncIterator[Database]:
    database = Database(refusable_url)
    yield database
    await database.dispose()


def name_of(database: Database) -> str:
    return database.url.rsplit("/", 1)[1]


async def member(database: Database, credits: int = 0) -> User:
    async with database.session() as db:
        user = await person(db, f"{uuid.uuid4().hex[:8]}@lab.example.org")
        if credits:
            await grant(db, None, user, credits * CREDIT)
        return user


async def test_a_purse_spends_the_balance_it_read_less_what_is_held_and_not_yet_written(database: Database) -> None:
    alice, bob = await member(database, credits=10), await member(database, credits=10)
    outage = Outage(seconds=60)
    purses = Purses(database, hold_seconds=60, refresh=0, outage=outage)  # refresh 0: every hold would read
    await purses.reserve(alice.pk, 4 * CREDIT, "first")
    purses.release(alice.pk, "first", cost=3 * CREDIT)  # queued for the recorder, not written

    with refusing(name_of(database)):
        await purses.reserve(alice.pk, 5 * CREDIT, "second")  # 10 - 3 available
        with pytest.raises(InsufficientCredits):
            await purses.reserve(alice.pk, 3 * CREDIT, "third")  # 2 left
        with pytest.raises(DatabaseUnavailable):
            await purses.reserve(bob.pk, 1, "fourth")  # her balance was never read

    assert outage.degraded
    assert purses.held_by(alice.pk) == 8 * CREDIT


async def test_admission_admits_from_what_it_read_and_refuses_a_member_it_never_read(database: Database) -> None:
    alice, bob = await member(database, credits=10), await member(database, credits=10)
    async with database.session() as db:
        await pricing.set_price(db, None, "m", input_micro=0, output_micro=CREDIT * 1_000_000)  # 1 credit a token
        await quotas.set_defaults(db, None, quotas.Limits(tokens_per_day=1_000_000))
    outage = Outage(seconds=60)
    purses = Purses(database, hold_seconds=60, refresh=0, outage=outage)
    admission = Admission(database, purses, Recorder(database, purses, outage=outage), outage=outage)

    async def admit(user: User, call_id: str) -> int:
        size = lambda default: Limits.of(BODY, len(json.dumps(BODY)), default_max_tokens=default, embeddings=False)  # noqa: E731
        admitted = await admission.admit(
            call_id=call_id, user_id=user.pk, key_id=0, model="m", size=size, owns_agent_for_model=False
        )
        return admitted.held

    before = await admit(alice, "before")
    with refusing(name_of(database)):
        await purses.reserve(alice.pk, 1, "probe")  # finds the database away
        during = await admit(alice, "during")
        with pytest.raises(DatabaseUnavailable) as refused:
            await admit(bob, "stranger")

    assert before == during == 2 * CREDIT
    assert refused.value.retry_after > 0
    assert outage.degraded


async def test_the_outage_is_logged_once_and_ends_by_itself_when_the_database_answers(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await member(database, credits=1)
    outage = Outage(database, seconds=60)
    purses = Purses(database, hold_seconds=60, refresh=0, outage=outage)
    await purses.reserve(alice.pk, 1, "warm")
    with caplog.at_level(logging.INFO, logger="gpuclub"):
        with refusing(name_of(database)):
            for i in range(5):
                await purses.reserve(alice.pk, 1, f"during-{i}")
            assert outage.degraded
        for _ in range(200):  # polled, for up to 10 s: the probe asks every second
            if not outage.degraded:
                break
            await asyncio.sleep(0.05)
        await outage.stop()

    lines = [record.getMessage() for record in caplog.records if record.name == "gpuclub"]
    assert not outage.degraded
    assert [line.split(" (")[0].split(" after")[0] for line in lines] == [
        "database unreachable",
        "database reachable again",
    ]
    assert not any(record.exc_info for record in caplog.records)


async def test_an_unreachable_database_is_an_outage_and_a_bad_statement_is_not(database: Database) -> None:
    async def failure(sql: str) -> BaseException:
        try:
            async with database.session() as db:
                await db.exec(text(sql))  # type: ignore[call-overload]
        except Exception as exc:  # noqa: BLE001 - the error is what this test looks at
            return exc
        raise AssertionError(f"{sql} worked")

    bad_statement = await failure("SELECT no_such_column")
    with refusing(name_of(database)):
        refused = await failure("SELECT 1")
    nowhere = Database("postgresql+asyncpg://nobody@127.0.0.1:1/nothing")
    try:
        async with nowhere.session() as db:
            with pytest.raises(OSError) as connection_refused:
                await db.exec(text("SELECT 1"))  # type: ignore[call-overload]
    finally:
        await nowhere.dispose()
    locked = sa.OperationalError("UPDATE accounts", {}, sqlite3.OperationalError("database is locked"))
    missing = sa.OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: accounts"))
    unopenable = sa.OperationalError("SELECT", {}, sqlite3.OperationalError("unable to open database file"))
    pool = sa.TimeoutError("QueuePool limit of size 5 overflow 10 reached, connection timed out")

    assert is_outage(refused) and is_outage(connection_refused.value) and is_outage(pool)
    assert is_outage(unopenable)
    assert not is_outage(bad_statement) and not is_outage(locked) and not is_outage(missing)
    assert not is_outage(DatabaseUnavailable()) and not is_outage(ValueError("x"))
    with pytest.raises(OSError) as no_file:  # a real OSError from outside the database
        Path("/nonexistent/gpuclub/file").read_text()  # noqa: ASYNC240
    assert not is_outage(no_file.value)
