"""What a member reads about their money: balance and ledger history (paged, filtered, as CSV); shared helpers of
the report pages (`hub.credits.reports`, `hub.credits.club`).

Read-only: nothing here writes. Amounts are integer micro-credits; the pages format them.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, and_, case, cast, func, literal, union_all
from sqlalchemy import select as select_columns
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import User
from hub.errors import BadRequest
from hub.keys.models import ApiKey
from hub.ledger.models import Account, Entry, LedgerTransaction
from hub.parsing import format_credits, parse_count
from hub.usage.service import start_of_day

PER_PAGE = 25
DAYS = 30
# The kinds a member can filter by (a fixed list: finding the kinds in a long history would read all of it).
KINDS = ("usage", "grant", "allowance", "deduct", "purchase", "refund", "dispute", "dispute_won")
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
    """One page of entries, newest first, paged by entry id (keyset): the same cost on page 1 and page 1,000."""

    lines: list[Line]
    kind: str
    kinds: list[str]
    newer: int | None  # link ?after=<id> for the page before this one, if there is one
    older: int | None  # link ?before=<id> for the next page, if there is one
    paged: bool = False  # asked for a page before or after an entry (not the newest one)
    # No "page N of M": counting a provider's half a million entries would cost more than showing a page.


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


def window_start(now: datetime | None = None, days: int = DAYS) -> datetime:
    """Midnight UTC at the start of the window: today and the days before it, `days` in all."""
    return start_of_day(now) - timedelta(days=days - 1)


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


def _of_kind(kind: str) -> ColumnElement[bool]:
    """Transactions of a kind as members see kinds (an allowance is a grant with an "allowance:" key)."""
    allowance = col(LedgerTransaction.key).startswith("allowance:")
    if kind == "allowance":
        return and_(col(LedgerTransaction.kind) == "grant", allowance)
    if kind == "grant":
        return and_(col(LedgerTransaction.kind) == "grant", ~allowance)
    return col(LedgerTransaction.kind) == kind


def _page_query(account_id: int, kind: str) -> Any:
    query: Any = select_columns(
        col(Entry.id).label("id"),
        col(LedgerTransaction.created_at).label("created_at"),
        kind_label().label("kind"),
        col(LedgerTransaction.memo).label("memo"),
        col(Entry.amount).label("amount"),
    ).join(LedgerTransaction, col(LedgerTransaction.id) == Entry.transaction_id)
    if not kind:
        return query.where(col(Entry.account_id) == account_id)
    if kind == "usage":  # most of a busy account's entries: walk them newest first
        return query.where(col(Entry.account_id) == account_id, _of_kind(kind))
    # A rarer kind (a grant among a provider's million usage entries): start from the transactions of that kind
    # (indexed by kind) and keep this account's entries. `+ 0` keeps both databases from walking the account's
    # index instead, which would read every entry it has to find a few.
    return query.where(_of_kind(kind)).where((col(Entry.account_id) + 0) == account_id)


async def _balances_after(db: AsyncSession, account_id: int, ids: list[int]) -> dict[int, int]:
    """The balance right after each of these entries (ids newest first), reading as few entries as it can.

    The balance after an entry is the sum of it and every earlier entry, or equally the account's balance minus
    every later one. Whichever side of the page holds fewer of the account's entries is summed (one index range,
    split into one bucket per line), so a page near either end of a long history costs little; the balance is
    read in the same statement, so both come from the same snapshot.
    """
    newest, oldest = ids[0], ids[-1]
    last = (await db.exec(select(func.max(Entry.id)).where(col(Entry.account_id) == account_id))).one() or newest
    amount = cast(func.sum(Entry.amount), BigInteger).label("amount")
    mine = col(Entry.account_id) == account_id
    if newest - 0 <= last - oldest:  # the page is nearer the start: sum the entries up to each line
        bucket = case(*[(col(Entry.id) <= entry_id, n) for n, entry_id in reversed(list(enumerate(ids)))], else_=-2)
        query: Any = (
            select_columns(bucket.label("bucket"), amount).where(mine, col(Entry.id) <= newest).group_by(bucket)
        )
        found = {int(b): int(a or 0) for b, a in await rows(db, query)}
        after, running = {}, 0
        for n in range(len(ids) - 1, -1, -1):
            running += found.get(n, 0)
            after[ids[n]] = running
        return after
    bucket = case(*[(col(Entry.id) > entry_id, n) for n, entry_id in enumerate(ids)], else_=len(ids))
    later = select_columns(bucket.label("bucket"), amount).where(mine, col(Entry.id) > oldest).group_by(bucket)
    balance: Any = select_columns(literal(-1).label("bucket"), col(Account.balance).label("amount")).where(
        col(Account.id) == account_id
    )
    found = {int(b): int(a or 0) for b, a in await rows(db, union_all(later, balance))}
    after, running = {}, found.get(-1, 0)
    for n, entry_id in enumerate(ids):
        running -= found.get(n, 0)
        after[entry_id] = running
    return after


async def history(db: AsyncSession, user: User, *, kind: str = "", before: str = "", after: str = "") -> History:
    """One page of the member's own ledger, newest first: the entries older than `before`, or the page newer than
    `after` (entry ids, as typed into the URL), or the newest ones."""
    kind = parse_kind(kind, KINDS)
    account_id = await _account_id(db, user) or 0
    query = _page_query(account_id, kind)
    newest_first = True
    if before.strip():
        query = query.where(col(Entry.id) < parse_count(before, what="entry id", high=2**62))
    elif after.strip():
        query = query.where(col(Entry.id) > parse_count(after, what="entry id", high=2**62))
        newest_first = False
    order = col(Entry.id).desc() if newest_first else col(Entry.id).asc()
    found = list(await rows(db, query.order_by(order).limit(PER_PAGE + 1)))
    more = len(found) > PER_PAGE
    found = found[:PER_PAGE] if newest_first else list(reversed(found[:PER_PAGE]))
    ids = [int(row.id) for row in found]
    balances = await _balances_after(db, account_id, ids) if ids else {}
    lines = [Line(**row._mapping, balance_after=balances[int(row.id)]) for row in found]
    newer = older = None
    if lines:
        if newest_first:
            older = lines[-1].id if more else None
            if before.strip() and await _exists(db, _page_query(account_id, kind).where(col(Entry.id) > lines[0].id)):
                newer = lines[0].id
        else:
            newer = lines[0].id if more else None
            if await _exists(db, _page_query(account_id, kind).where(col(Entry.id) < lines[-1].id)):
                older = lines[-1].id
    return History(lines, kind, list(KINDS), newer, older, bool(before.strip() or after.strip()))


async def _exists(db: AsyncSession, query: Any) -> bool:
    return bool(await rows(db, query.limit(1)))


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


def _cell(text: str) -> str:
    # Memos can hold model names a member typed; keep spreadsheets from running them as formulas.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def history_csv(db: AsyncSession, user: User, *, kind: str = "") -> str:
    """The whole filtered history as CSV, newest first; credits as plain decimals (no thousands separators)."""
    kind = parse_kind(kind, KINDS)
    lines = _lines(await _account_id(db, user) or 0)
    query = select_columns(lines).order_by(lines.c.id.desc())
    query = query.where(lines.c.kind == kind) if kind else query
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["date (UTC)", "kind", "memo", "amount (credits)", "balance after (credits)"])
    for row in await rows(db, query):
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


# Names ------------------------------------------------------------------------------------------------


async def key_names(db: AsyncSession, key_ids: Iterable[int]) -> dict[int, str]:
    ids = [i for i in set(key_ids) if i]
    if not ids:
        return {}
    found = (await db.exec(select(ApiKey.id, ApiKey.name, ApiKey.prefix).where(col(ApiKey.id).in_(ids)))).all()
    return {key_id: f"{name} ({prefix}…)" for key_id, name, prefix in found if key_id is not None}


async def member_names(db: AsyncSession, user_ids: Iterable[int | None]) -> dict[int, str]:
    ids = [i for i in set(user_ids) if i is not None]
    if not ids:
        return {}
    rows = (await db.exec(select(User.id, User.name, User.email).where(col(User.id).in_(ids)))).all()
    return {user_id: (f"{name} ({email})" if name else email) for user_id, name, email in rows if user_id is not None}
