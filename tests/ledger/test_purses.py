"""Credits held in memory and written in batches, on both databases: never overdrawn, never lost, never twice."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid

import pytest
from sqlalchemy import func, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import User
from hub.db import Database, utcnow
from hub.errors import InsufficientCredits
from hub.ledger import service as ledger
from hub.ledger.batch import Charge, settle_many
from hub.ledger.grants import grant
from hub.ledger.models import Kind, LedgerTransaction
from hub.ledger.purses import Purses
from hub.proxy.recorder import Finished, Recorder
from hub.quotas.limiter import Limiter
from hub.quotas.service import Limits
from hub.usage.models import UsageRecord
from tests.support.people import person

CREDIT = 1_000_000


def usage(user: User, request_id: str | None = None) -> dict[str, object]:
    return {
        "request_id": request_id or uuid.uuid4().hex,
        "user_id": user.pk,
        "model": "m",
        "endpoint": "chat/completions",
        "status": 200,
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "created_at": utcnow(),
    }


async def consumer_and_owner(database: Database, db: AsyncSession) -> tuple[User, User, Purses, Recorder]:
    """Alice with 5 credits, the owner of the GPU she uses, and the hub's purses and recorder."""
    alice = await person(db, "alice@lab.example.org")
    owner = await person(db, "owner@lab.example.org")
    await grant(db, None, alice, 5 * CREDIT)
    purses = Purses(database, hold_seconds=60)
    return alice, owner, purses, Recorder(database, purses)


async def count(db: AsyncSession, table: type[UsageRecord] | type[LedgerTransaction]) -> int:
    return int((await db.exec(select(func.count()).select_from(table))).one())


