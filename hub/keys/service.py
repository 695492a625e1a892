"""API keys: create (secret shown once), list, revoke, and check a key presented to `/v1`."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub import tokens
from hub.accounts.models import Status, User
from hub.db import utcnow
from hub.errors import InvalidApiKey, NotFound
from hub.keys.models import ApiKey
from hub.parsing import clean_text

KEY_PREFIX = "gpc"
VISIBLE = 12  # "gpc_" and 8 random characters: enough to tell keys apart, useless to an attacker.
LAST_USED_PRECISION = timedelta(minutes=1)


async def create_key(
    db: AsyncSession, user: User, *, name: str, expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """A new key for `user` and its secret, which is never stored and cannot be shown again."""
    name = clean_text(name, what="key name", max_length=100, required=True)
    secret = tokens.new_secret(KEY_PREFIX)
    key = ApiKey(
        user_id=user.pk, name=name, prefix=secret[:VISIBLE], key_hash=tokens.digest(secret), expires_at=expires_at
    )
    db.add(key)
    await db.commit()
    await db.refresh(key)
    return key, secret


async def list_keys(db: AsyncSession, user: User) -> list[ApiKey]:
    query = (
        select(ApiKey).where(ApiKey.user_id == user.id).order_by(col(ApiKey.created_at).desc(), col(ApiKey.id).desc())
    )
    return list((await db.exec(query)).all())


async def get_owned(db: AsyncSession, user: User, key_id: int) -> ApiKey:
    """The key, if `user` owns it; someone else's key is simply not found."""
    key = await db.get(ApiKey, key_id)
    if key is None or key.user_id != user.id:
        raise NotFound("No such API key.")
    return key


async def revoke(db: AsyncSession, user: User, key_id: int) -> ApiKey:
    key = await get_owned(db, user, key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        db.add(key)
        await db.commit()
    return key


async def authenticate(db: AsyncSession, secret: str) -> tuple[User, ApiKey]:
    """The member and key behind a bearer secret, in one indexed query; any failure is the same 401."""
    now = utcnow()
    query = (
        select(User, ApiKey)
        .join(ApiKey, col(ApiKey.user_id) == col(User.id))
        .where(ApiKey.key_hash == tokens.digest(secret), col(ApiKey.revoked_at).is_(None))
        .where(or_(col(ApiKey.expires_at).is_(None), col(ApiKey.expires_at) > now))
        .where(User.status == Status.ACTIVE)
    )
    row = (await db.exec(query)).first()
    if row is None:
        raise InvalidApiKey("Incorrect API key provided. Create one on the hub's API keys page.")
    user, key = row
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_PRECISION:
        await db.exec(update(ApiKey).where(col(ApiKey.id) == key.id).values(last_used_at=now))
        await db.commit()
    return user, key
