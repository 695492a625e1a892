"""Usage per day, kept up to date incrementally, and read together with the rows not folded in yet.

Housekeeping calls `fold` every minute: it adds the usage rows above the watermark into `usage_days` (one row per
UTC day, member, model, agent and key) and moves the watermark, in the same database transaction, a batch at a
time. Pages read `totals()`: the rolled-up days plus the rows above the watermark, in one statement (one snapshot),
so what they show is exact and current whatever the fold is doing. A row that arrives late for an earlier day has
an id above the watermark, so it is read live until the next fold adds it to its day.

Retention (deleting old usage rows) must run after `fold` and must not delete rows above `watermark()`: those
are not in `usage_days` yet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, text, union_all, update
from sqlalchemy import select as select_columns
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.db import insert_ignoring_duplicates
from hub.usage.models import UsageRecord
from hub.usage.rollup_models import USAGE, RollupMark, UsageDay

BATCH = 50_000  # usage ids per fold transaction: a short write, whatever the backlog
GROUP = ("day", "user_id", "model", "agent_id", "key_id")
SUMS = ("requests", "prompt_tokens", "completion_tokens", "cost", "earned")


def day_of(db: AsyncSession, column: Any) -> ColumnElement[str]:
    """A timestamp's UTC date as 'YYYY-MM-DD', the same text on both databases."""
    if db.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", column)  # SQLite keeps UTCDateTime as UTC text


def _watermark() -> Any:
    mark = select_columns(col(RollupMark.last_id)).where(col(RollupMark.name) == USAGE).scalar_subquery()
    return func.coalesce(mark, 0)


Columns = Mapping[str, Any]


def totals(
    db: AsyncSession,
    by: Sequence[str],
    first_day: str,
    last_day: str,
    where: Callable[[Columns], Sequence[Any]] = lambda columns: (),
) -> Any:
    """A query for the sums (requests, prompt_tokens, completion_tokens, cost, earned) of every answered usage row
    (refused requests, which cost nothing, are in the request log only) from
    `first_day` to `last_day` ('YYYY-MM-DD', UTC), grouped by the columns named in `by` (of day, user_id, model,
    agent_id, key_id; agent_id and key_id are 0 for none) and filtered by `where`, which gets the columns by name.

    Whole days come from `usage_days` and the rows above the watermark from `usage`, each grouped first (so the
    database reads the rollup as a plain grouped scan), then added up: one statement, so one snapshot.
    """
    days = UsageDay.__table__  # type: ignore[attr-defined]
    table = UsageRecord.__table__  # type: ignore[attr-defined]
    rolled: dict[str, Any] = {name: days.c[name] for name in GROUP + SUMS}
    live: dict[str, Any] = {
        "day": day_of(db, table.c.created_at),
        # `+ 0`: the databases would rather walk the (user, time) index in group order than the few rows above the
        # watermark by id, which is all the live part is.
        "user_id": table.c.user_id + 0,
        "model": table.c.model,
        "agent_id": func.coalesce(table.c.agent_id, 0),
        "key_id": func.coalesce(table.c.key_id, 0),
        "prompt_tokens": table.c.prompt_tokens,
        "completion_tokens": table.c.completion_tokens,
        "cost": table.c.cost,
        "earned": table.c.earned,
    }

    def part(columns: dict[str, Any], source: Any, requests: Any, *more: Any) -> Any:
        keys = [columns[name] for name in by]
        added = [requests.label("requests"), *(func.sum(columns[name]).label(name) for name in SUMS[1:])]
        return (
            select_columns(*(key.label(name) for key, name in zip(keys, by, strict=True)), *added)
            .select_from(source)
            .where(columns["day"].between(first_day, last_day), *where(columns), *more)
            .group_by(*keys)
        )

    both = union_all(
        part(rolled, days, func.sum(days.c.requests)),
        part(live, table, func.count(), table.c.id > _watermark(), table.c.code == ""),
    ).subquery("usage_totals")
    return select_columns(*(both.c[name] for name in by), *(func.sum(both.c[name]) for name in SUMS)).group_by(
        *(both.c[name] for name in by)
    )


async def watermark(db: AsyncSession) -> int:
    """The highest usage id folded into `usage_days` (every row up to it is counted there)."""
    found = (await db.exec(select(RollupMark.last_id).where(RollupMark.name == USAGE))).first()
    return int(found or 0)


async def fold(db: AsyncSession, *, batch: int = BATCH) -> int:
    """Fold every usage row above the watermark into `usage_days`; the number of rows folded."""
    folded = 0
    while (done := await _fold_batch(db, batch)) is not None:
        folded += done
    return folded


async def _fold_batch(db: AsyncSession, batch: int) -> int | None:
    """One batch in one transaction; None when nothing is left (or another process folds at the same moment)."""
    last = await watermark(db)
    if not (await db.exec(select(RollupMark.name).where(RollupMark.name == USAGE))).first():
        marks = RollupMark.__table__  # type: ignore[attr-defined]
        await db.exec(insert_ignoring_duplicates(db, marks).values(name=USAGE, last_id=0))
        await db.commit()
    top = await _settled_top(db)
    if top <= last:
        await db.commit()
        return None
    upto = min(top, last + batch)
    table = UsageRecord.__table__  # type: ignore[attr-defined]
    group = (
        day_of(db, table.c.created_at),
        table.c.user_id,
        table.c.model,
        func.coalesce(table.c.agent_id, 0),
        func.coalesce(table.c.key_id, 0),
    )
    sums = (
        func.count(),
        func.sum(table.c.prompt_tokens),
        func.sum(table.c.completion_tokens),
        func.sum(table.c.cost),
        func.sum(table.c.earned),
    )
    query: Any = (
        select_columns(*group, *sums).where(table.c.id > last, table.c.id <= upto, table.c.code == "").group_by(*group)
    )
    found = [
        dict(zip(GROUP + SUMS, (*row[:5], *(int(n or 0) for n in row[5:])), strict=True))
        for row in (await db.exec(query)).all()
    ]
    if found:
        days = UsageDay.__table__  # type: ignore[attr-defined]
        insert = postgresql_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
        statement = insert(days)
        upsert = statement.on_conflict_do_update(
            index_elements=list(GROUP), set_={name: days.c[name] + statement.excluded[name] for name in SUMS}
        )
        await db.exec(upsert, params=found)
    moved = await db.exec(
        update(RollupMark).where(col(RollupMark.name) == USAGE, col(RollupMark.last_id) == last).values(last_id=upto)
    )
    if moved.rowcount != 1:  # another process folded this batch first: ours would count it twice
        await db.rollback()
        return None
    await db.commit()
    return sum(int(row["requests"]) for row in found)


async def _settled_top(db: AsyncSession) -> int:
    """The highest usage id below which every row is committed (or never will be), so folding up to it is final.

    On PostgreSQL ids come from a sequence and a transaction still writing may hold lower ids than one that has
    committed; a SHARE lock waits for every writer in progress, and later rows get higher ids. On SQLite there is one
    writer at a time and a new row's id is above every committed one.
    """
    if db.get_bind().dialect.name == "postgresql":
        await db.exec(text("SET LOCAL lock_timeout = '5s'"))  # type: ignore[call-overload]
        await db.exec(text("LOCK TABLE usage IN SHARE MODE"))  # type: ignore[call-overload]
        top = (await db.exec(select(func.max(UsageRecord.id)))).one()
        await db.commit()  # the lock goes; rows written from now on get higher ids
        return int(top or 0)
    return int((await db.exec(select(func.max(UsageRecord.id)))).one() or 0)
