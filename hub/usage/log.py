"""The request log: a member's own requests, or the whole club's for admins, filtered and paged newest first.

Paging is by keyset (`before`: the id of the last row shown), so a page costs the same with a million rows: each
query walks one of the usage indexes, (user_id, created_at), (key_id, created_at), (agent_id, created_at) or
(created_at), from the newest row down. Names (keys, GPUs, their owners, members) are read afterwards for the
rows on the page only. Never content: the usage table holds none.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import ColumnElement, TextClause, and_, or_
from sqlalchemy import select as select_columns
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import User
from hub.accounts.service import require_admin
from hub.agents.models import Agent
from hub.db import Database
from hub.errors import BadRequest
from hub.keys.models import ApiKey
from hub.parsing import format_credits
from hub.usage.models import REFUSED, UsageRecord

PER_PAGE = 50
CSV_CHUNK = 1000
STATUSES = {"ok": "answered", "refused": "refused by the hub", "error": "failed"}
_ID = re.compile(r"^[0-9]{1,12}$")


@dataclass(frozen=True)
class Filters:
    since: date | None = None
    until: date | None = None
    model: str = ""
    key_id: int | None = None
    status: str = ""  # "", or one of STATUSES
    member_id: int | None = None  # admins only
    agent_id: int | None = None  # admins only

    def query(self, **extra: Any) -> str:
        """These filters (and `extra`) as a query string, for links and the CSV export."""
        values = {
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
            "model": self.model,
            "key": self.key_id or "",
            "status": self.status,
            "member": self.member_id or "",
            "agent": self.agent_id or "",
        } | extra
        return urlencode({name: value for name, value in values.items() if value not in ("", None)})


def _day(text: str, what: str) -> date | None:
    text = text.strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"The {what} date {text[:20]!r} is not a date like 2026-12-03.") from None


def _id(text: str, what: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not _ID.match(text):
        raise BadRequest(f"There is no {what} {text[:20]!r}.")
    return int(text)


def parse_filters(
    *,
    since: str = "",
    until: str = "",
    model: str = "",
    key: str = "",
    status: str = "",
    member: str = "",
    agent: str = "",
) -> Filters:
    """The filters from a form; anything unusable is a clear error (and shows nothing)."""
    first, last = _day(since, "from"), _day(until, "to")
    if first and last and first > last:
        raise BadRequest("The 'from' date is after the 'to' date.")
    status = status.strip().lower()
    if status and status not in STATUSES:
        raise BadRequest(f"There is no status {status[:20]!r}; choose one of {', '.join(STATUSES)}.")
    model = model.strip()
    if len(model) > 200 or not model.isprintable():
        raise BadRequest("A model name is at most 200 printable characters.")
    return Filters(first, last, model, _id(key, "key"), status, _id(member, "member"), _id(agent, "GPU"))


def parse_before(text: str) -> int | None:
    return _id(text, "page")


@dataclass(frozen=True)
class Line:
    id: int
    created_at: datetime
    member: str  # shown to admins only
    key: str
    model: str
    api: str
    stream: bool
    gpu: str  # whose GPU answered (its owner's name; for admins also the agent's)
    status: int
    code: str
    error: str
    prompt_tokens: int
    completion_tokens: int
    audio_ms: int | None
    estimated: bool
    cost: int
    earned: int
    ttft_ms: int | None
    duration_ms: int

    @property
    def outcome(self) -> str:
        return "ok" if self.status < 400 else "refused" if self.code else "error"


@dataclass
class Log:
    lines: list[Line]
    filters: Filters
    before: int | None
    older: int | None  # the `before` of the next page, if there is one
    keys: list[tuple[int, str]] = field(default_factory=list)  # what the key filter offers
    members: list[tuple[int, str]] = field(default_factory=list)  # admins only
    agents: list[tuple[int, str]] = field(default_factory=list)  # admins only


def _conditions(filters: Filters, user_id: int | None) -> list[ColumnElement[bool] | TextClause]:
    usage = UsageRecord
    found: list[ColumnElement[bool] | TextClause] = []
    if user_id is not None:
        found.append(col(usage.user_id) == user_id)
    if filters.member_id is not None:
        found.append(col(usage.user_id) == filters.member_id)
    if filters.key_id is not None:
        found.append(col(usage.key_id) == filters.key_id)
    if filters.agent_id is not None:
        found.append(col(usage.agent_id) == filters.agent_id)
    if filters.since:
        found.append(col(usage.created_at) >= datetime.combine(filters.since, datetime.min.time(), UTC))
    if filters.until:
        end = datetime.combine(filters.until + timedelta(days=1), datetime.min.time(), UTC)
        found.append(col(usage.created_at) < end)
    if filters.model:
        found.append(col(usage.model) == filters.model)
    if filters.status == "ok":
        found.append(col(usage.status) < 400)
    elif filters.status == "refused":
        found.append(REFUSED)  # as the partial indexes say it
    elif filters.status == "error":
        found.extend([col(usage.status) >= 400, col(usage.code) == ""])
    return found


# The columns the log shows, read as plain rows (building model objects would cost more than the query).
_COLUMNS = [
    getattr(UsageRecord.__table__.c, name)  # type: ignore[attr-defined]
    for name in (
        "id", "request_id", "created_at", "user_id", "key_id", "agent_id", "model", "endpoint", "stream", "status",
        "code", "error", "prompt_tokens", "completion_tokens", "audio_ms", "estimated", "cost", "earned", "ttft_ms",
        "duration_ms",
    )
]  # fmt: skip


async def _rows(db: AsyncSession, filters: Filters, user_id: int | None, before: int | None, limit: int) -> list[Any]:
    conditions = _conditions(filters, user_id)
    if before is not None:
        # The row the last page ended with, in the same scope (someone else's id pages nothing).
        at = (await db.exec(select(UsageRecord.created_at).where(UsageRecord.id == before, *conditions))).first()
        if at is None:
            return []
        created = col(UsageRecord.created_at)
        conditions.append(and_(created <= at, or_(created < at, col(UsageRecord.id) < before)))
    query: Any = (
        select_columns(*_COLUMNS)
        .where(*conditions)
        .order_by(col(UsageRecord.created_at).desc(), col(UsageRecord.id).desc())
        .limit(limit)
    )
    return list((await db.exec(query)).all())


async def _names(db: AsyncSession, found: Iterable[Any], *, club: bool, viewer: User) -> list[Line]:
    found = list(found)
    key_ids = {r.key_id for r in found if r.key_id is not None}
    agent_ids = {r.agent_id for r in found if r.agent_id is not None}
    keys = {
        i: f"{name} ({prefix}…)"
        for i, name, prefix in (
            await db.exec(select(ApiKey.id, ApiKey.name, ApiKey.prefix).where(col(ApiKey.id).in_(key_ids)))
        ).all()
    }
    agents = {
        i: (name, owner)
        for i, name, owner in (
            await db.exec(select(Agent.id, Agent.name, Agent.user_id).where(col(Agent.id).in_(agent_ids)))
        ).all()
    }
    user_ids = {owner for _, owner in agents.values()} | ({r.user_id for r in found} if club else set())
    users = {
        i: name or email
        for i, name, email in (
            await db.exec(select(User.id, User.name, User.email).where(col(User.id).in_(user_ids)))
        ).all()
    }

    def gpu(agent_id: int | None) -> str:
        if agent_id is None:
            return ""
        name, owner = agents.get(agent_id, ("a removed GPU", None))
        who = "you" if owner == viewer.id and not club else users.get(owner or 0, "a removed member")
        return f"{name} ({who})" if club else who

    return [
        Line(
            id=r.id,
            created_at=r.created_at,
            member=users.get(r.user_id, "a removed member") if club else "",
            key=keys.get(r.key_id, "a deleted key") if r.key_id is not None else "",
            model=r.model,
            api=r.endpoint,
            stream=r.stream,
            gpu=gpu(r.agent_id),
            status=r.status,
            code=r.code,
            error=r.error,
            prompt_tokens=r.prompt_tokens,
            completion_tokens=r.completion_tokens,
            audio_ms=r.audio_ms,
            estimated=r.estimated,
            cost=r.cost,
            earned=r.earned,
            ttft_ms=r.ttft_ms,
            duration_ms=r.duration_ms,
        )
        for r in found
    ]


async def _page(db: AsyncSession, viewer: User, filters: Filters, before: int | None, *, club: bool) -> Log:
    found = await _rows(db, filters, None if club else viewer.pk, before, PER_PAGE + 1)
    lines = await _names(db, found[:PER_PAGE], club=club, viewer=viewer)
    older = lines[-1].id if len(found) > PER_PAGE else None
    return Log(lines, filters, before, older)


async def member_log(db: AsyncSession, viewer: User, filters: Filters, before: int | None = None) -> Log:
    """One page of the viewer's own requests; member and GPU filters do not apply here."""
    filters = replace(filters, member_id=None, agent_id=None)
    log = await _page(db, viewer, filters, before, club=False)
    keys = select(ApiKey.id, ApiKey.name, ApiKey.prefix).where(ApiKey.user_id == viewer.pk).order_by(col(ApiKey.id))
    log.keys = [(i, f"{name} ({prefix}…)") for i, name, prefix in (await db.exec(keys)).all() if i is not None]
    return log


