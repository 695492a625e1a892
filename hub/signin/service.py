"""Who may come in after a provider vouches for them: known members, invited people, matching domains."""

from __future__ import annotations

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import Identity, Role, Status, User
from hub.accounts.service import find_by_email
from hub.errors import Conflict, Forbidden, NotInvited
from hub.invitations.models import Invitation
from hub.invitations.service import role_for_domain, take_use
from hub.ledger.models import Kind
from hub.ledger.service import account_for, post, system_account
from hub.signin.providers import ExternalIdentity

SUSPENDED = "Your account is suspended. Ask an admin of this hub if you think this is a mistake."
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
    if existing is None:
        user = User(email=who.email, name=who.name, role=role)
    else:  # A removed member who was invited back.
        user, user.role, user.status = existing, role, Status.ACTIVE
        user.name = who.name or user.name
    db.add(user)
    await db.flush()
    if invited is not None and invited.credits > 0:
        # Starting credits land in the same transaction as the new member: both, or neither.
        issuance, account = await system_account(db, Kind.ISSUANCE), await account_for(db, user.pk)
        await post(
            db,
            key=f"invite:{invited.id}:{user.pk}",
            kind="grant",
            moves=[(issuance, -invited.credits), (account, invited.credits)],
            memo="starting credits from an invitation",
        )
    return await _link(db, user, who)


async def _role_for_newcomer(
    db: AsyncSession, who: ExternalIdentity, invitation: str | None
) -> tuple[Role, Invitation | None]:
    if not who.email:
        raise Forbidden(f"{who.provider} did not share an email address, which this hub needs. Try another way in.")
    if invitation:
        invited = await take_use(db, invitation)
        return Role(invited.role), invited
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
