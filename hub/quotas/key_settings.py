"""A key's settings as its owner edits them: name, expiry, budget per day and per month, the models it may use,
and its own requests per minute, tokens per day and concurrency.

Everything is parsed and checked before anything is written, so bad input changes nothing. Only the key's owner
changes it (`get_owned` first: someone else's key is not found). The caller publishes the change, so the key cache
and admission follow at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time

from sqlalchemy import delete, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import User
from hub.db import utcnow
from hub.errors import BadRequest
from hub.keys import service as keys
from hub.keys.models import ApiKey, KeyModel
from hub.keys.trust import Trust
from hub.parsing import clean_text, parse_count, parse_credits
from hub.quotas.budgets import DAY, MONTH, Budgets, current_period, period_start
from hub.quotas.models import KeyPolicy
from hub.usage.models import UsageRecord

MAX_MODELS = 100
MODEL_LENGTH = 200
LIMITS = (("rpm", "requests per minute"), ("tokens_per_day", "tokens per day"), ("concurrency", "concurrent requests"))


@dataclass(frozen=True)
class KeySettings:
    name: str
    expires_at: datetime | None = None
    budget_day: int | None = None  # micro-credits
    budget_month: int | None = None
    models: tuple[str, ...] = ()
    rpm: int | None = None
    tokens_per_day: int | None = None
    concurrency: int | None = None


@dataclass(frozen=True)
class KeyView:
    """What a key's row shows: its settings and what is left of its budget."""

    policy: KeyPolicy
    models: list[str]
    spent_today: int
    spent_month: int

    @property
    def left_today(self) -> int | None:
        return None if self.policy.budget_day is None else max(0, self.policy.budget_day - self.spent_today)

    @property
    def left_month(self) -> int | None:
        return None if self.policy.budget_month is None else max(0, self.policy.budget_month - self.spent_month)

    @property
    def limits(self) -> list[str]:
        p = self.policy
        shown = [f"{p.rpm:,} requests per minute"] if p.rpm else []
        shown += [f"{p.tokens_per_day:,} tokens per day"] if p.tokens_per_day else []
        if p.concurrency:
            shown.append(f"{p.concurrency:,} request{'s' if p.concurrency > 1 else ''} at once")
        return shown


def parse_expiry(text: str, current: datetime | None = None) -> datetime | None:
    """A date from the form's date field; the key works until the end of that day (UTC). An expiry already set
    may be sent back unchanged, even if that day has passed."""
    text = text.strip()
    if not text:
        return None
    if current is not None and text == f"{current:%Y-%m-%d}":
        return current
    try:
        day = datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise BadRequest(f"The expiry must be a date like 2027-01-31, got {text!r}.") from None
    expires = datetime.combine(day, time.max, tzinfo=UTC)
    if expires <= utcnow():
        raise BadRequest("The expiry date must be in the future.")
    return expires


def parse_models(text: str) -> tuple[str, ...]:
    """Model names, one per line or separated by commas; exact names, kept in the order given, without repeats."""
    names: dict[str, None] = {}
    for part in re.split(r"[,\n\r]+", text):
        name = part.strip()
        if not name:
            continue
        if len(name) > MODEL_LENGTH or not name.isprintable():
            raise BadRequest(f"A model name must be at most {MODEL_LENGTH} printable characters, got {name[:40]!r}….")
        names[name] = None
    if len(names) > MAX_MODELS:
        raise BadRequest(f"A key may name at most {MAX_MODELS} models (leave it empty to allow every model).")
    return tuple(names)


def _budget(text: str, what: str) -> int | None:
    return parse_credits(text, what=what, allow_zero=True) if text.strip() else None


def _limit(text: str, what: str) -> int | None:
    return parse_count(text, what=f"{what} limit", high=1_000_000_000) if text.strip() else None


def parse_settings(form: Mapping[str, str], current: ApiKey | None = None) -> KeySettings:
    """The settings a form sends (empty fields: no budget, no limit, every model, never expires)."""
    return KeySettings(
        name=clean_text(form.get("name", ""), what="key name", max_length=100, required=True),
        expires_at=parse_expiry(form.get("expires", ""), current.expires_at if current else None),
        budget_day=_budget(form.get("budget_day", ""), "budget per day"),
        budget_month=_budget(form.get("budget_month", ""), "budget per month"),
        models=parse_models(form.get("models", "")),
        **{name: _limit(form.get(name, ""), what) for name, what in LIMITS},
    )


