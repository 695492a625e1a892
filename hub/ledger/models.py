"""The credit ledger: accounts, append-only double-entry transactions, and holds.

Amounts are integers in micro-credits (1 credit = 1,000,000). Every transaction's entries sum to zero. An
account's `balance` is a cache of the sum of its entries, changed only in the same database transaction as the
entries, and `gpuclub ledger check` verifies it. Credits held for requests in flight live in the hub's memory
(`hub.ledger.purses`); `held` is set only inside a transaction that takes credits back, and is zero at rest.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger
from sqlmodel import Field, SQLModel

from hub.db import utcnow

MICRO = 1_000_000


class Kind(StrEnum):
    MEMBER = "member"
    CLUB = "club"  # the club's fee income
    ISSUANCE = "issuance"  # where granted credits come from (grants, allowances, invitation credits)
    STRIPE = "stripe"  # where bought credits come from


class Account(SQLModel, table=True):
    __tablename__ = "accounts"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16, index=True)
    user_id: int | None = Field(default=None, foreign_key="users.id", unique=True, ondelete="RESTRICT")
    balance: int = Field(default=0, sa_type=BigInteger)
    held: int = Field(default=0, sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow)


class LedgerTransaction(SQLModel, table=True):
    __tablename__ = "ledger_transactions"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=200, unique=True)  # the idempotency key: request id, event id, grant id …
    kind: str = Field(max_length=24, index=True)
    memo: str = Field(default="", max_length=500)
    created_by: int | None = Field(default=None, foreign_key="users.id", ondelete="SET NULL")
    created_at: datetime = Field(default_factory=utcnow, index=True)


class Entry(SQLModel, table=True):
    __tablename__ = "ledger_entries"

    id: int | None = Field(default=None, primary_key=True)
    transaction_id: int = Field(foreign_key="ledger_transactions.id", index=True, ondelete="RESTRICT")
    account_id: int = Field(foreign_key="accounts.id", index=True, ondelete="RESTRICT")
    amount: int = Field(sa_type=BigInteger)
