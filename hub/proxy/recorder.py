"""Writing what finished requests cost and used, in batches: one database transaction per batch, not per request.

A finished request is queued at once (its purse keeps the cost reserved meanwhile) and written within `delay`
seconds together with every other request that finished in that time: their ledger transactions, their usage
rows and one balance update per account. A batch the database refuses (a bad row) is written again one request
at a time, so one bad row cannot lose the others; while the database cannot be reached, batches stay queued
(their costs stay reserved) and are tried again. Stopping the hub writes everything still queued.

Each usage row gets what its request cost the member and earned the GPU's owner, split the way the ledger posts
it (`hub.ledger.batch`). Requests the hub refused before any GPU saw them (`refused`) are queued the same way, a
row each; a member's refusals beyond REFUSALS_PER_SECOND, or any beyond MAX_REFUSALS waiting, are only counted,
so a flood of refused requests cannot grow the queue without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DataError, IntegrityError

from hub.db import Database, insert_ignoring_duplicates
from hub.ledger.batch import Charge, settle_many
from hub.ledger.purses import Purses
from hub.outage import Outage, is_outage
from hub.usage.models import UsageRecord

log = logging.getLogger("gpuclub")
DELAY_SECONDS = 0.2
BATCH = 500
RETRY_SECONDS = 2.0
ATTEMPTS = 3  # when stopping
REFUSALS_PER_SECOND = 20  # refused requests logged per member and second; the rest are counted only
MAX_REFUSALS = 10_000  # refused requests waiting to be written, all members together
SAY_DROPPED_SECONDS = 60.0
# Every usage row carries every column, so one statement with many parameter sets writes a whole batch (rows
# from bills signed by an older hub may lack the newer columns).
ROW_DEFAULTS: dict[str, Any] = {
    "key_id": None,
    "agent_id": None,
    "stream": False,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "estimated": False,
    "reported_prompt_tokens": None,
    "reported_completion_tokens": None,
    "disputed": False,
    "audio_ms": None,
    "ttft_ms": None,
    "duration_ms": 0,
    "error": "",
    "code": "",
}


@dataclass(frozen=True)
class Finished:
    charge: Charge | None  # None when the request cost nothing and held nothing
    usage: dict[str, Any] | None  # a usage row's values
    agent_id: int | None = None  # the agent keeping its bill (hub.proxy.bills): told once it is written
    replayed: bool = False  # sent again by an agent after a restart: this process reserved nothing for it
    refused: bool = False  # refused before any GPU saw it: a usage row only (`Recorder.refused`)


class Recorder:
    def __init__(
        self, database: Database, purses: Purses, *, delay: float = DELAY_SECONDS, outage: Outage | None = None
    ) -> None:
        self.database = database
        self.outage = outage or Outage()  # an unreachable database is said once per outage, not every retry
        self.purses = purses
        self.delay = delay
        self.queue: list[Finished] = []
        self.wake = asyncio.Event()
        self.writing = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None
        self.stopped = False
        self.on_written: Callable[[list[Finished]], None] = lambda written: None  # hub.proxy.bills.confirm
        self.ids: set[str] = set()  # the request ids queued or being written: a bill sent back joins none of them
        self.refusals = Refusals()

    def add(self, finished: Finished) -> None:
        if self.stopped:
            log.error("a request finished after the hub stopped writing; its cost and usage are not recorded")
            return
        request_id = request_of(finished)
        if finished.replayed and request_id in self.ids:
            return  # the first copy waits here or is being written; it is confirmed to the same agent
        self.ids.add(request_id)
        self.queue.append(finished)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._loop())
        self.wake.set()

    def refused(self, row: dict[str, Any]) -> None:
        """Queue the usage row of a request refused before any GPU saw it (unless the member is flooding)."""
        if self.stopped or not self.refusals.admit(int(row["user_id"])):
            return
        self.add(Finished(None, row, refused=True))

    async def flush(self) -> None:
        """Write everything queued so far (the loop does this by itself; tests and shutdown call it).

        What finishes while this batch is being written waits for the next one, so batches stay large.
        """
        async with self.writing:
            queued, self.queue = self.queue, []
            for start in range(0, len(queued), BATCH):
                batch = queued[start : start + BATCH]
                try:
                    await self._write(batch)
                    self.ids.difference_update(request_of(item) for item in batch)
                    self.refusals.written(sum(item.refused for item in batch))
                except Exception:
                    # The database is away (or something else went wrong): keep what is not written, in order,
                    # ahead of what finished meanwhile; the costs stay reserved; the next round tries again.
                    self.queue[:0] = queued[start:]
                    raise

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        for _ in range(ATTEMPTS):
            try:
                await self.flush()  # after the batch the loop may still be writing
            except Exception as exc:
                if is_outage(exc):
                    self.outage.noticed(exc)
                else:
                    log.exception("writing finished requests failed while stopping")
            if not self.queue:
                break
        else:
            kept = sum(item.agent_id is not None for item in self.queue)
            log.error(
                "%d finished requests could not be written before the hub stopped; their agents keep the bills of "
                "%d of them for the next hub",
                len(self.queue),
                kept,
            )
        self.stopped = True

    async def _loop(self) -> None:
        while True:
            await self.wake.wait()
            await asyncio.sleep(self.delay)  # let the requests finishing meanwhile join this batch
            self.wake.clear()
            try:
                # Stopping the hub cancels this loop; a batch already taken from the queue is still written.
                await asyncio.shield(self.flush())
            except Exception as exc:  # what was not written is queued again; the loop must go on
                if is_outage(exc):
                    self.outage.noticed(exc)
                else:
                    log.exception("writing finished requests failed; trying again")
                self.wake.set()
                await asyncio.sleep(RETRY_SECONDS)
            else:
                self.outage.recovered()  # written: the database is back

    async def _write(self, batch: list[Finished]) -> None:
        charges = [item.charge for item in batch if item.charge is not None]
        rows = [ROW_DEFAULTS | item.usage | split(item.charge) for item in batch if item.usage is not None]
        replayed = any(item.replayed for item in batch)
        try:
            async with self.database.session() as db:
                if rows:  # first: on SQLite this takes the write lock before the balances are read
                    # A request written before (an agent's bill sent again) keeps its first row.
                    table = UsageRecord.__table__  # type: ignore[attr-defined]
                    statement = insert_ignoring_duplicates(db, table)
                    if replayed:  # which rows are new: only those bills may still charge (a waived one stays so)
                        statement = statement.returning(table.c.request_id)
                    done = await db.exec(statement, params=rows)
                    if replayed:
                        fresh = {str(row[0]) for row in done.all()}
                        again = {item.charge.request_id for item in batch if item.replayed and item.charge}
                        charges = [c for c in charges if c.request_id in fresh or c.request_id not in again]
                balances = await settle_many(db, charges) if charges else {}
                await db.commit()
        except (IntegrityError, DataError):
            if len(batch) > 1:
                for item in batch:  # find the one the database refused; write the rest
                    await self._write([item])
                return
            request = batch[0].charge.request_id if batch[0].charge else (batch[0].usage or {}).get("request_id")
            log.exception("could not record request %s; its cost and usage are lost", request)
            balances = {}
        costs: defaultdict[int, int] = defaultdict(int)
        for item in batch:
            if item.charge is not None and not item.replayed:
                costs[item.charge.consumer_id] += item.charge.cost
        self.purses.written(costs, balances)
        self.on_written(batch)


def split(charge: Charge | None) -> dict[str, int]:
    """What a request cost its member (the club's fee included) and earned the GPU's owner, as the ledger posts it
    (`hub.ledger.batch.settle_many`): nothing on one's own GPU or when nobody earns. (The ledger also never takes a
    member below zero; the purse held the cost, so the two differ only if a deduction came in meanwhile.)"""
    if charge is None or charge.provider_id is None or charge.provider_id == charge.consumer_id or charge.cost <= 0:
        return {"cost": 0, "earned": 0}
    return {"cost": charge.cost, "earned": charge.cost - charge.cost * charge.fee_bps // 10_000}


class Refusals:
    """How many refused requests each member had logged this second, and how many wait to be written."""

    def __init__(self, *, per_second: int = REFUSALS_PER_SECOND, most: int = MAX_REFUSALS) -> None:
        self.per_second = per_second
        self.most = most
        self.second = 0
        self.this_second: defaultdict[int, int] = defaultdict(int)
        self.waiting = 0
        self.dropped = 0  # since the hub started
        self.unsaid = 0  # dropped since it was last said in the log
        self.said = -SAY_DROPPED_SECONDS

    def admit(self, user_id: int) -> bool:
        now = time.monotonic()
        if (second := int(now)) != self.second:
            self.second = second
            self.this_second.clear()
        if self.this_second[user_id] >= self.per_second or self.waiting >= self.most:
            self.dropped += 1
            self.unsaid += 1
            if now - self.said >= SAY_DROPPED_SECONDS:
                log.warning(
                    "%d refused requests were not logged (above %d a second for one member, or %d waiting)",
                    self.unsaid,
                    self.per_second,
                    self.most,
                )
                self.said, self.unsaid = now, 0
            return False
        self.this_second[user_id] += 1
        self.waiting += 1
        return True

    def written(self, count: int) -> None:
        self.waiting = max(0, self.waiting - count)


def request_of(finished: Finished) -> str:
    if finished.charge is not None:
        return finished.charge.request_id
    return str((finished.usage or {}).get("request_id", ""))
