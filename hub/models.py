"""Every table, imported in one place for Alembic and the tests."""

from sqlmodel import SQLModel

from hub.accounts.models import Identity, LoginLink, User, WebSession
from hub.agents.models import Agent
from hub.club.models import ClubSetting
from hub.invitations.models import DomainRule, Invitation
from hub.keys.models import ApiKey
from hub.usage.models import UsageRecord

metadata = SQLModel.metadata

__all__ = [
    "Agent",
    "ApiKey",
    "ClubSetting",
    "DomainRule",
    "Identity",
    "Invitation",
    "LoginLink",
    "UsageRecord",
    "User",
    "WebSession",
    "metadata",
]
