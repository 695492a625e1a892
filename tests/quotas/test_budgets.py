"""A key's budget in memory: holds never exceed it, finished requests count what they cost, periods start over."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import exc as sa
from sqlalchemy import func
from sqlmodel import col, select

from hub.db import Database
from hub.errors import KeyBudgetExceeded
from hub.outage import is_outage
from hub.quotas.budgets import DAY, MAX_LATE, MONTH, Budget, Budgets, month_of, period_start
from hub.usage.models import UsageRecord

CREDIT = 1_000_000
KEY = 7


class Clock:
    def __init__(self, when: datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now


def seeded(clock: Clock, budget: Budget, spent: int = 0) -> Budgets:
    budgets = Budgets(clock)
    for kind in budget.kinds:
        assert budgets.needs_seed(KEY, kind)
        budgets.seed(KEY, kind, budgets.current(kind), spent)
        assert not budgets.needs_seed(KEY, kind)
    return budgets


def test_holds_stop_exactly_at_the_budget_and_a_refusal_holds_nothing() -> None:
    clock = Clock(datetime(2026, 12, 3, 12, tzinfo=UTC))
    budget = Budget(per_day=5 * CREDIT)
    budgets = seeded(clock, budget, spent=1 * CREDIT)

    for i in range(4):
        budgets.reserve(KEY, budget, CREDIT, f"call{i}")
    with pytest.raises(KeyBudgetExceeded) as refused:
        budgets.reserve(KEY, budget, CREDIT, "one too many")

    assert budgets.used(KEY, DAY) == 5 * CREDIT
    assert refused.value.status_code == 402 and refused.value.code == "key_budget_exceeded"
    assert "budget of 5 credits per day" in refused.value.message
    assert "2026-12-04 00:00 UTC" in refused.value.message
    assert refused.value.retry_after == 12 * 3600


def test_a_finished_request_counts_its_cost_and_frees_the_rest_of_its_hold() -> None:
    clock = Clock(datetime(2026, 12, 3, 12, tzinfo=UTC))
    budget = Budget(per_day=2 * CREDIT, per_month=10 * CREDIT)
    budgets = seeded(clock, budget)
    budgets.reserve(KEY, budget, 2 * CREDIT, "a")
    with pytest.raises(KeyBudgetExceeded):
        budgets.reserve(KEY, budget, CREDIT, "b")

    budgets.finish(KEY, "a", CREDIT // 2)  # used a quarter of what it held
    budgets.reserve(KEY, budget, CREDIT, "c")

    assert budgets.used(KEY, DAY) == CREDIT // 2 + CREDIT
    assert budgets.used(KEY, MONTH) == CREDIT // 2 + CREDIT


def test_the_tighter_period_refuses_and_the_other_holds_nothing_for_it() -> None:
    clock = Clock(datetime(2026, 12, 3, 12, tzinfo=UTC))
    budget = Budget(per_day=10 * CREDIT, per_month=3 * CREDIT)
    budgets = seeded(clock, budget, spent=2 * CREDIT)

    with pytest.raises(KeyBudgetExceeded) as refused:
        budgets.reserve(KEY, budget, 2 * CREDIT, "a")

    assert "per month" in refused.value.message and "2027-01-01 00:00 UTC" in refused.value.message
    assert budgets.used(KEY, DAY) == 2 * CREDIT  # nothing held by the refused request


def test_a_new_day_starts_from_the_database_and_keeps_the_holds_of_requests_in_flight() -> None:
    clock = Clock(datetime(2026, 12, 3, 23, 59, 59, tzinfo=UTC))
    budget = Budget(per_day=3 * CREDIT)
    budgets = seeded(clock, budget, spent=3 * CREDIT - CREDIT)
    budgets.reserve(KEY, budget, CREDIT, "across midnight")

    clock.now += 2  # 00:00:01 the next day
    assert budgets.needs_seed(KEY, DAY) and budgets.used(KEY, DAY) is None
    budgets.seed(KEY, DAY, budgets.current(DAY), 0)
    budgets.reserve(KEY, budget, 2 * CREDIT, "new day")  # 1 held across midnight + 2: the whole budget
    with pytest.raises(KeyBudgetExceeded):
        budgets.reserve(KEY, budget, 1, "one micro-credit more")
    budgets.finish(KEY, "across midnight", CREDIT)  # it ended today, so it counts today (its usage row is dated today)

    assert budgets.used(KEY, DAY) == 3 * CREDIT


def test_a_cost_that_ends_after_its_period_but_before_the_next_is_seeded_is_counted_there_once() -> None:
    clock = Clock(datetime(2026, 12, 3, 23, 59, 59, tzinfo=UTC))
    budget = Budget(per_day=5 * CREDIT)
    budgets = seeded(clock, budget)
    budgets.reserve(KEY, budget, 2 * CREDIT, "late")
    clock.now += 2
    budgets.finish(KEY, "late", 2 * CREDIT)
    today = budgets.current(DAY)

    assert budgets.late_calls(KEY, DAY, today) == {"late"}  # the database read leaves this request out
    budgets.seed(KEY, DAY, today, CREDIT)  # what the database had, without it
    assert budgets.used(KEY, DAY) == 3 * CREDIT
    assert budgets.late_calls(KEY, DAY, today) == set()


def test_a_request_the_key_made_without_a_hold_still_counts_once_the_key_has_a_tally() -> None:
    clock = Clock(datetime(2026, 12, 3, 12, tzinfo=UTC))
    budgets = seeded(clock, Budget(per_day=5 * CREDIT))

    budgets.finish(KEY, "admitted while the key had no budget", 2 * CREDIT)
    budgets.finish(KEY + 1, "another key's", 2 * CREDIT)

    assert budgets.used(KEY, DAY) == 2 * CREDIT and budgets.used(KEY + 1, DAY) is None


def test_a_key_whose_budget_was_removed_keeps_no_growing_list_of_late_requests() -> None:
    clock = Clock(datetime(2026, 12, 3, 23, 59, 59, tzinfo=UTC))
    budget = Budget(per_day=5 * CREDIT, per_month=100 * CREDIT)
    budgets = seeded(clock, budget)
    budgets.reserve(KEY, budget, CREDIT, "in flight at midnight")
    clock.now += 2  # the owner removed the budget; the key goes on being used the next day, never seeding again

    budgets.finish(KEY, "in flight at midnight", CREDIT)
    for i in range(MAX_LATE + 50):
        budgets.finish(KEY, f"without a hold {i}", 10)

    today = budgets.current(DAY)
    assert budgets.late_calls(KEY, DAY, today) == {"in flight at midnight"}
    assert all(len(tally.late) <= 1 for tally in budgets.tallies.values())


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # asyncpg's limit of 32,767 arguments
async def test_a_statement_the_driver_will_not_send_is_no_outage(database: Database) -> None:
    too_many = select(func.count()).where(col(UsageRecord.request_id).not_in([f"r{i}" for i in range(33_000)]))
    with pytest.raises(sa.InterfaceError) as refused:
        async with database.session() as db:
            await db.exec(too_many)
    closed = sa.InterfaceError("SELECT", {}, Exception("cannot perform operation: connection is closed"))

    assert not is_outage(refused.value) and is_outage(closed)


def test_months_and_their_starts() -> None:
    day = int(datetime(2026, 12, 31, tzinfo=UTC).timestamp() // 86_400)

    assert month_of(day) == 2026 * 12 + 11 and month_of(day + 1) == 2027 * 12
    assert period_start(MONTH, month_of(day)) == datetime(2026, 12, 1, tzinfo=UTC)
    assert period_start(DAY, day) == datetime(2026, 12, 31, tzinfo=UTC)
    assert Budget().kinds == () and Budget(per_month=0).kinds == (MONTH,)
