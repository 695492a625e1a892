"""key trust scopes and verified agents

A key says whose GPUs may see its prompts (any, own, trusted members, verified agents); existing keys keep
reaching any GPU their member may use. An admin can mark an agent verified.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 20:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("trust", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False, server_default="any")
        )
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("verified", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "key_trusted_providers",
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key_id", "user_id"),
    )


def downgrade() -> None:
    op.drop_table("key_trusted_providers")
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("verified")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("trust")
