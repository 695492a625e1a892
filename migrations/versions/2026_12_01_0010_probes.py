"""model identity probes

The hub asks every agent serving a model the same small question and keeps each answer's hash and excerpt, and
whether it agreed; an admin may name one agent per model as the reference.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "probe_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("answer_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("excerpt", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("agreed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("probe_results", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_probe_results_agent_id"), ["agent_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_probe_results_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_probe_results_model"), ["model"], unique=False)
        batch_op.create_index(batch_op.f("ix_probe_results_run"), ["run"], unique=False)
    op.create_table(
        "probe_references",
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("set_by", sa.Integer(), nullable=True),
        sa.Column("set_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["set_by"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("model"),
    )


def downgrade() -> None:
    op.drop_table("probe_references")
    with op.batch_alter_table("probe_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_probe_results_run"))
        batch_op.drop_index(batch_op.f("ix_probe_results_model"))
        batch_op.drop_index(batch_op.f("ix_probe_results_created_at"))
        batch_op.drop_index(batch_op.f("ix_probe_results_agent_id"))
    op.drop_table("probe_results")
