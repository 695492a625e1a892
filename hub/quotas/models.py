"""Per-member and per-key limits that override the club's defaults (None: use the default / no limit), and a key's
budget per UTC day and month (micro-credits; None: no budget)."""

from __future__ import annotations

from sqlalchemy import BigInteger
from sqlmodel import Field, SQLModel


class MemberPolicy(SQLModel, table=True):
    __tablename__ = "member_policies"

    user_id: int = Field(primary_key=True, foreign_key="users.id", ondelete="CASCADE")
    rpm: int | None = None
    tokens_per_day: int | None = None
    concurrency: int | None = None
    allowance: int | None = Field(default=None, sa_type=BigInteger)  # micro-credits granted each month


class KeyPolicy(SQLModel, table=True):
    __tablename__ = "key_policies"

    key_id: int = Field(primary_key=True, foreign_key="api_keys.id", ondelete="CASCADE")
    rpm: int | None = None
    tokens_per_day: int | None = None
    concurrency: int | None = None
    budget_day: int | None = Field(default=None, sa_type=BigInteger)  # micro-credits per UTC day
    budget_month: int | None = Field(default=None, sa_type=BigInteger)  # micro-credits per UTC month
