"""Admission reads prices and limits from the database rarely: once per model for a burst, not once per request."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import event
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.db import Database
from hub.ledger.grants import grant
from hub.ledger.purses import Purses
from hub.pricing import service as pricing
from hub.proxy.admission import Admission
from hub.proxy.bounds import Limits
from hub.proxy.recorder import Recorder
from tests.support.people import person

CREDIT = 1_000_000


async def test_a_burst_of_requests_reads_the_price_once_and_holds_for_each(
    database: Database, db: AsyncSession
) -> None:
    alice = await person(db, "alice@lab.example.org")
    await grant(db, None, alice, 100 * CREDIT)
    await pricing.set_price(db, None, "m", input_micro=0, output_micro=CREDIT * 1_000_000)  # 1 credit a token
    purses = Purses(database, hold_seconds=60)
    admission = Admission(database, purses, Recorder(database, purses))
    price_reads: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM prices" in statement:
            price_reads.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", seen)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    passes = await asyncio.gather(
        *(
            admission.admit(
                call_id=f"call-{i}",
                user_id=alice.pk,
                key_id=0,
                model="m",
                size=lambda default: Limits.of(
                    body, len(json.dumps(body)), default_max_tokens=default, embeddings=False
                ),
                owns_agent_for_model=False,
            )
            for i in range(20)
        )
    )

    assert len(price_reads) == 1
    assert {p.held for p in passes} == {2 * CREDIT}
    assert purses.held_by(alice.pk) == 40 * CREDIT
