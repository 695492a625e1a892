"""Club-wide settings stored in the database (the name shown on every page)."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import User
from hub.accounts.service import require_admin
from hub.club.models import ClubSetting
from hub.parsing import clean_text


async def club_name(db: AsyncSession, default: str) -> str:
    setting = await db.get(ClubSetting, "club_name")
    return setting.value if setting and setting.value else default


async def rename_club(db: AsyncSession, actor: User, name: str) -> str:
    require_admin(actor)
    name = clean_text(name, what="club name", max_length=80, required=True)
    setting = await db.get(ClubSetting, "club_name") or ClubSetting(key="club_name")
    setting.value = name
    db.add(setting)
    await db.commit()
    return name


async def read_number(db: AsyncSession, key: str) -> int | None:
    """A whole-number club setting, or None when unset."""
    setting = await db.get(ClubSetting, key)
    return int(setting.value) if setting and setting.value.isdigit() else None


async def stage(db: AsyncSession, key: str, value: int | None) -> None:
    """Set a club setting in the caller's transaction (None clears it); the caller commits."""
    await db.merge(ClubSetting(key=key, value="" if value is None else str(value)))
