"""API keys: create (secret shown once), list, revoke, limit whose GPUs see them, and check a key for `/v1`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub import tokens
from hub.accounts.models import Status, User
from hub.accounts.service import find_by_email
from hub.db import utcnow
from hub.errors import BadRequest, InvalidApiKey, NotFound
from hub.keys.models import ApiKey, KeyModel, TrustedProvider
from hub.keys.trust import Scope, Trust
from hub.parsing import clean_text, normalize_email

KEY_PREFIX = "gpc"
VISIBLE = 12  # "gpc_" and 8 random characters: enough to tell keys apart, useless to an attacker.
LAST_USED_PRECISION = timedelta(minutes=1)


async def create_key(
    db: AsyncSession,
    user: User,
    *,
    name: str,
    expires_at: datetime | None = None,
    trust: Trust = Trust.ANY,
    trusted: Sequence[str] = (),
) -> tuple[ApiKey, str]:
    """A new key for `user` and its secret, which is never stored and cannot be shown again.

    `trust` limits whose GPUs see the key's prompts; for `Trust.TRUSTED`, `trusted` are the members' emails.
    """
    name = clean_text(name, what="key name", max_length=100, required=True)
    providers = await _providers(db, user, trust, trusted)
    secret = tokens.new_secret(KEY_PREFIX)
    key = ApiKey(
        user_id=user.pk,
        name=name,
        prefix=secret[:VISIBLE],
        key_hash=tokens.digest(secret),
        expires_at=expires_at,
        trust=trust,
    )
    db.add(key)
    await db.flush()
    db.add_all(TrustedProvider(key_id=key.id or 0, user_id=provider.pk) for provider in providers)
    await db.commit()
    await db.refresh(key)
    return key, secret


async def set_scope(db: AsyncSession, user: User, key_id: int, *, trust: Trust, trusted: Sequence[str] = ()) -> ApiKey:
    """Change whose GPUs an existing key reaches; the caller clears the key cache so it applies at once."""
    key = await get_owned(db, user, key_id)
    if key.revoked_at is not None:
        raise BadRequest("This key is revoked; create a new one instead.")
    providers = await _providers(db, user, trust, trusted)
    await db.exec(delete(TrustedProvider).where(col(TrustedProvider.key_id) == key.id))
    key.trust = trust
    db.add(key)
    db.add_all(TrustedProvider(key_id=key_id, user_id=provider.pk) for provider in providers)
    await db.commit()
    await db.refresh(key)
    return key


async def _providers(db: AsyncSession, user: User, trust: Trust, emails: Sequence[str]) -> list[User]:
    """The members a `trusted` key names (other scopes name nobody); any address that is not a member fails."""
    if trust is not Trust.TRUSTED:
        return []
    found: dict[int, User] = {}
    for text in emails:
        email = normalize_email(text)
        other = await find_by_email(db, email)
        if other is None or other.status == Status.REMOVED:
            raise BadRequest(f"{email} is not a member of this club, so their GPUs cannot be trusted.")
        if other.pk != user.pk:  # the member's own GPUs are always included
            found[other.pk] = other
    if not found:
        raise BadRequest("Name at least one other member whose GPUs this key may use.")
    return list(found.values())


async def scope_of(db: AsyncSession, key: ApiKey) -> Scope:
    trust = Trust(key.trust)
    if trust is not Trust.TRUSTED:
        return Scope(trust)
    query = select(TrustedProvider.user_id).where(TrustedProvider.key_id == key.id)
    return Scope(trust, frozenset((await db.exec(query)).all()))


async def models_of(db: AsyncSession, key: ApiKey) -> frozenset[str]:
    """The models the key may use; empty: every model."""
    return frozenset((await db.exec(select(KeyModel.model).where(KeyModel.key_id == key.id))).all())


async def trusted_emails(db: AsyncSession, keys: Sequence[ApiKey]) -> dict[int, list[str]]:
    """For each key, the emails of the members it trusts (sorted), in one query."""
    ids = [key.id for key in keys if key.id is not None and key.trust == Trust.TRUSTED]
    emails: dict[int, list[str]] = {}
    if not ids:
        return emails
    query = (
        select(TrustedProvider.key_id, User.email)
        .join(User, col(User.id) == col(TrustedProvider.user_id))
        .where(col(TrustedProvider.key_id).in_(ids))
        .order_by(col(User.email))
    )
    for key_id, email in (await db.exec(query)).all():
        emails.setdefault(key_id, []).append(email)
    return emails


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
