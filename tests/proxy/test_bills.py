"""The bills agents keep for the hub, on both databases: sent back once or many times, each request is written once;
a bill the hub did not sign for this agent, or an old one, is refused."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel.ext.asyncio.session import AsyncSession

from agent import protocol
from hub.db import Database, utcnow
from hub.ledger import service as ledger
from hub.ledger.batch import Charge, settle_many
from hub.ledger.grants import deduct, grant
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


async def test_a_bill_sent_back_while_its_batch_fails_to_write_is_charged_once(
    database: Database, db: AsyncSession
) -> None:
    alice, owner, _, recorder = await consumer_and_owner(database, db)
    call = uuid.uuid4().hex
    original = Finished(Charge(call, alice.pk, owner.pk, 2 * CREDIT, 0, "m"), usage(alice, call), agent_id=AGENT)
    recorder.add(original)
    await db.exec(text("ALTER TABLE usage RENAME TO usage_away"))  # type: ignore[call-overload]
    await db.commit()
    with pytest.raises(DBAPIError):
        await recorder.flush()  # the batch goes back into the queue
    recorder.add(BILLS.verify(AGENT, BILLS.sign(AGENT, original)))  # the agent reconnected meanwhile
    await db.exec(text("ALTER TABLE usage_away RENAME TO usage"))  # type: ignore[call-overload]
    await db.commit()
    await recorder.flush()

    assert await count(db, UsageRecord) == 1
    assert (await ledger.balance_of(db, alice.pk)).balance == 3 * CREDIT
    assert await ledger.check(db) == []


async def test_a_request_queued_twice_in_one_batch_is_charged_once(database: Database, db: AsyncSession) -> None:
    alice, owner, _, _ = await consumer_and_owner(database, db)
    charge = Charge(uuid.uuid4().hex, alice.pk, owner.pk, CREDIT, 0, "m")

    await settle_many(db, [charge, charge])
    await db.commit()

    assert (await ledger.balance_of(db, alice.pk)).balance == 4 * CREDIT
    assert (await ledger.balance_of(db, owner.pk)).balance == CREDIT


async def test_a_charge_waived_when_written_is_not_collected_by_sending_its_bill_back_later(
    database: Database, db: AsyncSession
) -> None:
    alice, owner, _, recorder = await consumer_and_owner(database, db)
    await deduct(db, None, alice, 5 * CREDIT, reason="test")  # nothing left: the request's charge is waived
    call = uuid.uuid4().hex
    original = Finished(Charge(call, alice.pk, owner.pk, CREDIT, 0, "m"), usage(alice, call), agent_id=AGENT)
    recorder.add(original)
    await recorder.flush()
    await grant(db, None, alice, 5 * CREDIT)

    recorder.add(BILLS.verify(AGENT, BILLS.sign(AGENT, original)))  # days later, when alice has credits again
    await recorder.flush()

    assert (await ledger.balance_of(db, alice.pk)).balance == 5 * CREDIT
    assert (await ledger.balance_of(db, owner.pk)).balance == 0
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
        (lambda bill: "x" * 20_000 + "." + "y", "not a bill"),
    ],
)
def test_a_bill_the_hub_did_not_sign_for_this_agent_is_refused(change: object, reason: str) -> None:
    bill = BILLS.sign(AGENT, _finished())

    with pytest.raises(BadBill, match=reason):
        BILLS.verify(AGENT, change(bill))  # type: ignore[operator]


def test_the_largest_bill_the_hub_signs_comes_back() -> None:
    name = "\U0001f680" * 200  # the longest model name an agent may give, four bytes a character
    row = {"request_id": "c" * 32, "model": name, "error": "\u00e9" * 300, "created_at": utcnow()}
    bill = BILLS.sign(AGENT, Finished(Charge("c" * 32, 1, 2, 5, 1000, name), row))

    assert len(bill) < protocol.MAX_BILL
    assert BILLS.verify(AGENT, bill).usage == row


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
