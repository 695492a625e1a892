"""what each request cost and earned, on its usage row

The request log and the per-key budgets read a request's cost from its usage row (micro-credits charged to the
member, and paid to the GPU's owner) instead of joining the ledger; indexes for a key's spend and the club-wide log.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cost", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("earned", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.create_index("ix_usage_key_created", ["key_id", "created_at"], unique=False)
        batch_op.create_index("ix_usage_created", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_created")
        batch_op.drop_index("ix_usage_key_created")
        batch_op.drop_column("earned")
        batch_op.drop_column("cost")
