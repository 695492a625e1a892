"""Writing what finished requests cost and used, in batches: one database transaction per batch, not per request.

A finished request is queued at once (its purse keeps the cost reserved meanwhile) and written within `delay`
seconds together with every other request that finished in that time: their ledger transactions, their usage
rows and one balance update per account. A batch the database refuses (a bad row) is written again one request
at a time, so one bad row cannot lose the others; while the database cannot be reached, batches stay queued
(their costs stay reserved) and are tried again. Stopping the hub writes everything still queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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


@dataclass(frozen=True)
class Finished:
    charge: Charge | None  # None when the request cost nothing and held nothing
    usage: dict[str, Any] | None  # a usage row's values
    agent_id: int | None = None  # the agent keeping its bill (hub.proxy.bills): told once it is written
    replayed: bool = False  # sent again by an agent after a restart: this process reserved nothing for it


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
        rows = [item.usage for item in batch if item.usage is not None]
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


def request_of(finished: Finished) -> str:
    if finished.charge is not None:
        return finished.charge.request_id
    return str((finished.usage or {}).get("request_id", ""))
