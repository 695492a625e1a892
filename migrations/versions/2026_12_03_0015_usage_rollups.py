"""usage per day (member, model, agent, key) kept up to date by housekeeping; indexes for the report pages

Pages read `usage_days` for whole days plus the usage rows above the watermark (`usage_rollup_marks`), so they
stay fast with a big history and exact. The table starts empty with the watermark at 0: until housekeeping has
folded the existing rows in (in batches), pages read them live.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage_days",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("day", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.Column("earned", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("day", "user_id", "model", "agent_id", "key_id", name="uq_usage_days_group"),
    )
    with op.batch_alter_table("usage_days", schema=None) as batch_op:
        batch_op.create_index("ix_usage_days_user_day", ["user_id", "day"], unique=False)
        batch_op.create_index("ix_usage_days_agent_day", ["agent_id", "day"], unique=False)
        batch_op.create_index("ix_usage_days_day", ["day"], unique=False)
    marks = op.create_table(
        "usage_rollup_marks",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.bulk_insert(marks, [{"name": "usage", "last_id": 0}])
    op.create_index(
        "ix_usage_disputed_created",
        "usage",
        ["created_at"],
        unique=False,
        sqlite_where=sa.text("disputed IS 1"),
        postgresql_where=sa.text("disputed IS true"),
    )
    op.create_index(
        "ix_usage_disputed_agent_created",
        "usage",
        ["agent_id", "created_at"],
        unique=False,
        sqlite_where=sa.text("disputed IS 1"),
        postgresql_where=sa.text("disputed IS true"),
    )
    op.create_index("ix_ledger_entries_account_id_id", "ledger_entries", ["account_id", "id", "amount"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ledger_entries_account_id_id", table_name="ledger_entries")
    op.drop_index("ix_usage_disputed_agent_created", table_name="usage")
    op.drop_index("ix_usage_disputed_created", table_name="usage")
    op.drop_table("usage_rollup_marks")
    with op.batch_alter_table("usage_days", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_days_day")
        batch_op.drop_index("ix_usage_days_agent_day")
        batch_op.drop_index("ix_usage_days_user_day")
    op.drop_table("usage_days")
