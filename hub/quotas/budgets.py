"""Per-key budgets in credits per UTC day and per UTC month, enforced at admission in this process.

A key's tally for a period is what the database said the key had spent in it when this process first needed the
period (`seed`), plus what each request that finished since cost, plus what its requests in flight hold. Reserving
is one synchronous step on the event loop (check every period, then hold in each), so however many requests
arrive at once, a key's requests together never hold, nor spend, more than its budget: the purses' rule, per key
and per period. A hold is as large as the request's credit hold, which already bounds what it can cost.

A new period starts from the database again; holds of requests still in flight move into it (they will be
charged when they finish, which is in the new period: usage rows are dated when a request ends). What a request
that held in a tally and ended after its period, before the next period was seeded, is kept aside and counted
there once: only requests in flight at the rollover (at most MAX_LATE per tally), so a key whose budget was
removed keeps no list growing with its traffic, and the next seed excludes a short list of ids.
Like the purses, tallies live in one hub process: several processes on one database would each keep their own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hub.errors import KeyBudgetExceeded
from hub.parsing import format_credits

DAY, MONTH = "day", "month"
KINDS = (DAY, MONTH)
MAX_LATE = 1_000  # late requests kept per tally; past it their cost is left to the seed's read of the usage rows


@dataclass(frozen=True)
class Budget:
    """Micro-credits a key may spend per UTC day and per UTC month; None: no budget of that kind."""

    per_day: int | None = None
    per_month: int | None = None
    kinds: tuple[str, ...] = field(init=False, compare=False)  # those set: admission reads it on every request

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(kind for kind in KINDS if self.limit(kind) is not None))

    def limit(self, kind: str) -> int | None:
        return self.per_day if kind == DAY else self.per_month


@dataclass
class Tally:
    period: int  # days since 1970, or months since year 0 (year * 12 + month - 1)
    spent: int
    holds: dict[str, int] = field(default_factory=dict)  # call id -> amount
    held: int = 0
    late: dict[str, tuple[int, int]] = field(default_factory=dict)  # call id -> (the period it ended in, cost)


def month_of(day: int) -> int:
    date = datetime.fromtimestamp(day * 86_400, UTC)
    return date.year * 12 + date.month - 1


def period_start(kind: str, period: int) -> datetime:
    if kind == DAY:
        return datetime.fromtimestamp(period * 86_400, UTC)
    return datetime(period // 12, period % 12 + 1, 1, tzinfo=UTC)


def period_end(kind: str, period: int) -> datetime:
    return period_start(kind, period + 1)


def current_period(kind: str) -> int:
    day = int(time.time() // 86_400)
    return day if kind == DAY else month_of(day)


class Budgets:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # seconds since 1970 (tests move it to the next day)
        self.tallies: dict[tuple[int, str], Tally] = {}  # (key id, kind) -> the latest period's tally
        self._month: tuple[int, int] = (-1, -1)  # (day, its month): months change rarely, dates cost

    def current(self, kind: str) -> int:
        day = int(self.clock() // 86_400)
        if kind == DAY:
            return day
        if self._month[0] != day:
            self._month = (day, month_of(day))
        return self._month[1]

    def needs_seed(self, key_id: int, kind: str) -> bool:
        tally = self.tallies.get((key_id, kind))
        return tally is None or tally.period < self.current(kind)

    def late_calls(self, key_id: int, kind: str, period: int) -> set[str]:
        """Requests that ended in `period` after the tally before it: their cost is counted from memory."""
        tally = self.tallies.get((key_id, kind))
        return {call for call, (ended, _) in tally.late.items() if ended == period} if tally else set()

    def seed(self, key_id: int, kind: str, period: int, spent: int) -> None:
        """Start `period` at `spent` (the database's sum, without `late_calls`), unless it has started already."""
        old = self.tallies.get((key_id, kind))
        if old is not None and old.period >= period:
            return
        tally = Tally(period, spent, holds=dict(old.holds) if old else {}, held=old.held if old else 0)
        if old is not None:
            for call, (ended, cost) in old.late.items():
                if ended == period:
                    tally.spent += cost
                elif ended > period:
                    tally.late[call] = (ended, cost)
        self.tallies[(key_id, kind)] = tally

    def reserve(self, key_id: int, budget: Budget, amount: int, call_id: str) -> None:
        """Hold `amount` in every period the key has a budget for, or raise KeyBudgetExceeded and hold nothing.

        Every period must have been seeded (`needs_seed`) just before, with no await in between.
        """
        kinds = budget.kinds
        for kind in kinds:
            limit = budget.limit(kind) or 0
            tally = self.tallies[(key_id, kind)]
            if tally.spent + tally.held + amount > limit:
                raise self._refuse(kind, limit, tally, amount)
        for kind in kinds:
            tally = self.tallies[(key_id, kind)]
            tally.holds[call_id] = amount
            tally.held += amount

    def finish(self, key_id: int, call_id: str, cost: int) -> None:
        """A request of the key is over: free its holds and count what it cost (at most what it held).

        Every request of a key with a tally counts, held or not (one admitted while the key had no budget), so a
        budget set again later in the period starts from what the key really spent. One that ends after the
        tally's period is kept aside only if it held in the tally (it was in flight at the rollover); the others
        are counted by the next seed, which reads the usage rows.
        """
        for kind in KINDS:
            tally = self.tallies.get((key_id, kind))
            if tally is None:
                continue
            amount = tally.holds.pop(call_id, None)
            if amount is not None:
                tally.held -= amount
            if not cost:
                continue
            now = self.current(kind)
            if tally.period >= now:
                tally.spent += cost
            elif amount is not None and len(tally.late) < MAX_LATE:  # it was in flight at the rollover
                tally.late[call_id] = (now, cost)

    def used(self, key_id: int, kind: str) -> int | None:
        """What the key spent and holds in the current period, as this process knows it (None: not tracked)."""
        tally = self.tallies.get((key_id, kind))
        if tally is None or tally.period < self.current(kind):
            return None
        return tally.spent + tally.held

    def _refuse(self, kind: str, limit: int, tally: Tally, amount: int) -> KeyBudgetExceeded:
        ends = period_end(kind, tally.period)
        wait = max(1, math.ceil(ends.timestamp() - self.clock()))
        when = "today" if kind == DAY else "this month"
        return KeyBudgetExceeded(
            f"This API key's budget of {format_credits(limit)} credits per {kind} is used up: "
            f"{format_credits(tally.spent)} spent {when} and {format_credits(tally.held)} held by requests in "
            f"flight, and this request needs {format_credits(amount)} reserved. The budget starts again at "
            f"{ends:%Y-%m-%d %H:%M} UTC; the key's owner can raise it on the API keys page.",
            retry_after=wait,
        )
