"""What admins read and set about the club's money: usage and earnings for everyone, the ledger's health,
prices with their hold size, and per-member overrides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, or_
from sqlalchemy import select as select_columns
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.accounts.models import Status, User
from hub.accounts.service import require_admin
from hub.agents.models import Agent
from hub.credits.service import Tally, counts, member_names, rows, sort_by_tokens, window_start
from hub.errors import BadRequest, NotFound
from hub.ledger import service as ledger
from hub.ledger.models import Account, Entry, Kind, LedgerTransaction
from hub.parsing import clean_text, normalize_email
from hub.pricing.models import Price
from hub.quotas.models import MemberPolicy
from hub.usage.models import UsageRecord


@dataclass
class ClubUsage:
    by_member: list[tuple[str, Tally, int]]  # (member, usage and credits spent, credits earned)
    by_agent: list[tuple[str, Tally]]
    by_model: list[tuple[str, Tally, int]]  # (model, usage and credits charged, the club's fee)
    total: Tally


async def club_usage(db: AsyncSession, actor: User, now: datetime | None = None) -> ClubUsage:
    """Everyone's usage over the last 30 days, with what was spent, earned and kept as the club's fee."""
    require_admin(actor)
    since = window_start(now)
    recent = col(UsageRecord.created_at) >= since
    amount = col(Entry.amount)

    members: dict[int, Tally] = {}
    by_user = select_columns(col(UsageRecord.user_id), *counts()).where(recent).group_by(col(UsageRecord.user_id))
    for user_id, *numbers in await rows(db, by_user):
        members.setdefault(user_id, Tally()).add(*numbers)
    spent_and_earned = (
        select_columns(
            col(Account.user_id),
            func.sum(case((amount < 0, -amount), else_=0)),
            func.sum(case((amount > 0, amount), else_=0)),
        )
        .join(Entry, col(Entry.account_id) == Account.id)
        .join(LedgerTransaction, col(LedgerTransaction.id) == Entry.transaction_id)
        .where(col(LedgerTransaction.kind) == "usage", col(Account.kind) == Kind.MEMBER)
        .where(col(LedgerTransaction.created_at) >= since)
        .group_by(col(Account.user_id))
    )
    earned: dict[int, int] = {}
    for member_id, spent, gained in await rows(db, spent_and_earned):
        if member_id is not None:
            members.setdefault(member_id, Tally()).credits += int(spent or 0)
            earned[member_id] = int(gained or 0)
    names = await member_names(db, members)
    by_member = [(names.get(uid, "a removed member"), tally, earned.get(uid, 0)) for uid, tally in members.items()]
    by_member.sort(key=lambda row: (-row[1].tokens, -row[1].credits, -row[2], row[0]))

    agents: dict[str, Tally] = {}
    served = (
        select_columns(col(Agent.name), col(User.email), *counts())
        .select_from(UsageRecord)
        .join(Agent, col(Agent.id) == UsageRecord.agent_id)
        .join(User, col(User.id) == Agent.user_id)
        .where(recent)
        .group_by(col(Agent.id), col(Agent.name), col(User.email))
    )
    for name, owner, *numbers in await rows(db, served):
        agents.setdefault(f"{name} ({owner})", Tally()).add(*numbers)

    models: dict[str, Tally] = {}
    by_model_query = select_columns(col(UsageRecord.model), *counts()).where(recent).group_by(col(UsageRecord.model))
    for model, *numbers in await rows(db, by_model_query):
        models.setdefault(model, Tally()).add(*numbers)
    # What consumers paid per model (their negative entries) and the club's share of it (the club's entries).
    fees: dict[str, int] = {}
    money = (
        select_columns(col(LedgerTransaction.memo), col(Account.kind), func.sum(amount))
        .join(Entry, col(Entry.transaction_id) == LedgerTransaction.id)
        .join(Account, col(Account.id) == Entry.account_id)
        .where(col(LedgerTransaction.kind) == "usage", col(LedgerTransaction.created_at) >= since)
        .where(or_(amount < 0, col(Account.kind) == Kind.CLUB))
        .group_by(col(LedgerTransaction.memo), col(Account.kind))
    )
    for model, kind, moved in await rows(db, money):
        if kind == Kind.CLUB:
            fees[model] = fees.get(model, 0) + int(moved or 0)
        else:
            models.setdefault(model, Tally()).credits -= int(moved or 0)
    by_model = [(model, tally, fees.get(model, 0)) for model, tally in sort_by_tokens(models)]

    total = Tally()
    for _, tally in models.items():
        total.add(tally.requests, tally.prompt_tokens, tally.completion_tokens)
        total.credits += tally.credits
    return ClubUsage(by_member, sort_by_tokens(agents), by_model, total)


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
    transactions: int

    @property
    def sum_of_balances(self) -> int:
        """Zero when every transaction balances: credits are only ever moved, never made from nothing."""
        return sum(kind.balance for kind in self.kinds)


async def ledger_health(db: AsyncSession, actor: User) -> LedgerHealth:
    require_admin(actor)
    problems = await ledger.check(db)
    club = (
        await db.exec(select(Account.balance).where(Account.kind == Kind.CLUB, col(Account.user_id).is_(None)))
    ).first()
    per_kind = select(Account.kind, func.count(), func.sum(Account.balance), func.sum(Account.held)).group_by(
        col(Account.kind)
    )
    kinds = [KindTotal(kind, int(n), int(b or 0), int(h or 0)) for kind, n, b, h in (await db.exec(per_kind)).all()]
    transactions = int((await db.exec(select(func.count()).select_from(LedgerTransaction))).one())
    return LedgerHealth(problems, int(club or 0), sorted(kinds, key=lambda k: k.kind), transactions)


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
