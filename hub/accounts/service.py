"""Members, sessions and one-time sign-in links: the rules, with no web imports."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub import tokens
from hub.accounts.models import Identity, LoginLink, Role, Status, User, WebSession
from hub.db import utcnow
from hub.errors import BadRequest, Conflict, Forbidden, NotFound
from hub.parsing import clean_text, normalize_email

LINK_NOT_VALID = "This sign-in link is not valid: it was already used, has expired, or was mistyped."
NOT_ACTIVE = "This account is suspended or was removed. Ask an admin."


def parse_role(text: str) -> Role:
    try:
        return Role(text.strip().lower())
    except ValueError:
        raise BadRequest(f"The role must be owner, admin or member, got {text!r}.") from None


async def find_by_email(db: AsyncSession, email: str) -> User | None:
    return (await db.exec(select(User).where(User.email == email.strip().lower()))).first()


async def get_member(db: AsyncSession, email: str) -> User:
    """A current (not removed) member by email, for the command line."""
    user = await find_by_email(db, normalize_email(email))
    if user is None or user.status == Status.REMOVED:
        raise NotFound(f"No member with the email {email.strip()!r}.")
    return user


async def add_member(db: AsyncSession, email: str, *, role: Role = Role.MEMBER, name: str = "") -> User:
    email = normalize_email(email)
    name = clean_text(name, what="name", max_length=200)
    user = await find_by_email(db, email)
    if user is not None and user.status != Status.REMOVED:
        raise Conflict(f"{email} is already a member.")
    if user is None:
        user = User(email=email, name=name, role=role)
    else:
        user.role, user.status, user.name = role, Status.ACTIVE, name or user.name
    db.add(user)
    await db.commit()
    await db.refresh(user)
    return user


async def has_owner(db: AsyncSession) -> bool:
    query = select(func.count()).select_from(User).where(User.role == Role.OWNER, User.status == Status.ACTIVE)
    return (await db.exec(query)).one() > 0


async def list_members(db: AsyncSession) -> list[User]:
    query = select(User).where(User.status != Status.REMOVED).order_by(col(User.created_at), col(User.id))
    return list((await db.exec(query)).all())


# Sessions ------------------------------------------------------------------------------------------------


async def start_session(db: AsyncSession, user: User, *, days: int) -> str:
    """A new session token for the browser cookie; a fresh one at every sign-in, so a planted cookie is useless."""
    token = tokens.new_secret("gps")
    db.add(WebSession(token_hash=tokens.digest(token), user_id=user.pk, expires_at=utcnow() + timedelta(days=days)))
    user.last_seen_at = utcnow()
    db.add(user)
    await db.commit()
    return token


async def user_for_session(db: AsyncSession, token: str) -> User | None:
    query = (
        select(User)
        .join(WebSession, col(WebSession.user_id) == col(User.id))
        .where(WebSession.token_hash == tokens.digest(token), WebSession.expires_at > utcnow())
        .where(User.status == Status.ACTIVE)
    )
    return (await db.exec(query)).first()


async def end_session(db: AsyncSession, token: str) -> None:
    await db.exec(delete(WebSession).where(col(WebSession.token_hash) == tokens.digest(token)))
    await db.commit()


# One-time links ------------------------------------------------------------------------------------------


async def create_login_link(
    db: AsyncSession, user: User | None, *, minutes: int, invitation_id: int | None = None, email: str | None = None
) -> str:
    """A single-use sign-in token for `user`; with no user, the first-start link that claims ownership, or (with
    `invitation_id` and `email`) the link that makes someone invited a member when they follow it."""
    token = tokens.new_secret("gpl")
    link = LoginLink(
        token_hash=tokens.digest(token),
        user_id=user.id if user else None,
        expires_at=utcnow() + timedelta(minutes=minutes),
        invitation_id=invitation_id,
        email=email,
    )
    db.add(link)
    await db.commit()
    return token


async def peek_login_link(db: AsyncSession, token: str) -> LoginLink:
    link = (await db.exec(select(LoginLink).where(LoginLink.token_hash == tokens.digest(token)))).first()
    if link is None or link.used_at is not None or link.expires_at <= utcnow():
        raise NotFound(LINK_NOT_VALID)
    return link


async def use_login_link(db: AsyncSession, token: str) -> User:
    """Spend a member's sign-in link (once) and return the member."""
    link = await peek_login_link(db, token)
    if link.user_id is None:
        raise NotFound("This link sets up the hub's owner; open it in a browser to claim the hub.")
    await spend_login_link(db, link)
    user = await db.get(User, link.user_id)
    if user is None or not user.is_active:
        await db.rollback()
        raise Forbidden(NOT_ACTIVE)
    await db.commit()
    return user