async def _store(db: AsyncSession, key: ApiKey, settings: KeySettings) -> None:
    key_id = key.id or 0
    policy = await db.get(KeyPolicy, key_id) or KeyPolicy(key_id=key_id)
    policy.budget_day, policy.budget_month = settings.budget_day, settings.budget_month
    policy.rpm, policy.tokens_per_day, policy.concurrency = settings.rpm, settings.tokens_per_day, settings.concurrency
    db.add(policy)
    await db.exec(delete(KeyModel).where(col(KeyModel.key_id) == key_id))
    db.add_all(KeyModel(key_id=key_id, model=model) for model in settings.models)


async def save(db: AsyncSession, owner: User, key_id: int, form: Mapping[str, str]) -> ApiKey:
    """Change an existing key's settings from a form; someone else's key is not found."""
    key = await keys.get_owned(db, owner, key_id)
    if key.revoked_at is not None:
        raise BadRequest("This key is revoked; create a new one instead.")
    settings = parse_settings(form, key)
    key.name, key.expires_at = settings.name, settings.expires_at
    db.add(key)
    await _store(db, key, settings)
    await db.commit()
    await db.refresh(key)
    return key


async def create(
    db: AsyncSession, owner: User, form: Mapping[str, str], *, trust: Trust, trusted: Sequence[str]
) -> tuple[ApiKey, str]:
    """A new key with its settings, and its secret (shown once)."""
    settings = parse_settings(form)  # before anything is written
    key, secret = await keys.create_key(
        db, owner, name=settings.name, expires_at=settings.expires_at, trust=trust, trusted=trusted
    )
    if settings != KeySettings(name=settings.name, expires_at=settings.expires_at):
        await _store(db, key, settings)
        await db.commit()
        await db.refresh(key)
    return key, secret


async def views(db: AsyncSession, mine: Sequence[ApiKey], live: Budgets | None = None) -> dict[int, KeyView]:
    """Each key's settings and spend this month and today, in three queries; `live` adds what this process knows
    that the database does not yet (requests in flight, costs not yet written)."""
    ids = [key.id for key in mine if key.id is not None]
    if not ids:
        return {}
    policies = {p.key_id: p for p in (await db.exec(select(KeyPolicy).where(col(KeyPolicy.key_id).in_(ids)))).all()}
    models: dict[int, list[str]] = {}
    query = select(KeyModel.key_id, KeyModel.model).where(col(KeyModel.key_id).in_(ids)).order_by(col(KeyModel.model))
    for key_id, model in (await db.exec(query)).all():
        models.setdefault(key_id, []).append(model)
    budgeted = [i for i, p in policies.items() if p.budget_day is not None or p.budget_month is not None]
    today, month = await _spent(db, budgeted)
    found: dict[int, KeyView] = {}
    for key_id in ids:
        spent_today, spent_month = today.get(key_id, 0), month.get(key_id, 0)
        if live is not None:
            spent_today = max(spent_today, live.used(key_id, DAY) or 0)
            spent_month = max(spent_month, live.used(key_id, MONTH) or 0)
        policy = policies.get(key_id) or KeyPolicy(key_id=key_id)
        found[key_id] = KeyView(policy, models.get(key_id, []), spent_today, spent_month)
    return found


async def _spent(db: AsyncSession, ids: list[int]) -> tuple[dict[int, int], dict[int, int]]:
    """What these keys spent today and this month, from their usage rows (the (key_id, created_at) index)."""
    if not ids:
        return {}, {}
    day, month = period_start(DAY, current_period(DAY)), period_start(MONTH, current_period(MONTH))
    today = func.coalesce(func.sum(UsageRecord.cost).filter(col(UsageRecord.created_at) >= day), 0)
    query = (
        select(UsageRecord.key_id, func.coalesce(func.sum(UsageRecord.cost), 0), today)
        .where(col(UsageRecord.key_id).in_(ids), col(UsageRecord.created_at) >= month)
        .group_by(col(UsageRecord.key_id))
    )
    rows = (await db.exec(query)).all()
    return {int(k or 0): int(d) for k, _, d in rows}, {int(k or 0): int(m) for k, m, _ in rows}