async def test_concurrent_holds_never_overdraw(database: Database, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    await grant(db, None, alice, 3 * CREDIT)
    purses = Purses(database, hold_seconds=60)

    async def hold(i: int) -> bool:
        try:
            await purses.reserve(alice.pk, CREDIT, f"req-{i}")
        except InsufficientCredits:
            return False
        return True

    placed = await asyncio.gather(*(hold(i) for i in range(12)))

    assert sum(placed) == 3
    assert purses.held_by(alice.pk) == 3 * CREDIT
    assert await ledger.balance_of(db, alice.pk) == ledger.Balance(3 * CREDIT, 0)  # holds never reach the database


async def test_a_grant_made_elsewhere_counts_before_a_request_is_refused(database: Database, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    await grant(db, None, alice, CREDIT)
    purses = Purses(database, hold_seconds=60, refresh=3600)  # the balance would otherwise be trusted for an hour
    await purses.reserve(alice.pk, CREDIT, "first")
    with pytest.raises(InsufficientCredits, match="needs 1 credits reserved, but you have 0 available"):
        await purses.reserve(alice.pk, CREDIT, "second")

    await grant(db, None, alice, 5 * CREDIT)  # e.g. `gpuclub credits grant` in another process
    await purses.reserve(alice.pk, CREDIT, "third")

    assert purses.held_by(alice.pk) == 2 * CREDIT


async def test_a_hold_whose_request_never_finished_expires(database: Database, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    await grant(db, None, alice, 2 * CREDIT)
    purses = Purses(database, hold_seconds=0)
    await purses.reserve(alice.pk, 2 * CREDIT, "lost")

    assert purses.sweep() == 1
    assert purses.held_by(alice.pk) == 0
    await purses.reserve(alice.pk, 2 * CREDIT, "next")


async def test_a_finished_request_stays_reserved_until_the_recorder_writes_it(
    database: Database, db: AsyncSession
) -> None:
    alice, owner, purses, recorder = await consumer_and_owner(database, db)
    await purses.reserve(alice.pk, 3 * CREDIT, "call")

    purses.release(alice.pk, "call", cost=2 * CREDIT)
    recorder.add(Finished(Charge("call", alice.pk, owner.pk, 2 * CREDIT, 1000), usage(alice, "call")))
    waiting = purses.held_by(alice.pk)
    await recorder.stop()  # a clean stop writes what is queued

    assert waiting == 2 * CREDIT
    assert purses.held_by(alice.pk) == 0
    assert purses.purses[alice.pk].available == 3 * CREDIT
    assert (await ledger.balance_of(db, alice.pk)).balance == 3 * CREDIT
    assert (await ledger.balance_of(db, owner.pk)).balance == 1_800_000
    assert (await ledger.system_account(db, Kind.CLUB)).balance == 200_000
    assert await count(db, UsageRecord) == 1
    assert await ledger.check(db) == []


async def test_a_batch_charges_each_request_once_and_never_below_zero(db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    owner = await person(db, "owner@lab.example.org")
    await grant(db, None, alice, 2_500_000)
    charges = [Charge(f"r{i}", alice.pk, owner.pk, CREDIT, 0) for i in range(3)]

    balances = await settle_many(db, charges)
    await db.commit()
    again = await settle_many(db, charges)  # the same requests written twice (a retried batch)
    await db.commit()

    assert balances == again == {alice.pk: 0, owner.pk: 2_500_000}
    assert await count(db, LedgerTransaction) == 4  # the grant and three requests, the last one charged 0.5
    assert await ledger.check(db) == []


async def test_a_row_the_database_refuses_does_not_lose_the_rest_of_its_batch(
    database: Database, db: AsyncSession, caplog: pytest.LogCaptureFixture
) -> None:
    alice, owner, purses, recorder = await consumer_and_owner(database, db)
    await recorder.flush()
    for name in ("a", "b", "c"):
        await purses.reserve(alice.pk, CREDIT, name)
        purses.release(alice.pk, name, cost=CREDIT)
    recorder.queue = [
        Finished(Charge("a", alice.pk, owner.pk, CREDIT, 0), usage(alice, "a")),
        Finished(Charge("b", alice.pk, owner.pk, CREDIT, 0), usage(alice, "b") | {"model": None}),  # refused
        Finished(Charge("c", alice.pk, owner.pk, CREDIT, 0), usage(alice, "c")),
    ]

    with caplog.at_level(logging.ERROR, logger="gpuclub"):
        await recorder.flush()

    written = (await db.exec(select(UsageRecord.request_id).order_by(col(UsageRecord.request_id)))).all()
    assert written == ["a", "c"]
    assert (await ledger.balance_of(db, alice.pk)).balance == 3 * CREDIT
    assert "could not record request b" in caplog.text
    assert purses.held_by(alice.pk) == 0  # nothing stays reserved for what could not be written
    assert await ledger.check(db) == []


async def test_while_the_database_cannot_take_a_batch_it_stays_queued_and_is_written_later(
    database: Database, db: AsyncSession
) -> None:
    alice, owner, purses, recorder = await consumer_and_owner(database, db)
    await purses.reserve(alice.pk, CREDIT, "call")
    purses.release(alice.pk, "call", cost=CREDIT)
    recorder.queue = [Finished(Charge("call", alice.pk, owner.pk, CREDIT, 0), usage(alice, "call"))]
    await db.exec(text("ALTER TABLE usage RENAME TO usage_away"))  # type: ignore[call-overload]
    await db.commit()

    with pytest.raises(DBAPIError):
        await recorder.flush()
    reserved_meanwhile = purses.held_by(alice.pk)
    await db.exec(text("ALTER TABLE usage_away RENAME TO usage"))  # type: ignore[call-overload]
    await db.commit()
    await recorder.flush()

    assert reserved_meanwhile == CREDIT
    assert purses.held_by(alice.pk) == 0
    assert await count(db, UsageRecord) == 1
    assert (await ledger.balance_of(db, alice.pk)).balance == 4 * CREDIT
    assert await ledger.check(db) == []


def test_rate_limits_start_no_threads() -> None:
    limiter = Limiter()
    limiter.storage.timer.join()  # the one timer the storage starts when it is made
    limits = Limits(rpm=1000)
    before = set(threading.enumerate())

    for _ in range(50):  # the stock storage would start a timer thread here, alive for 10 ms
        limiter.finish(limiter.admit([(("user", 1), limits)], 10), 10)
    started = set(threading.enumerate()) - before
    limiter.expire()

    assert started == set()
    assert limiter.headers([(("user", 1), limits)])["x-ratelimit-remaining-requests"] == "950"
