"""What admins read and set about the club's money: usage and earnings for everyone, the ledger's health,
prices with their hold size, and per-member overrides.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.accounts.models import Status, User
from hub.accounts.service import require_admin
from hub.agents.models import Agent
from hub.credits.charts import Chart, Span, stacked
from hub.credits.reports import grouped, merge, tally
from hub.credits.service import Tally, member_names, rows, sort_by_tokens
from hub.errors import BadRequest, NotFound
from hub.ledger import service as ledger
from hub.ledger.models import Account, Entry, Kind, LedgerTransaction
from hub.parsing import clean_text, normalize_email
from hub.pricing.models import Price
from hub.quotas.models import MemberPolicy

SHOWS = {"tokens": "Tokens", "credits": "Credits"}


@dataclass
class ClubUsage:
    span: Span
    show: str  # what the charts count: "tokens" or "credits"
    charts: list[Chart]  # per day by member, by model, by agent
    by_member: list[tuple[str, Tally, int]]  # (member, usage and credits spent, credits earned)
    by_agent: list[tuple[str, Tally]]
    by_model: list[tuple[str, Tally, int]]  # (model, usage and credits charged, the club's fee)
    total: Tally


def parse_show(text: str) -> str:
    show = text.strip().lower() or "tokens"
    if show not in SHOWS:
        raise BadRequest("Chart tokens or credits.")
    return show


async def club_usage(db: AsyncSession, actor: User, span: Span, show: str = "tokens") -> ClubUsage:
    """Everyone's usage within `span`, with what was spent, earned and kept as the club's fee (usage rows' cost
    and earned: the fee is what a consumer paid beyond what the GPU's owner got)."""
    require_admin(actor)

    async def per_day(column: str) -> list[tuple[str, Any, Tally, int]]:
        """(day, group, usage with cost, earned) per day and value of `column`: a few hundred rows."""
        query = grouped(db, ("day", column), span)
        return [(day, group, tally(n, n[3]), int(n[4] or 0)) for day, group, *n in await rows(db, query)]

    by_user, by_model, by_agent = await per_day("user_id"), await per_day("model"), await per_day("agent_id")
    agents = await _agents(db)
    names = await member_names(db, {uid for _, uid, _, _ in by_user} | {owner for _, owner in agents.values()})

    def value(part: Tally) -> int:
        return part.tokens if show == "tokens" else part.credits

    members: dict[int, Tally] = {}
    for _, user_id, part, _ in by_user:
        merge(members, user_id, part)
    models: dict[str, Tally] = {}
    fees: dict[str, int] = {}
    total = Tally()
    for _, model, part, gained in by_model:
        merge(models, model, part)
        fees[model] = fees.get(model, 0) + part.credits - gained
        merge({0: total}, 0, part)
    served: dict[str, Tally] = {}
    earned: dict[int, int] = {}
    for _, agent_id, part, gained in by_agent:
        if agent_id in agents:
            name, owner = agents[agent_id]
            merge(served, name, part)
            earned[owner] = earned.get(owner, 0) + gained
    members_named = [(names.get(uid, "a removed member"), t, earned.get(uid, 0)) for uid, t in members.items()]
    members_named += [
        (names.get(uid, "a removed member"), Tally(), e) for uid, e in earned.items() if uid not in members
    ]
    members_named.sort(key=lambda row: (-row[1].tokens, -row[1].credits, -row[2], row[0]))
    points = {
        "member": [(day, names.get(uid, "a removed member"), value(part)) for day, uid, part, _ in by_user],
        "model": [(day, model, value(part)) for day, model, part, _ in by_model],
        "agent": [(day, agents[aid][0], value(part)) for day, aid, part, _ in by_agent if aid in agents],
    }
    unit = "tokens" if show == "tokens" else "credits"
    charts = [
        stacked(
            f"{SHOWS[show]} per day by {group}, {span.label}", unit, span.days, points[group], money=show == "credits"
        )
        for group in ("member", "model", "agent")
    ]
    by_model_rows = [(model, t, fees.get(model, 0)) for model, t in sort_by_tokens(models)]
    return ClubUsage(span, show, charts, members_named, sort_by_tokens(served), by_model_rows, total)


async def _agents(db: AsyncSession) -> dict[int, tuple[str, int]]:
    """Every agent (revoked ones too): its name with its owner's email, and its owner."""
    query = select(Agent.id, Agent.name, User.email, Agent.user_id).join(User, col(User.id) == Agent.user_id)
    return {int(i): (f"{name} ({email})", int(owner)) for i, name, email, owner in (await db.exec(query)).all() if i}


@dataclass(frozen=True)
class KindTotal:
    kind: str
    accounts: int
    balance: int
    held: int


@dataclass(frozen=True)
class LedgerHealth:
    problems: list[str]
    club_balance: int
    kinds: list[KindTotal]
    transactions: int  # in the ledger
    checked: int  # of them, newest first
    whole: bool  # every transaction checked, so the cached balances were compared with their entries too

    @property
    def sum_of_balances(self) -> int:
        """Zero when every transaction balances: credits are only ever moved, never made from nothing."""
        return sum(kind.balance for kind in self.kinds)


CHECK_SECONDS = 0.1  # what the page spends checking, unless asked to check everything
CHECK_BATCH = 20_000  # transactions per query


async def ledger_health(
    db: AsyncSession, actor: User, *, whole: bool = False, seconds: float = CHECK_SECONDS, batch: int = CHECK_BATCH
) -> LedgerHealth:
    """The ledger check, newest transactions first, in batches for about `seconds` (or all of it, `whole`). Each
    batch checks that its transactions sum to zero; a check that reaches the oldest one also compares every
    account's cached balance with the sum of its entries. Holds and balances below zero are checked every time."""
    require_admin(actor)
    club = (
        await db.exec(select(Account.balance).where(Account.kind == Kind.CLUB, col(Account.user_id).is_(None)))
    ).first()
    per_kind = select(Account.kind, func.count(), func.sum(Account.balance), func.sum(Account.held)).group_by(
        col(Account.kind)
    )
    kinds = [KindTotal(kind, int(n), int(b or 0), int(h or 0)) for kind, n, b, h in (await db.exec(per_kind)).all()]
    transactions = int((await db.exec(select(func.count()).select_from(LedgerTransaction))).one())
    if whole:  # the same check as `gpuclub ledger check`, in one pass: faster than batches when all are wanted
        found = await ledger.check(db)
        return LedgerHealth(
            found, int(club or 0), sorted(kinds, key=lambda k: k.kind), transactions, transactions, True
        )
    problems: list[str] = []
    sums_by_account: dict[int, int] = {}
    checked = 0
    high = int((await db.exec(select(func.max(LedgerTransaction.id)))).one() or 0)
    deadline = time.monotonic() + seconds
    while high > 0 and (not checked or time.monotonic() < deadline):  # one batch at least
        low = max(0, high - batch)
        in_batch = (col(Entry.transaction_id) > low, col(Entry.transaction_id) <= high)
        unbalanced = (
            select(Entry.transaction_id, func.sum(Entry.amount))
            .where(*in_batch)
            .group_by(col(Entry.transaction_id))
            .having(func.sum(Entry.amount) != 0)
        )
        problems += [f"transaction {t} does not sum to zero (off by {n})" for t, n in (await db.exec(unbalanced)).all()]
        by_account = select(Entry.account_id, func.sum(Entry.amount)).where(*in_batch).group_by(col(Entry.account_id))
        for account_id, amount in (await db.exec(by_account)).all():
            sums_by_account[account_id] = sums_by_account.get(account_id, 0) + int(amount or 0)
        in_range = (col(LedgerTransaction.id) > low, col(LedgerTransaction.id) <= high)
        checked += int((await db.exec(select(func.count()).select_from(LedgerTransaction).where(*in_range))).one())
        high = low
    complete = high <= 0
    for account in (await db.exec(select(Account))).all():
        name = f"account {account.id} ({account.kind})"
        entries = sums_by_account.get(account.id or 0, 0)
        if complete and account.balance != entries:
            problems.append(f"{name} caches a balance of {account.balance} but its entries sum to {entries}")
        if account.held != 0:  # only ever set inside the transaction that takes credits back
            problems.append(f"{name} has {account.held} left reserved by an unfinished deduction")
        if account.kind == Kind.MEMBER and account.balance < 0:
            problems.append(f"{name} is below zero ({account.balance})")
    return LedgerHealth(problems, int(club or 0), sorted(kinds, key=lambda k: k.kind), transactions, checked, complete)


# Settings that the pricing and quotas services do not cover by themselves -----------------------------


async def save_price(
    db: AsyncSession,
    actor: User,
    model: str,
    *,
    input_micro: int,
    output_micro: int,
    max_tokens: int,
    audio_micro: int | None = None,
) -> Price:
    """Set a model's price and the hold size for requests that do not say max_tokens, in one commit.

    `hub.pricing.service.set_price` sets the prices only; the hold size belongs with them on this form. An audio
    price of None keeps the model's current one.
    """
    require_admin(actor)
    model = clean_text(model, what="model name", max_length=200, required=True)
    price = await db.get(Price, model) or Price(model=model)
    price.input_per_million, price.output_per_million = input_micro, output_micro
    if audio_micro is not None:
        price.audio_per_minute = audio_micro
    price.default_max_tokens = max_tokens
    db.add(price)
    await db.commit()
    return price


async def member_by_email(db: AsyncSession, actor: User, email: str) -> User:
    """A current member named on an admin form; an unknown address is bad input, not a missing page."""
    require_admin(actor)
    if not email.strip():
        raise BadRequest("Please give the member's email address.")
    try:
        return await accounts.get_member(db, normalize_email(email))
    except NotFound as exc:
        raise BadRequest(exc.message) from None


async def overrides(db: AsyncSession, actor: User) -> list[tuple[User, MemberPolicy]]:
    require_admin(actor)
    query = (
        select(User, MemberPolicy)
        .join(MemberPolicy, col(MemberPolicy.user_id) == User.id)
        .where(User.status != Status.REMOVED)
        .order_by(col(User.email))
    )
    return [(user, policy) for user, policy in (await db.exec(query)).all()]