async def club_log(db: AsyncSession, actor: User, filters: Filters, before: int | None = None) -> Log:
    """One page of everyone's requests, for admins."""
    require_admin(actor)
    log = await _page(db, actor, filters, before, club=True)
    people = select(User.id, User.name, User.email).order_by(col(User.email))
    log.members = [(i, f"{name} ({email})" if name else email) for i, name, email in (await db.exec(people)).all() if i]
    gpus = select(Agent.id, Agent.name, User.email).join(User, col(User.id) == Agent.user_id).order_by(col(Agent.name))
    log.agents = [(i, f"{name} ({email})") for i, name, email in (await db.exec(gpus)).all() if i is not None]
    if filters.key_id is not None:
        log.keys = [(filters.key_id, f"key #{filters.key_id}")]
    return log


MEMBER_COLUMNS = [
    "time_utc", "request_id", "key", "model", "api", "stream", "gpu_owner", "status", "outcome", "error_code",
    "prompt_tokens", "completion_tokens", "audio_ms", "estimated", "cost_credits", "ttft_ms", "duration_ms",
]  # fmt: skip
CLUB_COLUMNS = [*MEMBER_COLUMNS[:2], "member", *MEMBER_COLUMNS[2:], "earned_credits"]


def _cell(value: object) -> str:
    """A spreadsheet must not run a member-chosen name as a formula."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def csv_lines(database: Database, viewer: User, filters: Filters, *, club: bool) -> AsyncIterator[str]:
    """The filtered log as CSV, newest first, read and sent CSV_CHUNK rows at a time (never all in memory)."""
    if club:
        require_admin(viewer)
    else:
        filters = replace(filters, member_id=None, agent_id=None)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CLUB_COLUMNS if club else MEMBER_COLUMNS)
    yield out.getvalue()
    before: int | None = None
    while True:
        async with database.session() as db:  # one short read per chunk, not a connection held for the download
            found = await _rows(db, filters, None if club else viewer.pk, before, CSV_CHUNK)
            ids = {r.id: r.request_id for r in found}
            lines = await _names(db, found, club=club, viewer=viewer)
        out.seek(0)
        out.truncate()
        for line in lines:
            row: list[object] = [
                line.created_at.astimezone(UTC).isoformat(timespec="milliseconds"),
                ids[line.id],
                line.key,
                line.model,
                line.api,
                int(line.stream),
                line.gpu,
                line.status,
                line.outcome,
                line.code,
                line.prompt_tokens,
                line.completion_tokens,
                "" if line.audio_ms is None else line.audio_ms,
                int(line.estimated),
                format_credits(line.cost).replace(",", ""),
                "" if line.ttft_ms is None else line.ttft_ms,
                line.duration_ms,
            ]
            if club:
                row[2:2] = [line.member]
                row.append(format_credits(line.earned).replace(",", ""))
            writer.writerow([_cell(value) for value in row])
        if lines:
            yield out.getvalue()
        if len(found) < CSV_CHUNK:
            return
        before = lines[-1].id
