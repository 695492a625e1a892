"""What a member reads about their requests: usage per day, model and key, and what their GPUs earned.

Read from the daily rollup plus the usage rows not folded in yet (`hub.usage.rollup.totals`), so a page costs the
same with a month of history as with a day of it. Credits are the usage rows' `cost` (what the member paid) and
`earned` (what the GPU's owner got); the ledger stays the truth for balances.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import User
from hub.agents.models import Agent
from hub.credits.charts import Chart, Span, stacked
from hub.credits.service import Tally, key_names, member_names, rows, sort_by_tokens
from hub.errors import BadRequest
from hub.usage import rollup

GROUPINGS = {"model": "model", "key": "API key"}
DELETED_KEY = "a deleted key"


def grouped(db: AsyncSession, by: Sequence[str], span: Span, where: Any = lambda columns: ()) -> Any:
    """Usage sums within `span` grouped by `by` (`hub.usage.rollup.totals`): rows of the groups' values, then
    requests, prompt and completion tokens, cost and earned."""
    return rollup.totals(db, by, span.first.isoformat(), span.last.isoformat(), where)


def tally(numbers: Sequence[Any], credits: int) -> Tally:
    found = Tally()
    found.add(*numbers[:3])
    found.credits = int(credits or 0)
    return found


def merge(into: dict[Any, Tally], name: Any, part: Tally) -> None:
    group = into.setdefault(name, Tally())
    group.add(part.requests, part.prompt_tokens, part.completion_tokens)
    group.credits += part.credits


@dataclass
class UsageReport:
    span: Span
    by: str  # "model" or "key": what the charts stack
    tokens: Chart
    credits: Chart
    by_model: list[tuple[str, Tally]]
    by_key: list[tuple[str, Tally]]
    total: Tally = field(default_factory=Tally)


def parse_grouping(text: str) -> str:
    by = text.strip().lower() or "model"
    if by not in GROUPINGS:
        raise BadRequest("Group the charts by model or by key.")
    return by


async def my_usage(db: AsyncSession, user: User, span: Span, by: str = "model") -> UsageReport:
    """The member's requests, tokens and credits spent per day, per model and per API key within `span`."""
    query = grouped(db, ("day", "model", "key_id"), span, lambda c: [c["user_id"] == user.pk])
    found = [(day, model, key_id, tally(numbers, numbers[3])) for day, model, key_id, *numbers in await rows(db, query)]
    names = await key_names(db, [key_id for _, _, key_id, _ in found if key_id])
    models: dict[str, Tally] = {}
    keys: dict[str, Tally] = {}
    total = Tally()
    points: list[tuple[str, str, Tally]] = []
    for day, model, key_id, part in found:
        key = names.get(key_id, DELETED_KEY)
        merge(models, model, part)
        merge(keys, key, part)
        total.add(part.requests, part.prompt_tokens, part.completion_tokens)
        total.credits += part.credits
        points.append((day, model if by == "model" else key, part))
    label = GROUPINGS[by]
    return UsageReport(
        span,
        by,
        stacked(
            f"Tokens per day by {label}, {span.label}", "tokens", span.days, ((d, s, p.tokens) for d, s, p in points)
        ),
        stacked(
            f"Credits spent per day by {label}, {span.label}",
            "credits",
            span.days,
            ((d, s, p.credits) for d, s, p in points),
            money=True,
        ),
        sort_by_tokens(models),
        sort_by_tokens(keys),
        total,
    )


@dataclass
class Earnings:
    span: Span
    chart: Chart
    by_member: list[tuple[str, Tally]]
    by_model: list[tuple[str, Tally]]
    total: Tally


async def my_earnings(db: AsyncSession, user: User, span: Span) -> Earnings:
    """Who used my agents within `span`, by member and by model: requests, tokens, credits earned (what they paid
    minus the club's fee). My own use of my GPUs is left out: it earns nothing. Agents revoked since still count."""
    agent_ids = [int(i) for i in (await db.exec(select(Agent.id).where(col(Agent.user_id) == user.pk))).all() if i]
    if not agent_ids:
        return Earnings(span, stacked(_earned_caption(span), "credits", span.days, [], money=True), [], [], Tally())

    def mine(c: Any) -> list[Any]:
        return [c["agent_id"].in_(agent_ids), c["user_id"] != user.pk]

    per_model = grouped(db, ("day", "model"), span, mine)
    per_member = grouped(db, ("user_id",), span, mine)
    days = [(day, model, tally(n, n[4])) for day, model, *n in await rows(db, per_model)]
    members = [(consumer, tally(n, n[4])) for consumer, *n in await rows(db, per_member)]
    names = await member_names(db, {consumer for consumer, _ in members})
    by_member: dict[str, Tally] = {}
    by_model: dict[str, Tally] = {}
    total = Tally()
    for consumer, part in members:
        merge(by_member, names.get(consumer, "a removed member"), part)
    for _, model, part in days:
        merge(by_model, model, part)
        merge({0: total}, 0, part)
    chart = stacked(_earned_caption(span), "credits", span.days, ((d, m, p.credits) for d, m, p in days), money=True)
    return Earnings(span, chart, sort_by_tokens(by_member), sort_by_tokens(by_model), total)


def _earned_caption(span: Span) -> str:
    return f"Credits earned per day by model, {span.label}"
