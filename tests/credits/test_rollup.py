"""The daily rollup: folding usage rows above the watermark is exact, and pages read rollup + live rows as one."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import Role, User
from hub.agents import service as agents
from hub.credits import club, reports
from hub.credits.charts import parse_span
from hub.credits.service import rows
from hub.db import utcnow
from hub.usage import rollup
from hub.usage.models import UsageRecord
from hub.usage.rollup_models import UsageDay
from tests.credits.club import used
from tests.support.people import person


async def direct(db: AsyncSession, user: User | None = None) -> dict[str, tuple[int, int, int, int]]:
    """(requests, prompt, completion, cost) per UTC day, summed straight from the usage rows."""
    day = rollup.day_of(db, UsageRecord.created_at)
    query = select(
        day,
        func.count(),
        func.sum(UsageRecord.prompt_tokens),
        func.sum(UsageRecord.completion_tokens),
        func.sum(UsageRecord.cost),
    ).group_by(day)
    if user is not None:
        query = query.where(col(UsageRecord.user_id) == user.pk)
    return {str(d): (int(n), int(p), int(c), int(k)) for d, n, p, c, k in await rows(db, query)}


def per_day(report: reports.UsageReport) -> dict[str, tuple[int, int]]:
    """(tokens, credits) per day as the page's two charts have them."""
    pairs = zip(report.tokens.days, report.tokens.totals, report.credits.totals, strict=True)
    return {day: (tokens, credits) for day, tokens, credits in pairs if tokens or credits}


async def test_folding_is_exact_across_the_watermark_a_day_boundary_and_a_late_row(db: AsyncSession) -> None:
    mia = await person(db, "mia@lab.example.org")
    midnight = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    before_midnight = midnight - timedelta(microseconds=1)
    await used(db, mia, prompt=100, completion=10, cost=1_000, at=before_midnight)
    await used(db, mia, prompt=200, completion=20, cost=2_000, at=midnight)
    await used(db, mia, prompt=300, completion=30, cost=3_000, at=midnight + timedelta(minutes=1))

    assert await rollup.fold(db) == 3
    top = (await rows(db, select(func.max(UsageRecord.id))))[0][0]
    assert await rollup.watermark(db) == top
    yesterday, today = before_midnight.strftime("%Y-%m-%d"), midnight.strftime("%Y-%m-%d")
    days = {(d.day, d.requests, d.prompt_tokens, d.cost) for (d,) in await rows(db, select(UsageDay))}
    assert days == {(yesterday, 1, 100, 1_000), (today, 2, 500, 5_000)}

    # After the fold: a new row today, and one arriving late for three days ago (both above the watermark).
    await used(db, mia, prompt=7, completion=1, cost=70, at=midnight + timedelta(hours=2))
    await used(db, mia, prompt=5, completion=1, cost=50, at=midnight - timedelta(days=3))
    span = parse_span("7")
    live = await reports.my_usage(db, mia, span)
    assert live.total.requests == 5 and live.total.prompt_tokens == 612 and live.total.credits == 6_120
    assert await rollup.fold(db) == 2
    assert await rollup.fold(db) == 0  # nothing above the watermark: nothing counted twice
    folded = await reports.my_usage(db, mia, span)
    assert (folded.total.requests, folded.total.tokens, folded.total.credits) == (5, 674, 6_120)
    assert (
        per_day(folded) == per_day(live) == {day: (p + c, k) for day, (_, p, c, k) in (await direct(db, mia)).items()}
    )


async def test_club_and_earnings_totals_equal_a_direct_sum_half_folded(db: AsyncSession) -> None:
    adam = await person(db, "adam@lab.example.org", Role.ADMIN)
    pat = await person(db, "pat@lab.example.org", name="Pat")
    mia = await person(db, "mia@lab.example.org", name="Mia")
    rig, _ = await agents.create_agent(db, pat, name="desk-4090")
    now = utcnow()
    for n in range(6):
        at = now - timedelta(days=n, minutes=n)
        await used(db, mia, prompt=10 * n, completion=n, agent_id=rig.id, cost=1_000 * n, earned=900 * n, at=at)
        if n == 2:
            await rollup.fold(db)  # half the rows rolled up, half live
    span = parse_span("30")

    whole = await club.club_usage(db, adam, span)
    earnings = await reports.my_earnings(db, pat, span)

    sums = await direct(db)
    assert whole.total.requests == sum(n for n, _, _, _ in sums.values()) == 6
    assert whole.total.tokens == sum(p + c for _, p, c, _ in sums.values())
    assert whole.total.credits == sum(k for _, _, _, k in sums.values()) == 15_000
    assert earnings.total.credits == 13_500 and earnings.total.requests == 6
    assert sum(earnings.chart.totals) == 13_500
    assert [fee for _, _, fee in whole.by_model] == [1_500]
