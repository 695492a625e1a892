"""The bills agents keep for the hub, on both databases: sent back once or many times, each request is written once;
a bill the hub did not sign for this agent, or an old one, is refused."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.db import Database, utcnow
from hub.ledger import service as ledger
from hub.ledger.batch import Charge
from hub.ledger.models import LedgerTransaction
from hub.proxy.bills import BILL_DAYS, BadBill, Bills
from hub.proxy.recorder import Finished
from hub.usage.models import UsageRecord
from tests.ledger.test_purses import CREDIT, consumer_and_owner, count, usage

BILLS = Bills.for_secret("the-hub-secret-" + "x" * 32)
AGENT = 7


async def test_a_bill_sent_back_again_and_again_is_written_once(database: Database, db: AsyncSession) -> None:
    alice, owner, _, recorder = await consumer_and_owner(database, db)
    call = uuid.uuid4().hex
    bill = BILLS.sign(AGENT, Finished(Charge(call, alice.pk, owner.pk, 2 * CREDIT, 1000, "m"), usage(alice, call)))

    recorder.add(BILLS.verify(AGENT, bill))
    recorder.add(BILLS.verify(AGENT, bill))  # the agent reconnected before the first copy was written
    await recorder.flush()
    recorder.add(BILLS.verify(AGENT, bill))  # and again after a restart of the hub
    await recorder.flush()

    assert await count(db, UsageRecord) == 1
    assert await count(db, LedgerTransaction) == 2  # alice's grant and this one request
    assert (await ledger.balance_of(db, alice.pk)).balance == 3 * CREDIT
    assert (await ledger.balance_of(db, owner.pk)).balance == 2 * CREDIT * 9 // 10
    assert await ledger.check(db) == []


async def test_the_agent_is_told_which_bills_are_written(database: Database, db: AsyncSession) -> None:
    alice, owner, _, recorder = await consumer_and_owner(database, db)
    told: list[list[str | None]] = []
    recorder.on_written = lambda batch: told.append([item.charge.request_id if item.charge else None for item in batch])
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    for call in (first, second):
        recorder.add(Finished(Charge(call, alice.pk, owner.pk, CREDIT, 0), usage(alice, call), agent_id=AGENT))

    await recorder.flush()

    assert told == [[first, second]]


def test_what_a_bill_says_comes_back_unchanged() -> None:
    row = {"request_id": "a" * 32, "user_id": 1, "model": "m", "status": 200, "created_at": None}
    finished = Finished(Charge("a" * 32, 1, 2, 5, 1000, "m"), row | {"created_at": utcnow()}, agent_id=AGENT)

    again = BILLS.verify(AGENT, BILLS.sign(AGENT, finished))

    assert again == Finished(finished.charge, finished.usage, agent_id=AGENT, replayed=True)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda bill: bill[:-2] + ("AA" if not bill.endswith("AA") else "BB"), "not signed by this hub"),
        (lambda bill: _rewrite(bill, cost=30 * CREDIT), "not signed by this hub"),  # a provider raising it
        (lambda bill: Bills.for_secret("another hub").sign(AGENT, _finished()), "not signed by this hub"),
        (lambda bill: BILLS.sign(AGENT + 1, _finished()), "given to another agent"),
        (lambda bill: "garbage", "not a bill"),
        (lambda bill: "x" * 5000 + "." + "y", "not a bill"),
    ],
)
def test_a_bill_the_hub_did_not_sign_for_this_agent_is_refused(change: object, reason: str) -> None:
    bill = BILLS.sign(AGENT, _finished())

    with pytest.raises(BadBill, match=reason):
        BILLS.verify(AGENT, change(bill))  # type: ignore[operator]


def test_a_bill_older_than_the_limit_is_refused() -> None:
    bill = BILLS.sign(AGENT, _finished())

    BILLS.verify(AGENT, bill, now=time.time() + (BILL_DAYS - 1) * 86400)
    with pytest.raises(BadBill, match=f"older than {BILL_DAYS} days"):
        BILLS.verify(AGENT, bill, now=time.time() + (BILL_DAYS + 1) * 86400)


def _finished() -> Finished:
    return Finished(Charge("b" * 32, 1, 2, 3 * CREDIT, 1000, "m"), None)


def _rewrite(bill: str, **charge: int) -> str:
    """The same bill with other numbers, keeping the hub's signature: what a lying provider would try."""
    data, mac = bill.split(".")
    payload = json.loads(base64.urlsafe_b64decode(data))
    payload["charge"].update(charge)
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode() + "." + mac
