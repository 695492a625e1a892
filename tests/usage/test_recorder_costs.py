"""The recorder writes what each request cost its member and earned the GPU's owner on its usage row, the same
split the ledger posts; refused requests get a row with no cost, and a flood of them is only counted. Both
databases."""

from __future__ import annotations

import uuid

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.db import Database
from hub.ledger import service as ledger
from hub.ledger.batch import Charge
from hub.proxy.recorder import Finished, Refusals
from hub.usage.models import UsageRecord
from tests.ledger.test_purses import CREDIT, consumer_and_owner, usage


async def test_each_row_gets_the_cost_and_the_earnings_the_ledger_posted(database: Database, db: AsyncSession) -> None:
    alice, owner, _, recorder = await consumer_and_owner(database, db)
    theirs, own, free = (uuid.uuid4().hex for _ in range(3))
    recorder.add(Finished(Charge(theirs, alice.pk, owner.pk, 2 * CREDIT, 1000, "m"), usage(alice, theirs)))
    recorder.add(Finished(Charge(own, alice.pk, alice.pk, 2 * CREDIT, 1000, "m"), usage(alice, own)))  # her own GPU
    recorder.add(Finished(None, usage(alice, free)))  # a free model: nothing held, nothing charged

    await recorder.flush()

    found = {r.request_id: (r.cost, r.earned) for r in (await db.exec(select(UsageRecord))).all()}
    assert found == {theirs: (2 * CREDIT, 2 * CREDIT * 9 // 10), own: (0, 0), free: (0, 0)}
    assert (await ledger.balance_of(db, owner.pk)).balance == 2 * CREDIT * 9 // 10
    assert (await ledger.balance_of(db, alice.pk)).balance == 3 * CREDIT


async def test_refused_requests_get_a_row_without_cost_and_a_flood_is_counted_not_queued(
    database: Database, db: AsyncSession
) -> None:
    alice, owner, _, recorder = await consumer_and_owner(database, db)
    recorder.refusals = Refusals(most=3)  # at most 3 waiting to be written, all members together
    for _ in range(5):
        recorder.refused(usage(alice) | {"status": 402, "code": "insufficient_quota", "prompt_tokens": 0})
    recorder.refused(usage(owner) | {"status": 404, "code": "model_not_found", "prompt_tokens": 0})

    assert (len(recorder.queue), recorder.refusals.dropped) == (3, 3)
    await recorder.flush()
    recorder.refused(usage(owner) | {"status": 404, "code": "model_not_found", "prompt_tokens": 0})  # room again
    await recorder.flush()

    found = (await db.exec(select(UsageRecord).order_by(col(UsageRecord.id)))).all()
    assert [(r.user_id, r.status, r.code, r.cost, r.agent_id) for r in found] == [
        (alice.pk, 402, "insufficient_quota", 0, None)
    ] * 3 + [(owner.pk, 404, "model_not_found", 0, None)]
    assert await ledger.check(db) == []


async def test_one_member_flooding_refusals_does_not_crowd_out_another(database: Database, db: AsyncSession) -> None:
    alice, owner, _, recorder = await consumer_and_owner(database, db)
    recorder.refusals = Refusals(per_second=2)
    for _ in range(10):
        recorder.refused(usage(alice) | {"status": 429, "code": "rate_limit_exceeded"})
    recorder.refused(usage(owner) | {"status": 429, "code": "rate_limit_exceeded"})

    queued = [item.usage["user_id"] for item in recorder.queue if item.usage]
    # Ten calls take far less than a second; should a second begin among them, two more get in.
    assert queued.count(alice.pk) in (2, 4) and queued.count(owner.pk) == 1
    assert recorder.refusals.dropped == 10 - queued.count(alice.pk)
    await recorder.flush()
