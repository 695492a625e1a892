"""Invitation links and email-domain rules: the two ways into the club."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger
from sqlmodel import Field, SQLModel

from hub.db import utcnow


class Invitation(SQLModel, table=True):
    __tablename__ = "invitations"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    role: str = Field(default="member", max_length=16)
    note: str = Field(default="", max_length=500)
    email: str | None = Field(default=None, max_length=320, index=True)  # for this person only, when set
    max_uses: int = 1
    uses: int = 0
    credits: int = Field(default=0, sa_type=BigInteger)  # micro-credits each newcomer starts with
    expires_at: datetime | None = None
    created_by: int | None = Field(default=None, foreign_key="users.id", ondelete="SET NULL")
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        if self.uses >= self.max_uses:
            return "used up"
        return "active"


class DomainRule(SQLModel, table=True):
    """Anyone who signs in with a verified address at `domain` may join with `role`."""

    __tablename__ = "domain_rules"

    id: int | None = Field(default=None, primary_key=True)
    domain: str = Field(max_length=253, unique=True)
    role: str = Field(default="member", max_length=16)
    created_by: int | None = Field(default=None, foreign_key="users.id", ondelete="SET NULL")
    created_at: datetime = Field(default_factory=utcnow)
