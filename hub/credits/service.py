"""What a member reads about their money: balance, ledger history (paged, filtered, as CSV), usage and earnings.

Read-only: nothing here writes. Amounts are integer micro-credits; the pages format them.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, and_, case, cast, func
from sqlalchemy import select as select_columns
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import User
from hub.agents.models import Agent
from hub.errors import BadRequest
from hub.keys.models import ApiKey
from hub.ledger.models import Account, Entry, Kind, LedgerTransaction
from hub.parsing import format_credits, parse_count
from hub.usage.models import UsageRecord
from hub.usage.service import start_of_day

PER_PAGE = 25
DAYS = 30
# The kinds a member can filter by, even before they have any; kinds found in their history are added.
KINDS = ("usage", "grant", "allowance", "deduct", "purchase", "refund", "dispute")
_KIND = re.compile(r"^[a-z_]{1,24}$")


@dataclass(frozen=True)
class Line:
    id: int
    created_at: datetime
    kind: str
    memo: str
    amount: int
    balance_after: int


@dataclass(frozen=True)
class History:
    lines: list[Line]
    kind: str
    kinds: list[str]
    page: int
    pages: int
    total: int


@dataclass
class Tally:
    """Requests and tokens (from usage rows) and credits (from ledger entries) for one group."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    credits: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, requests: Any, prompt: Any, completion: Any) -> None:
        self.requests += int(requests or 0)
        self.prompt_tokens += int(prompt or 0)
        self.completion_tokens += int(completion or 0)


def counts() -> tuple[Any, ...]:
    """Requests, prompt tokens and completion tokens of a group of usage rows."""
    return func.count(), func.sum(UsageRecord.prompt_tokens), func.sum(UsageRecord.completion_tokens)


def window_start(now: datetime | None = None, days: int = DAYS) -> datetime:
    """Midnight UTC at the start of the window: today and the days before it, `days` in all."""
    return start_of_day(now) - timedelta(days=days - 1)


def day_of(db: AsyncSession, column: Any) -> ColumnElement[str]:
    """A timestamp's UTC date as 'YYYY-MM-DD', the same text on both databases."""
    if db.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", column)  # SQLite keeps UTCDateTime as UTC text


async def rows(db: AsyncSession, query: Any) -> Sequence[Any]:
    """The rows of a query built with `select_columns` (SQLAlchemy's select: sqlmodel's typed one stops at four)."""
    found: Sequence[Any] = (await db.exec(query)).all()
    return found


def sort_by_tokens(groups: dict[Any, Tally]) -> list[tuple[Any, Tally]]:
    return sorted(groups.items(), key=lambda item: (-item[1].tokens, -item[1].credits, str(item[0])))


# History ----------------------------------------------------------------------------------------------


def kind_label() -> ColumnElement[str]:
    # A monthly allowance is posted as a grant with an "allowance:" key; members see it as its own kind.
    return case((col(LedgerTransaction.key).startswith("allowance:"), "allowance"), else_=col(LedgerTransaction.kind))


async def _account_id(db: AsyncSession, user: User) -> int | None:
    return (await db.exec(select(Account.id).where(Account.user_id == user.pk))).first()


def parse_kind(text: str, known: Iterable[str]) -> str:
    kind = text.strip().lower()
    if kind and (not _KIND.match(kind) or kind not in known):
        raise BadRequest(f"There is no kind {text.strip()[:40]!r}; choose one of {', '.join(sorted(known))}.")
    return kind


def _lines(account_id: int) -> Any:
    """Every entry of one account with its running balance (the sum of it and all earlier entries).

    Entry ids grow in posting order, so the running sum in id order is the balance right after each entry.
    """
    # PostgreSQL sums BIGINT as NUMERIC; cast back so amounts stay integers on both databases.
    after = cast(func.sum(Entry.amount).over(order_by=col(Entry.id)), BigInteger)
    query: Any = (
        select_columns(
            col(Entry.id).label("id"),
            col(LedgerTransaction.created_at).label("created_at"),
            kind_label().label("kind"),
            col(LedgerTransaction.memo).label("memo"),
            col(Entry.amount).label("amount"),
            after.label("balance_after"),
        )
        .join(LedgerTransaction, col(LedgerTransaction.id) == Entry.transaction_id)
        .where(col(Entry.account_id) == account_id)
    )
    return query.subquery()


