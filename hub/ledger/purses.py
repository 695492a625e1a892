"""Credits held for requests in flight, kept in the hub's memory so a request never waits for the database.

A member's purse is their balance as the database last told us, minus what their requests in flight hold, minus
what finished requests cost but the ledger writer has not written yet. Reserving is one synchronous step on the
event loop (check, then add), so however many requests arrive at once none can hold more than is available.

Holds never reach the database: a crash loses reservations, never money (the balance there is what was
written). A balance changed by another process (a grant from the CLI) is read again after `refresh` seconds, and
at once before a request would be refused. One hub process owns the purses (like the tunnel and the quota
counters), so several hub processes on one database could together hold more than a balance; settlement still
never takes a member below zero.

While the database is unreachable (`hub.outage`), a purse keeps its last balance (minus what is held and what the
recorder has queued), if it was read or written at most the outage's `seconds` ago; a member whose balance was
never read gets 503 with Retry-After.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlmodel import select

from hub.db import Database
from hub.errors import InsufficientCredits, ask_for_credits
from hub.ledger.models import Account
from hub.outage import Outage, is_outage
from hub.parsing import format_credits

REFRESH_SECONDS = 2.0


@dataclass
class Purse:
    balance: int  # as last read from, or written to, the database
    read_at: float
    version: int = 0  # changes whenever the writer sets the balance; a read that started before is dropped
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)  # call id -> (amount, expires at)
    known_at: float = field(default_factory=time.monotonic)  # balance last read or written (`stale` forgets it)
    held: int = 0
    unwritten: int = 0  # charged to finished requests, not yet written

    @property
    def available(self) -> int:
        return self.balance - self.held - self.unwritten


class Purses:
    def __init__(
        self,
        database: Database,
        *,
        hold_seconds: float,
        refresh: float = REFRESH_SECONDS,
        outage: Outage | None = None,
        buy_url: str | None = None,  # where members buy credits; None: the hub sells none (no Stripe)
    ) -> None:
        self.database = database
        self.buy_url = buy_url
        self.hold_seconds = hold_seconds
        self.refresh = refresh
        self.outage = outage or Outage()
        self.purses: dict[int, Purse] = {}

    async def reserve(self, user_id: int, amount: int, call_id: str) -> None:
        """Hold `amount` for the request `call_id`, or raise InsufficientCredits and hold nothing."""
        purse = self.purses.get(user_id)
        if purse is None or time.monotonic() - purse.read_at > self.refresh:
            purse = await self._read(user_id)
        if purse.available < amount:
            purse = await self._read(user_id)  # a grant may have landed since we last looked
        if purse.available < amount:
            raise InsufficientCredits(
                f"This request needs {format_credits(amount)} credits reserved, but you have "
                f"{format_credits(max(purse.available, 0))} available. {ask_for_credits(self.buy_url)}"
            )
        purse.holds[call_id] = (amount, time.monotonic() + self.hold_seconds)
        purse.held += amount

    def release(self, user_id: int, call_id: str, *, cost: int = 0) -> None:
        """The request is over: free its hold; `cost` stays reserved until the writer has written it."""
        purse = self.purses.get(user_id)
        if purse is None:
            return
        amount, _ = purse.holds.pop(call_id, (0, 0.0))
        purse.held -= amount
        purse.unwritten += cost

    def written(self, cost_by_user: dict[int, int], balances: dict[int, int]) -> None:
        """The writer committed: `cost_by_user` is now in the database, whose balances are `balances`."""
        for user_id, cost in cost_by_user.items():
            if (purse := self.purses.get(user_id)) is not None:
                purse.unwritten = max(0, purse.unwritten - cost)
        for user_id, balance in balances.items():
            if (purse := self.purses.get(user_id)) is not None:
                purse.balance = balance
                purse.read_at = purse.known_at = time.monotonic()
                purse.version += 1

    def stale(self, user_id: int) -> None:
        """The balance was changed outside the writer (an admin's grant): read it again before the next hold.

        Call it after the change is committed; a read already under way is dropped (its number may be older).
        """
        if (purse := self.purses.get(user_id)) is not None:
            # Not known any more either: during an outage the old number would be served as if unchanged.
            purse.read_at = purse.known_at = float("-inf")
            purse.version += 1

    def stale_all(self) -> None:
        for user_id in self.purses:
            self.stale(user_id)

    def held_by(self, user_id: int) -> int:
        purse = self.purses.get(user_id)
        return purse.held + purse.unwritten if purse else 0

    def sweep(self) -> int:
        """Drop holds whose request never finished (a bug, not a crash: a crash loses the purses); how many."""
        now = time.monotonic()
        dropped = 0
        for purse in self.purses.values():
            for call_id, (amount, expires) in list(purse.holds.items()):
                if expires <= now:
                    del purse.holds[call_id]
                    purse.held -= amount
                    dropped += 1
        return dropped

    async def _read(self, user_id: int) -> Purse:
        if self.outage.degraded:
            return self._last(user_id)
        purse = self.purses.get(user_id)
        version = purse.version if purse else 0
        try:
            async with self.database.session() as db:
                found = (await db.exec(select(Account.balance).where(Account.user_id == user_id))).first()
        except Exception as exc:
            if not is_outage(exc):
                raise
            self.outage.noticed(exc)
            return self._last(user_id)
        self.outage.answered()
        balance = int(found or 0)
        purse = self.purses.setdefault(user_id, Purse(balance, time.monotonic()))
        if purse.version == version:  # nothing was written while we read: our number is the newest
            purse.balance, purse.read_at = balance, time.monotonic()
            purse.known_at = purse.read_at
        return purse

    def _last(self, user_id: int) -> Purse:
        """During an outage: the purse as it is, unless its balance was never read or too long ago."""
        purse = self.purses.get(user_id)
        if purse is None or not self.outage.usable(purse.known_at):
            raise self.outage.unavailable("your balance")
        return purse
