"""Periodic chores of a running hub: grant the monthly allowance, drop holds and rate counters that expired."""

from __future__ import annotations

import asyncio
import logging

from hub.background import cancel
from hub.db import Database
from hub.ledger.grants import grant_monthly_allowances
from hub.outage import Outage, is_outage
from hub.runtime import Balances, RateLimits

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
    ) -> None:
        self.database = database
        self.outage = outage or Outage()
        self.purses = purses
        self.limiter = limiter
        self.interval = interval
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        await cancel(self.task)

    async def run_once(self) -> None:
        released = self.purses.sweep()
        self.limiter.expire()
        async with self.database.session() as db:
            granted = await grant_monthly_allowances(db)
        if released or granted:
            log.info("housekeeping: released %d expired holds, granted %d allowances", released, granted)

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
