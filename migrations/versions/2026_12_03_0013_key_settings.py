"""per-key budgets and model allowlists

A key may have a budget in credits per UTC day and per UTC month (micro-credits, in key_policies) and may name
the models it may use (key_models; no rows: every model).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("key_policies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("budget_day", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("budget_month", sa.BigInteger(), nullable=True))
    op.create_table(
        "key_models",
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key_id", "model"),
    )


def downgrade() -> None:
    op.drop_table("key_models")
    with op.batch_alter_table("key_policies", schema=None) as batch_op:
        batch_op.drop_column("budget_month")
        batch_op.drop_column("budget_day")
