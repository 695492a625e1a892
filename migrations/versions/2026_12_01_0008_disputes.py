"""usage disputes and agent pause reasons

What a provider reported beyond the hub's bounds is kept next to what was billed; an agent the hub paused
itself says why.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 20:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reported_prompt_tokens", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("reported_completion_tokens", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("disputed", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("paused_reason", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("paused_reason")
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.drop_column("disputed")
        batch_op.drop_column("reported_completion_tokens")
        batch_op.drop_column("reported_prompt_tokens")
