"""Who may come in after a provider vouches for them: known members, invited people, matching domains."""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import Identity, Role, Status, User
from hub.accounts.service import find_by_email
from hub.errors import Conflict, Forbidden, NotInvited
from hub.invitations.models import Invitation
from hub.invitations.service import find_valid, role_for_domain, take_use_of
from hub.ledger.models import Kind
from hub.ledger.service import account_for, post, system_account
from hub.signin.providers import ExternalIdentity

SUSPENDED = "Your account is suspended. Ask an admin of this hub if you think this is a mistake."
FOR_SOMEONE_ELSE = (
    "You signed in as {who}, but this invitation is for another address (verified by the provider). "
    "Sign in with that address, or ask an admin for an invitation of your own."
)
NOT_INVITED = (
    "You signed in as {who}, but this hub only admits invited people. "
    "Ask an admin for an invitation link, open it, and sign in again."
)


async def admit(db: AsyncSession, who: ExternalIdentity, invitation: str | None) -> User:
    """The member this identity signs in as, creating them only with an invitation or a domain rule.

    Nothing is written unless someone is admitted.
    """
    linked = (
        await db.exec(
            select(User).join(Identity).where(Identity.provider == who.provider, Identity.subject == who.subject)
        )
    ).first()
    if linked is not None:
        return _usable(linked)

    existing = await find_by_email(db, who.email) if who.email else None
    if existing is not None and existing.status != Status.REMOVED:
        if not who.email_verified:
            raise Conflict(
                f"An account for {who.email} exists, but {who.provider} has not verified that address. "
                "Sign in the way you did before, or verify the address with the provider."
            )
        return await _link(db, _usable(existing), who)

    role, invited = await _role_for_newcomer(db, who, invitation)
    joined = await enrol(db, email=who.email, name=who.name, role=role, returning=existing, invited=invited)
    if joined is not None:
        return await _link(db, joined, who)
    await db.rollback()  # invited back another way at the same moment, so a member now: the invitation's use goes back
    again = await find_by_email(db, who.email)
    if again is None:
        raise NotInvited(NOT_INVITED.format(who=who.email))
    return await _link(db, _usable(again), who)


async def enrol(
    db: AsyncSession, *, email: str, name: str, role: Role, returning: User | None, invited: Invitation | None
) -> User | None:
    """Make a newcomer (or a removed member invited back) a member, with the invitation's starting credits; None
    when the removed member was made a member again a moment ago (another invitation's link): nothing is granted.

    Inside the caller's transaction: the member and the credits land together, or neither (the caller commits).
    Every way in (a provider, an email link, an admin's link) comes through here, so none forgets the credits.
    """
    if returning is None:
        user = User(email=email, name=name, role=role)
        db.add(user)
        await db.flush()
    else:  # A removed member who was invited back: only while still removed, so two links race to one return.
        back = await db.exec(
            update(User)
            .where(col(User.id) == returning.id, col(User.status) == Status.REMOVED)
            .values(role=role, status=Status.ACTIVE, name=name or returning.name)
        )
        if back.rowcount != 1:
            return None
        user = returning
        await db.refresh(user)
    if invited is not None and invited.credits > 0:
        issuance, account = await system_account(db, Kind.ISSUANCE), await account_for(db, user.pk)
        await post(
            db,
            key=f"invite:{invited.id}:{user.pk}",
            kind="grant",
            moves=[(issuance, -invited.credits), (account, invited.credits)],
            memo="starting credits from an invitation",
        )
    return user


async def _role_for_newcomer(
    db: AsyncSession, who: ExternalIdentity, invitation: str | None
) -> tuple[Role, Invitation | None]:
    if not who.email:
        raise Forbidden(f"{who.provider} did not share an email address, which this hub needs. Try another way in.")
    if invitation:
        invited = await find_valid(db, invitation)
        if invited.email and (invited.email != who.email.lower() or not who.email_verified):
            raise Forbidden(FOR_SOMEONE_ELSE.format(who=who.email))
        return Role(invited.role), await take_use_of(db, invited)
    role = await role_for_domain(db, who.email) if who.email_verified else None
    if role is None:
        raise NotInvited(NOT_INVITED.format(who=who.email))
    return role, None


def _usable(user: User) -> User:
    if user.status == Status.SUSPENDED:
        raise Forbidden(SUSPENDED)
    if user.status == Status.REMOVED:
        raise NotInvited(NOT_INVITED.format(who=user.email))
    return user


async def _link(db: AsyncSession, user: User, who: ExternalIdentity) -> User:
    db.add(Identity(user_id=user.pk, provider=who.provider, subject=who.subject, email=who.email))
    await db.commit()
    await db.refresh(user)
    return user
