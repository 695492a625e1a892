"""Members, their sign-in identities and browser sessions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from hub.db import utcnow


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"

    @property
    def is_admin(self) -> bool:
        return self in (Role.OWNER, Role.ADMIN)


class Status(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REMOVED = "removed"


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True, index=True)
    name: str = Field(default="", max_length=200)
    role: str = Field(default=Role.MEMBER, max_length=16)
    status: str = Field(default=Status.ACTIVE, max_length=16)
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime | None = None

    @property
    def pk(self) -> int:
        """The id of a saved user (never None once it is in the database)."""
        if self.id is None:
            raise ValueError("user is not saved yet")
        return self.id

    @property
    def is_admin(self) -> bool:
        return Role(self.role).is_admin

    @property
    def is_owner(self) -> bool:
        return self.role == Role.OWNER

    @property
    def is_active(self) -> bool:
        return self.status == Status.ACTIVE

    @property
    def display_name(self) -> str:
        return self.name or self.email


class Identity(SQLModel, table=True):
    """A sign-in provider's account linked to a member (provider + subject is unique)."""

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("provider", "subject"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    provider: str = Field(max_length=32)
    subject: str = Field(max_length=255)
    email: str = Field(default="", max_length=320)
    created_at: datetime = Field(default_factory=utcnow)


class WebSession(SQLModel, table=True):
    """A signed-in browser; the cookie holds the token, the table only its hash."""

    __tablename__ = "web_sessions"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime


class LoginLink(SQLModel, table=True):
    """A one-time sign-in link; with no user it is the first-start link that makes its opener the owner.

    A link for someone invited who is not a member yet names the invitation and the address it was sent to (or
    made for): following it makes them a member as the invitation says.
    """

    __tablename__ = "login_links"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    user_id: int | None = Field(default=None, foreign_key="users.id", ondelete="CASCADE")
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    used_at: datetime | None = None
    invitation_id: int | None = Field(default=None, foreign_key="invitations.id", ondelete="CASCADE")
    email: str | None = Field(default=None, max_length=320)
