"""Credit packs members can buy, their purchases through Stripe Checkout, and the Stripe events already handled.

Prices are integers in the currency's minor unit (cents for USD, yen for JPY); credits are micro-credits.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger
from sqlmodel import Field, SQLModel

from hub.billing.money import format_money
from hub.db import utcnow


class CreditPack(SQLModel, table=True):
    __tablename__ = "credit_packs"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=80)
    credits: int = Field(sa_type=BigInteger)
    amount: int = Field(sa_type=BigInteger)
    currency: str = Field(max_length=3)  # lower case, as Stripe writes it
    active: bool = Field(default=True, index=True)
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def price(self) -> str:
        return format_money(self.amount, self.currency)


class PurchaseStatus(StrEnum):
    PENDING = "pending"  # the member was sent to Stripe; nothing credited yet
    PAID = "paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    DISPUTED = "disputed"
    DISPUTE_WON = "dispute_won"  # the club won the dispute: what it took back was given back


class Purchase(SQLModel, table=True):
    """One Checkout Session; credits and price are copied from the pack, which an admin may change later."""

    __tablename__ = "purchases"

    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(max_length=255, unique=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="RESTRICT")
    pack_id: int = Field(foreign_key="credit_packs.id", index=True, ondelete="RESTRICT")
    credits: int = Field(sa_type=BigInteger)
    amount: int = Field(sa_type=BigInteger)
    currency: str = Field(max_length=3)
    status: str = Field(default=PurchaseStatus.PENDING, max_length=24)
    payment_intent: str | None = Field(default=None, max_length=255, index=True)
    refunded_amount: int = Field(default=0, sa_type=BigInteger)  # the charge's amount_refunded seen so far
    # Credits already accounted for by refunds and disputes: taken back, or written off when the member had
    # spent them. Later refunds reverse only the difference.
    reversed_credits: int = Field(default=0, sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    paid_at: datetime | None = None

    @property
    def price(self) -> str:
        return format_money(self.amount, self.currency)


class StripeEvent(SQLModel, table=True):
    """A webhook event whose effect was written, inserted in the same transaction: a replay finds it and stops."""

    __tablename__ = "stripe_events"

    id: str = Field(primary_key=True, max_length=255)
    type: str = Field(max_length=100)
    received_at: datetime = Field(default_factory=utcnow)
