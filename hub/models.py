"""Every table, imported in one place for Alembic and the tests."""

from sqlmodel import SQLModel

from hub.accounts.models import Identity, LoginLink, User, WebSession
from hub.club.models import ClubSetting
from hub.invitations.models import DomainRule, Invitation
from hub.keys.models import ApiKey

metadata = SQLModel.metadata

__all__ = [
    "ApiKey",
    "ClubSetting",
    "DomainRule",
    "Identity",
    "Invitation",
    "LoginLink",
    "User",
    "WebSession",
    "metadata",
]
