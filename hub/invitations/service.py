"""Invitations and email-domain rules: who may join, and with which role."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub import tokens
from hub.accounts.models import Role, User
from hub.accounts.service import require_admin
from hub.db import utcnow
from hub.errors import BadRequest, Conflict, NotFound
from hub.invitations.models import DomainRule, Invitation
from hub.parsing import clean_text, normalize_domain, normalize_email

INVALID = "This invitation is not valid any more: it was revoked, has expired or has been used up. Ask an admin."


def _check_role(actor: User | None, role: Role) -> None:
    if actor is not None:  # None: the operator's command line
        require_admin(actor)
    if role == Role.OWNER:
        raise BadRequest("Invitations are for members and admins; promote someone to owner on the Members page.")


async def create_invitation(
    db: AsyncSession,
    actor: User | None,
    *,
    role: Role = Role.MEMBER,
    max_uses: int = 1,
    expires_in: timedelta | None = timedelta(days=7),
    note: str = "",
    credits: int = 0,
    email: str = "",
) -> tuple[Invitation, str]:
    """A new invitation and its token (shown once; only the hash is kept); with `email`, for that person only."""
    _check_role(actor, role)
    if not 1 <= max_uses <= 10_000:
        raise BadRequest("The maximum number of uses must be between 1 and 10000.")
    token = tokens.new_secret("gpi")
    invitation = Invitation(
        token_hash=tokens.digest(token),
        role=role,
        max_uses=max_uses,
        expires_at=utcnow() + expires_in if expires_in else None,
        note=clean_text(note, what="note", max_length=500),
        credits=credits,
        email=normalize_email(email) if email.strip() else None,
        created_by=actor.id if actor else None,
    )
    db.add(invitation)
    await db.commit()
    await db.refresh(invitation)
    return invitation, token


async def list_invitations(db: AsyncSession, actor: User) -> list[Invitation]:
    require_admin(actor)
    query = select(Invitation).order_by(col(Invitation.created_at).desc(), col(Invitation.id).desc())
    return list((await db.exec(query)).all())


async def revoke_invitation(db: AsyncSession, actor: User, invitation_id: int) -> Invitation:
    require_admin(actor)
    invitation = await db.get(Invitation, invitation_id)
    if invitation is None:
        raise NotFound("No such invitation.")
    if invitation.revoked_at is None:
        invitation.revoked_at = utcnow()
        db.add(invitation)
        await db.commit()
    return invitation


async def find_valid(db: AsyncSession, token: str) -> Invitation:
    invitation = (await db.exec(select(Invitation).where(Invitation.token_hash == tokens.digest(token)))).first()
    if invitation is None or invitation.state(utcnow()) != "active":
        raise NotFound(INVALID)
    return invitation


async def get_invitation(db: AsyncSession, actor: User, invitation_id: int) -> Invitation:
    """An invitation that can still admit someone, for an admin."""
    require_admin(actor)
    invitation = await db.get(Invitation, invitation_id)
    if invitation is None:
        raise NotFound("No such invitation.")
    if invitation.state(utcnow()) != "active":
        raise NotFound(INVALID)
    return invitation


async def open_invitation_for(db: AsyncSession, email: str) -> Invitation | None:
    """The newest invitation naming this address that can still admit someone."""
    query = (
        select(Invitation)
        .where(Invitation.email == email, col(Invitation.revoked_at).is_(None))
        .where(col(Invitation.uses) < col(Invitation.max_uses))
        .where(or_(col(Invitation.expires_at).is_(None), col(Invitation.expires_at) > utcnow()))
        .order_by(col(Invitation.created_at).desc(), col(Invitation.id).desc())
    )
    return (await db.exec(query)).first()


async def take_use(db: AsyncSession, token: str) -> Invitation:
    """Spend one use of an invitation inside the caller's transaction (the caller commits)."""
    return await take_use_of(db, await find_valid(db, token))


async def take_use_of(db: AsyncSession, invitation: Invitation) -> Invitation:
    """Spend one use of this invitation inside the caller's transaction (the caller commits).

    The guarded UPDATE means concurrent sign-ins can never use an invitation more times than allowed.
    """
    now = utcnow()
    result = await db.exec(
        update(Invitation)
        .where(col(Invitation.id) == invitation.id, col(Invitation.uses) < col(Invitation.max_uses))
        .where(col(Invitation.revoked_at).is_(None))
        .where(or_(col(Invitation.expires_at).is_(None), col(Invitation.expires_at) > now))
        .values(uses=col(Invitation.uses) + 1)
    )
    if result.rowcount != 1:
        raise NotFound(INVALID)
    return invitation


# Domain rules ------------------------------------------------------------------------------------------


async def list_domain_rules(db: AsyncSession) -> list[DomainRule]:
    return list((await db.exec(select(DomainRule).order_by(col(DomainRule.domain)))).all())


async def add_domain_rule(db: AsyncSession, actor: User, domain: str) -> DomainRule:
    require_admin(actor)
    domain = normalize_domain(domain)
    if (await db.exec(select(DomainRule).where(DomainRule.domain == domain))).first() is not None:
        raise Conflict(f"There is already a rule for {domain}.")
    rule = DomainRule(domain=domain, created_by=actor.id)
    db.add(rule)
    await db.commit()
    await db.refresh(rule)
    return rule


async def remove_domain_rule(db: AsyncSession, actor: User, rule_id: int) -> None:
    require_admin(actor)
    result = await db.exec(delete(DomainRule).where(col(DomainRule.id) == rule_id))
    if result.rowcount != 1:
        raise NotFound("No such domain rule.")
    await db.commit()


async def role_for_domain(db: AsyncSession, email: str) -> Role | None:
    """The role a rule grants to this (verified) address, if any rule matches its domain exactly."""
    domain = email.rsplit("@", 1)[-1].lower()
    rule = (await db.exec(select(DomainRule).where(DomainRule.domain == domain))).first()
    return Role(rule.role) if rule else None