@dataclass(frozen=True)
class _Filtered:
    query: Any  # the member's entries, newest first, of the chosen kind
    kind: str
    kinds: list[str]


async def _filtered(db: AsyncSession, user: User, kind: str) -> _Filtered:
    lines = _lines(await _account_id(db, user) or 0)
    present = {str(k) for k in (await db.exec(select(lines.c.kind).distinct())).all()}
    kinds = sorted(set(KINDS) | present)
    kind = parse_kind(kind, kinds)
    query = select_columns(lines).order_by(lines.c.id.desc())
    return _Filtered(query.where(lines.c.kind == kind) if kind else query, kind, kinds)


async def history(db: AsyncSession, user: User, *, kind: str = "", page: str = "1") -> History:
    """One page of the member's own ledger, newest first; `kind` and `page` as typed into the URL."""
    found = await _filtered(db, user, kind)
    number = parse_count(page or "1", what="page number", high=1_000_000)
    total = int((await db.exec(select(func.count()).select_from(found.query.subquery()))).one())
    lines = await rows(db, found.query.limit(PER_PAGE).offset((number - 1) * PER_PAGE))
    pages = max(1, -(-total // PER_PAGE))
    return History([Line(**row._mapping) for row in lines], found.kind, found.kinds, number, pages, total)


def _cell(text: str) -> str:
    # Memos can hold model names a member typed; keep spreadsheets from running them as formulas.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def history_csv(db: AsyncSession, user: User, *, kind: str = "") -> str:
    """The whole filtered history as CSV, newest first; credits as plain decimals (no thousands separators)."""
    found = await _filtered(db, user, kind)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["date (UTC)", "kind", "memo", "amount (credits)", "balance after (credits)"])
    for row in await rows(db, found.query):
        line = Line(**row._mapping)
        writer.writerow(
            [
                line.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                _cell(line.kind),
                _cell(line.memo),
                format_credits(line.amount).replace(",", ""),
                format_credits(line.balance_after).replace(",", ""),
            ]
        )
    return out.getvalue()


# Usage ------------------------------------------------------------------------------------------------


@dataclass
class UsageReport:
    days: list[tuple[str, Tally]]
    by_model: list[tuple[str, Tally]]
    by_key: list[tuple[str, Tally]]
    total: Tally = field(default_factory=Tally)


async def my_usage(db: AsyncSession, user: User, now: datetime | None = None) -> UsageReport:
    """The member's requests per day, per model and per API key over the last 30 days (UTC days)."""
    since = window_start(now)
    day = day_of(db, UsageRecord.created_at)
    found = await rows(
        db,
        select_columns(day, col(UsageRecord.model), col(UsageRecord.key_id), *counts())
        .where(col(UsageRecord.user_id) == user.pk, col(UsageRecord.created_at) >= since)
        .group_by(day, col(UsageRecord.model), col(UsageRecord.key_id)),
    )
    days = {(since + timedelta(days=n)).strftime("%Y-%m-%d"): Tally() for n in range(DAYS)}
    models: dict[str, Tally] = {}
    keys: dict[int | None, Tally] = {}
    total = Tally()
    for when, model, key_id, requests, prompt, completion in found:
        for tally in (
            days.setdefault(str(when), Tally()),
            models.setdefault(model, Tally()),
            keys.setdefault(key_id, Tally()),
            total,
        ):
            tally.add(requests, prompt, completion)
    for model, spent in (await _spent_by_model(db, user, since)).items():
        models.setdefault(model, Tally()).credits += spent
        total.credits += spent
    names = await _key_names(db, [k for k in keys if k is not None])
    by_key = [(names.get(k, "a deleted key") if k is not None else "a deleted key", t) for k, t in keys.items()]
    return UsageReport(sorted(days.items()), sort_by_tokens(models), sorted(by_key, key=lambda i: -i[1].tokens), total)


async def _spent_by_model(db: AsyncSession, user: User, since: datetime) -> dict[str, int]:
    """What the member paid per model: their negative entries in usage transactions (the memo is the model)."""
    query = (
        select(LedgerTransaction.memo, func.sum(Entry.amount))
        .join(Entry, col(Entry.transaction_id) == LedgerTransaction.id)
        .join(Account, col(Account.id) == Entry.account_id)
        .where(
            Account.user_id == user.pk,
            LedgerTransaction.kind == "usage",
            Entry.amount < 0,
            LedgerTransaction.created_at >= since,
        )
        .group_by(col(LedgerTransaction.memo))
    )
    return {memo: -int(total or 0) for memo, total in (await db.exec(query)).all()}


async def _key_names(db: AsyncSession, key_ids: list[int]) -> dict[int, str]:
    if not key_ids:
        return {}
    rows = (await db.exec(select(ApiKey.id, ApiKey.name, ApiKey.prefix).where(col(ApiKey.id).in_(key_ids)))).all()
    return {key_id: f"{name} ({prefix}…)" for key_id, name, prefix in rows if key_id is not None}


# Earnings ---------------------------------------------------------------------------------------------


@dataclass
class Earnings:
    by_member: list[tuple[str, Tally]]
    by_model: list[tuple[str, Tally]]
    total: Tally


async def my_earnings(db: AsyncSession, user: User, now: datetime | None = None) -> Earnings:
    """Who used my agents in the last 30 days, by member and by model: requests, tokens, credits earned.

    Two sources, merged on (consumer, model):
    - requests and tokens come from `usage` joined to `agents` on the agent that served the request (the agent's
      owner is me); the consumer is `usage.user_id`. My own use of my GPUs is left out: it earns nothing.
    - credits come from the ledger. A usage transaction moves credits from exactly one member (the only negative
      entry: the consumer) to the provider (a positive entry on my account) and the club (its fee); the memo is
      the model. So the consumer is found through the transaction's negative entry, not through `usage`: the
      ledger's key is the proxy's call id, while a usage row is keyed by the attempt that reached an agent, and
      the two ids differ. Earnings from an agent deleted since still count here.
    """
    since = window_start(now)
    served = (
        select_columns(col(UsageRecord.user_id), col(UsageRecord.model), *counts())
        .join(Agent, col(Agent.id) == UsageRecord.agent_id)
        .where(col(Agent.user_id) == user.pk, col(UsageRecord.user_id) != user.pk, col(UsageRecord.created_at) >= since)
        .group_by(col(UsageRecord.user_id), col(UsageRecord.model))
    )
    pairs: dict[tuple[int, str], Tally] = {}
    for consumer, model, requests, prompt, completion in await rows(db, served):
        pairs.setdefault((consumer, model), Tally()).add(requests, prompt, completion)
    mine, theirs, consumer_account = aliased(Entry), aliased(Entry), aliased(Account)
    earned = (
        select(consumer_account.user_id, LedgerTransaction.memo, func.sum(mine.amount))
        .select_from(mine)
        .join(LedgerTransaction, col(LedgerTransaction.id) == mine.transaction_id)
        .join(theirs, and_(col(theirs.transaction_id) == mine.transaction_id, col(theirs.amount) < 0))
        .join(consumer_account, col(consumer_account.id) == theirs.account_id)
        .join(Account, col(Account.id) == mine.account_id)
        .where(
            Account.user_id == user.pk,
            col(mine.amount) > 0,
            LedgerTransaction.kind == "usage",
            consumer_account.kind == Kind.MEMBER,
            LedgerTransaction.created_at >= since,
        )
        .group_by(col(consumer_account.user_id), col(LedgerTransaction.memo))
    )
    for consumer, model, amount in (await db.exec(earned)).all():
        if consumer is not None:
            pairs.setdefault((consumer, model), Tally()).credits += int(amount or 0)
    names = await member_names(db, {consumer for consumer, _ in pairs})
    by_member: dict[str, Tally] = {}
    by_model: dict[str, Tally] = {}
    total = Tally()
    for (consumer, model), tally in pairs.items():
        for group in (
            by_member.setdefault(names.get(consumer, "a removed member"), Tally()),
            by_model.setdefault(model, Tally()),
            total,
        ):
            group.add(tally.requests, tally.prompt_tokens, tally.completion_tokens)
            group.credits += tally.credits
    return Earnings(sort_by_tokens(by_member), sort_by_tokens(by_model), total)


async def member_names(db: AsyncSession, user_ids: Iterable[int | None]) -> dict[int, str]:
    ids = [i for i in set(user_ids) if i is not None]
    if not ids:
        return {}
    rows = (await db.exec(select(User.id, User.name, User.email).where(col(User.id).in_(ids)))).all()
    return {user_id: (f"{name} ({email})" if name else email) for user_id, name, email in rows if user_id is not None}
