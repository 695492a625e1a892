"""Every table, imported in one place for Alembic and the tests."""

from sqlmodel import SQLModel

from hub.accounts.models import Identity, LoginLink, User, WebSession
from hub.agents.models import Agent, ProbeReference, ProbeResult
from hub.billing.models import CreditPack, Purchase, StripeEvent
from hub.club.models import ClubSetting
from hub.invitations.models import DomainRule, Invitation
from hub.keys.models import ApiKey, KeyModel, TrustedProvider
from hub.ledger.models import Account, Entry, LedgerTransaction
from hub.pricing.models import Price
from hub.quotas.models import KeyPolicy, MemberPolicy
from hub.tokenizers.models import ModelTokenizer
from hub.usage.models import UsageRecord
from hub.usage.rollup_models import RollupMark, UsageDay  # noqa: F401 - tables for Alembic

metadata = SQLModel.metadata

__all__ = [
    "Account",
    "Agent",
    "ApiKey",
    "ClubSetting",
    "CreditPack",
    "DomainRule",
    "Entry",
    "Identity",
    "Invitation",
    "KeyModel",
    "KeyPolicy",
    "LedgerTransaction",
    "LoginLink",
    "MemberPolicy",
    "ModelTokenizer",
    "Price",
    "ProbeReference",
    "ProbeResult",
    "Purchase",
    "StripeEvent",
    "TrustedProvider",
    "UsageRecord",
    "User",
    "WebSession",
    "metadata",
]
