"""Periodic chores of a running hub: grant the monthly allowance, drop holds and rate counters that expired,
forget request log rows older than the retention (`hub.usage.retention`)."""

from __future__ import annotations

import asyncio
import logging

from hub.accounts.service import delete_expired_login_links
from hub.background import cancel
from hub.db import Database
from hub.ledger.grants import grant_monthly_allowances
from hub.outage import Outage, is_outage
from hub.runtime import Balances, RateLimits
from hub.usage.retention import delete_old_usage
from hub.usage.rollup import fold, watermark

log = logging.getLogger("gpuclub")
INTERVAL = 60.0


class Housekeeping:
    def __init__(
        self,
        database: Database,
        purses: Balances,
        limiter: RateLimits,
        interval: float = INTERVAL,
        outage: Outage | None = None,
        retention_days: int = 0,
    ) -> None:
        self.database = database
        self.outage = outage or Outage()
        self.purses = purses
        self.limiter = limiter
        self.interval = interval
        self.retention_days = retention_days  # of the request log; 0 keeps it for ever
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        await cancel(self.task)

    async def run_once(self) -> None:
        released = self.purses.sweep()
        self.limiter.expire()
        async with self.database.session() as db:
            await fold(db)  # first: retention may delete only rows already folded into the daily rollup
            granted = await grant_monthly_allowances(db)
            await delete_expired_login_links(db)
            # Below the watermark, and never the row at it: on SQLite a table's highest id must stay, or new rows
            # would reuse ids the rollup counts as folded already.
            deleted = await delete_old_usage(db, self.retention_days, upto_id=await watermark(db) - 1)
        if released or granted or deleted:
            log.info(
                "housekeeping: released %d expired holds, granted %d allowances, forgot %d old request log rows",
                released,
                granted,
                deleted,
            )

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:
                if is_outage(exc):
                    self.outage.noticed(exc)  # said once per outage; the next round tries again
                else:
                    log.exception("housekeeping failed")
            await asyncio.sleep(self.interval)
