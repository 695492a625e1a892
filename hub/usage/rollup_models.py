"""Usage per day, member, model, agent and key (what the pages chart), how far the usage rows are folded in, and
two indexes the report pages need on tables of other features.

`usage_days` holds the sums of every usage row with an id up to the watermark; rows above it are read live, so a
page's numbers are exact and current. `agent_id` and `key_id` are 0 for none (a NULL would defeat the unique key).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from hub.ledger.models import Entry
from hub.usage.models import UsageRecord

USAGE = "usage"  # the watermark's name


class UsageDay(SQLModel, table=True):
    __tablename__ = "usage_days"
    __table_args__ = (
        UniqueConstraint("day", "user_id", "model", "agent_id", "key_id", name="uq_usage_days_group"),
        Index("ix_usage_days_user_day", "user_id", "day"),
        Index("ix_usage_days_agent_day", "agent_id", "day"),
        Index("ix_usage_days_day", "day"),
    )

    id: int | None = Field(default=None, primary_key=True)
    day: str = Field(max_length=10)  # UTC, "YYYY-MM-DD": the same text on SQLite and PostgreSQL
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE")
    model: str = Field(max_length=200)
    agent_id: int = 0
    key_id: int = 0
    requests: int = Field(default=0, sa_type=BigInteger)
    prompt_tokens: int = Field(default=0, sa_type=BigInteger)
    completion_tokens: int = Field(default=0, sa_type=BigInteger)
    cost: int = Field(default=0, sa_type=BigInteger)
    earned: int = Field(default=0, sa_type=BigInteger)


class RollupMark(SQLModel, table=True):
    __tablename__ = "usage_rollup_marks"

    name: str = Field(primary_key=True, max_length=40)
    last_id: int = Field(default=0, sa_type=BigInteger)  # every usage row with an id up to this one is folded in


# Admin → Usage and My GPUs count disputed requests of the last 30 days per agent and list the latest ones;
# without these they read every row of the window. Disputed rows are few, so the indexes are small.
DISPUTED_INDEX = Index(
    "ix_usage_disputed_created",
    UsageRecord.__table__.c.created_at,  # type: ignore[attr-defined]
    sqlite_where=text("disputed IS 1"),
    postgresql_where=text("disputed IS true"),
)
DISPUTED_BY_AGENT_INDEX = Index(
    "ix_usage_disputed_agent_created",
    UsageRecord.__table__.c.agent_id,  # type: ignore[attr-defined]
    UsageRecord.__table__.c.created_at,  # type: ignore[attr-defined]
    sqlite_where=text("disputed IS 1"),
    postgresql_where=text("disputed IS true"),
)

# A member's Credits page walks their entries newest first and sums the ones after each line (its running balance):
# by account, in id order, with the amount, so neither database sorts or visits the table for it.
ENTRIES_INDEX = Index(
    "ix_ledger_entries_account_id_id",
    Entry.__table__.c.account_id,  # type: ignore[attr-defined]
    Entry.__table__.c.id,  # type: ignore[attr-defined]
    Entry.__table__.c.amount,  # type: ignore[attr-defined]
)
