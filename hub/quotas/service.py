"""Which limits apply to a member and a key: club defaults, member overrides, optional key limits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import User
from hub.accounts.service import require_admin
from hub.club.service import read_number, stage
from hub.errors import BadRequest, NotFound
from hub.keys.models import ApiKey, KeyModel
from hub.quotas.budgets import Budget
from hub.quotas.models import KeyPolicy, MemberPolicy

DEFAULTS = {"rpm": "default_rpm", "tokens_per_day": "default_tokens_per_day", "concurrency": "default_concurrency"}
ALLOWANCE_KEY = "default_allowance"
FIELDS = ("rpm", "tokens_per_day", "concurrency")


@dataclass(frozen=True)
class Limits:
    """None means unlimited."""

    rpm: int | None = None
    tokens_per_day: int | None = None
    concurrency: int | None = None


@dataclass(frozen=True)
class KeyRules:
    """What a key's owner set for it: its own limits, its budget and the models it may use (empty: any)."""

    limits: Limits = field(default_factory=Limits)
    budget: Budget = field(default_factory=Budget)
    models: frozenset[str] = frozenset()


async def club_defaults(db: AsyncSession) -> Limits:
    return Limits(**{name: await read_number(db, key) for name, key in DEFAULTS.items()})


async def limits_for(db: AsyncSession, user_id: int, key_id: int) -> tuple[Limits, KeyRules]:
    """(the member's limits, the key's own rules)."""
    defaults = await club_defaults(db)
    member = await db.get(MemberPolicy, user_id)
    key = await db.get(KeyPolicy, key_id)
    merged = Limits(
        **{
            name: getattr(member, name) if member and getattr(member, name) is not None else getattr(defaults, name)
            for name in FIELDS
        }
    )
    own = Limits(**{name: getattr(key, name) if key else None for name in FIELDS})
    budget = Budget(key.budget_day, key.budget_month) if key else Budget()
    models = frozenset((await db.exec(select(KeyModel.model).where(KeyModel.key_id == key_id))).all())
    return merged, KeyRules(own, budget, models)


def check_limit(value: int | None, what: str) -> int | None:
    if value is not None and not 1 <= value <= 1_000_000_000:
        raise BadRequest(f"The {what} limit must be between 1 and 1000000000 (or empty for no limit).")
    return value


async def set_defaults(db: AsyncSession, actor: User | None, limits: Limits) -> None:
    if actor is not None:
        require_admin(actor)
    for name, key in DEFAULTS.items():
        await stage(db, key, check_limit(getattr(limits, name), name.replace("_", " ")))
    await db.commit()


async def set_member_limits(db: AsyncSession, actor: User | None, user: User, **values: int | None) -> MemberPolicy:
    """Override some of a member's limits; fields not given keep their value."""
    if actor is not None:
        require_admin(actor)
    policy = await db.get(MemberPolicy, user.pk) or MemberPolicy(user_id=user.pk)
    for name, value in values.items():
        if name not in (*FIELDS, "allowance"):
            raise BadRequest(f"Unknown limit {name!r}.")
        setattr(policy, name, check_limit(value, name.replace("_", " ")) if name != "allowance" else value)
    db.add(policy)
    await db.commit()
    return policy


async def default_allowance(db: AsyncSession) -> int:
    return await read_number(db, ALLOWANCE_KEY) or 0


async def set_default_allowance(db: AsyncSession, actor: User | None, micro: int) -> None:
    if actor is not None:
        require_admin(actor)
    await stage(db, ALLOWANCE_KEY, micro)
    await db.commit()


BUDGETS = ("budget_day", "budget_month")


async def set_key_limits(
    db: AsyncSession, owner: User, prefix: str, *, models: Sequence[str] | None = None, **values: int | None
) -> KeyPolicy:
    """Limits for one of `owner`'s API keys, named by its visible prefix: rpm, tokens per day, concurrency, budgets
    (micro-credits; None: no budget) and, if given, the models it may use (empty: every model)."""
    key = (
        await db.exec(select(ApiKey).where(ApiKey.user_id == owner.pk, ApiKey.prefix == prefix.strip()[:16]))
    ).first()
    if key is None or key.revoked_at is not None:
        raise NotFound(f"{owner.email} has no active API key starting with {prefix.strip()!r}.")
    policy = await db.get(KeyPolicy, key.id) or KeyPolicy(key_id=key.id or 0)
    for name, value in values.items():
        if name in BUDGETS:
            if value is not None and value < 0:
                raise BadRequest("A budget cannot be below zero.")
            setattr(policy, name, value)
        elif name in FIELDS:
            setattr(policy, name, check_limit(value, name.replace("_", " ")))
        else:
            raise BadRequest(f"Unknown limit {name!r}.")
    db.add(policy)
    if models is not None:
        await db.exec(delete(KeyModel).where(col(KeyModel.key_id) == policy.key_id))
        db.add_all(KeyModel(key_id=policy.key_id, model=model) for model in models)
    await db.commit()
    await db.refresh(policy)
    return policy