async def peek_setup_link(db: AsyncSession, token: str) -> LoginLink:
    """The first-start link, while it can still make someone the owner."""
    link = await peek_login_link(db, token)
    if link.user_id is not None or link.invitation_id is not None:
        raise NotFound("This is not an owner set-up link.")
    if await has_owner(db):
        raise Conflict("This hub already has an owner. Ask them for an invitation.")
    return link


async def claim_ownership(db: AsyncSession, token: str, *, email: str, name: str) -> User:
    """The first-start link: whoever opens it becomes the owner, once."""
    link = await peek_setup_link(db, token)
    email = normalize_email(email)
    name = clean_text(name, what="name", max_length=200)
    await spend_login_link(db, link)
    user = await find_by_email(db, email)
    if user is None:
        user = User(email=email, name=name)
    user.role, user.status, user.name = Role.OWNER, Status.ACTIVE, name or user.name
    db.add(user)
    await db.commit()
    await db.refresh(user)
    return user


async def spend_login_link(db: AsyncSession, link: LoginLink) -> None:
    """Mark the link used inside the caller's transaction (the caller commits)."""
    # The guarded UPDATE makes the link single-use even when two browsers open it at the same moment.
    result = await db.exec(
        update(LoginLink).where(col(LoginLink.id) == link.id, col(LoginLink.used_at).is_(None)).values(used_at=utcnow())
    )
    if result.rowcount != 1:
        await db.rollback()
        raise NotFound(LINK_NOT_VALID)


async def delete_expired_login_links(db: AsyncSession) -> int:
    """Forget sign-in links that expired unused (housekeeping): asking by email would otherwise grow the table."""
    result = await db.exec(
        delete(LoginLink).where(col(LoginLink.used_at).is_(None), col(LoginLink.expires_at) <= utcnow())
    )
    await db.commit()
    return int(result.rowcount or 0)


# Managing members (admins) -------------------------------------------------------------------------------


def require_admin(actor: User) -> None:
    if not actor.is_admin:
        raise Forbidden("Only admins can do that.")


async def get_member_by_id(db: AsyncSession, actor: User, user_id: int) -> User:
    require_admin(actor)
    user = await db.get(User, user_id)
    if user is None or user.status == Status.REMOVED:
        raise NotFound("No such member.")
    return user


async def set_role(db: AsyncSession, actor: User, user_id: int, role: Role) -> User:
    target = await get_member_by_id(db, actor, user_id)
    if (role == Role.OWNER or target.is_owner) and not actor.is_owner:
        raise Forbidden("Only an owner can make someone an owner or change an owner's role.")
    if target.is_owner and role != Role.OWNER:
        await _keep_an_owner(db, target, "demote")
    target.role = role
    db.add(target)
    await db.commit()
    return target


async def suspend(db: AsyncSession, actor: User, user_id: int) -> User:
    """Suspended at once: sessions are deleted and API keys stop working (key checks look at the status)."""
    target = await _manageable(db, actor, user_id, "suspend")
    target.status = Status.SUSPENDED
    db.add(target)
    await db.exec(delete(WebSession).where(col(WebSession.user_id) == target.id))
    await db.commit()
    return target


async def reactivate(db: AsyncSession, actor: User, user_id: int) -> User:
    target = await get_member_by_id(db, actor, user_id)
    if target.is_owner and not actor.is_owner:
        raise Forbidden("Only an owner can change another owner.")
    target.status = Status.ACTIVE
    db.add(target)
    await db.commit()
    return target


async def remove(db: AsyncSession, actor: User, user_id: int) -> User:
    """Removed members keep their rows (history will point at them) but can no longer sign in or use keys."""
    target = await _manageable(db, actor, user_id, "remove")
    target.status = Status.REMOVED
    db.add(target)
    await db.exec(delete(WebSession).where(col(WebSession.user_id) == target.id))
    await db.exec(delete(Identity).where(col(Identity.user_id) == target.id))
    await db.commit()
    return target


async def _manageable(db: AsyncSession, actor: User, user_id: int, verb: str) -> User:
    target = await get_member_by_id(db, actor, user_id)
    if target.id == actor.id:
        raise BadRequest(f"You cannot {verb} yourself.")
    if target.is_owner:
        if not actor.is_owner:
            raise Forbidden("Only an owner can change another owner.")
        await _keep_an_owner(db, target, verb)
    return target


async def _keep_an_owner(db: AsyncSession, target: User, verb: str) -> None:
    query = (
        select(func.count())
        .select_from(User)
        .where(User.role == Role.OWNER, User.status == Status.ACTIVE, col(User.id) != target.id)
    )
    if (await db.exec(query)).one() == 0:
        raise Conflict(f"You cannot {verb} the last owner. Make someone else an owner first.")
