"""One-time sign-in links by email or from an admin, and the invitations they honour. No web imports.

A link for a member signs them in; only the member's own mailbox (an emailed link) or the operator's command line
makes one. A link for someone invited carries the invitation and the address: following it spends the link and one
use of the invitation and makes them a member with the invitation's role and starting credits, in one transaction,
so a second click, or a second link raced against the first, makes no second member and grants nothing twice. Such
a link never signs in someone who is a member already (they joined another way since, or an admin typed a member's
address): it says so, and they sign in as usual.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import LoginLink, Role, Status, User
from hub.accounts.service import (
    NOT_ACTIVE,
    create_login_link,
    find_by_email,
    peek_login_link,
    spend_login_link,
    use_login_link,
)
from hub.errors import Conflict, Forbidden, NotFound
from hub.invitations.models import Invitation
from hub.invitations.service import INVALID, open_invitation_for, take_use_of
from hub.signin.service import enrol


async def link_for_member(db: AsyncSession, email: str, *, minutes: int) -> str | None:
    """A sign-in token for the active member with this address; None for anyone else (the caller says the same)."""
    user = await find_by_email(db, email)
    if user is None or not user.is_active:
        return None
    return await create_login_link(db, user, minutes=minutes)


async def link_for_invited(db: AsyncSession, invitation: Invitation, email: str, *, minutes: int) -> str | None:
    """A token, to be emailed to `email`, that honours `invitation`: a member's own link if they already are one
    (the mailbox proves who they are); None if the address belongs to a suspended member."""
    user = await find_by_email(db, email)
    if user is not None and user.status == Status.SUSPENDED:
        return None
    if user is not None and user.is_active:
        return await create_login_link(db, user, minutes=minutes)
    return await create_login_link(db, None, minutes=minutes, invitation_id=invitation.id, email=email)


async def admin_link(db: AsyncSession, invitation: Invitation, email: str, *, minutes: int) -> str:
    """What an admin makes for someone invited, to hand over: always an invitation's link, never one that signs in
    an existing member (an admin could otherwise take over any account, the owner's too); it says why when it
    cannot."""
    if invitation.email and invitation.email != email:
        raise Conflict(f"This invitation is for {invitation.email}, not {email}.")
    user = await find_by_email(db, email)
    if user is not None and user.status == Status.SUSPENDED:
        raise Conflict(f"{email} is a suspended member: reactivate them on the Members page first.")
    if user is not None and user.status != Status.REMOVED:
        raise Conflict(already_member(email))
    return await create_login_link(db, None, minutes=minutes, invitation_id=invitation.id, email=email)


def already_member(email: str) -> str:
    return f"{email} is already a member; they sign in as usual."


async def link_for_cli(db: AsyncSession, email: str, *, minutes: int) -> str:
    """`gpuclub login-link EMAIL`: a member's link, or one that honours the newest invitation naming the address."""
    user = await find_by_email(db, email)
    if user is not None and user.status == Status.SUSPENDED:
        raise Conflict(f"{email} is suspended")
    if user is not None and user.is_active:
        return await create_login_link(db, user, minutes=minutes)
    invitation = await open_invitation_for(db, email)
    if invitation is None:
        raise NotFound(
            f"{email} is not a member and no open invitation names it: "
            f"`gpuclub invite create --email {email}` makes one, or `gpuclub member add {email}` adds them."
        )
    return await create_login_link(db, None, minutes=minutes, invitation_id=invitation.id, email=email)


async def follow(db: AsyncSession, token: str) -> User:
    """Spend a sign-in link (once) and return who it signs in, making an invited person a member."""
    link = await peek_login_link(db, token)
    if link.invitation_id is None:
        return await use_login_link(db, token)
    try:
        return await _join(db, link)
    except IntegrityError:
        # The same address joined a moment ago through another link: they are a member now, which _join says.
        await db.rollback()
        return await _join(db, await peek_login_link(db, token))


async def _join(db: AsyncSession, link: LoginLink) -> User:
    email = link.email or ""
    await spend_login_link(db, link)
    user = await find_by_email(db, email)
    if user is not None and user.status != Status.REMOVED:
        if not user.is_active:
            await db.rollback()
            raise Forbidden(NOT_ACTIVE)
        # A member already (they joined another way since the link was made): an invitation's link is not theirs
        # to sign in with, or whoever holds it would be signed in as them. The link is spent; the invitation unused.
        await db.commit()
        raise Conflict(already_member(email))
    invitation = await db.get(Invitation, link.invitation_id)
    if invitation is None:
        await db.rollback()
        raise NotFound(INVALID)
    try:
        await take_use_of(db, invitation)
    except NotFound:
        await db.rollback()
        raise
    joined = await enrol(db, email=email, name="", role=Role(invitation.role), returning=user, invited=invitation)
    if joined is None:  # invited back through another link at the same moment: that one made them a member
        await db.rollback()
        raise Conflict(already_member(email))
    await db.commit()
    await db.refresh(joined)
    return joined
