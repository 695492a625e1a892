"""request_log: the error code of a request the hub refused, on its usage row, and indexes for the request log

Refused requests (no credits, unknown model, limits, a full queue) get a usage row too; `code` says why and marks
them apart from requests a GPU answered (where it stays empty). The log filters by model, and by refused: partial
indexes on the refused rows alone keep that filter fast among a million answered ones.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
REFUSED = sa.text("code != ''")


def upgrade() -> None:
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("code", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False, server_default="")
        )
        batch_op.create_index("ix_usage_model_created", ["model", "created_at"], unique=False)
        batch_op.create_index(
            "ix_usage_refused_user",
            ["user_id", "created_at"],
            unique=False,
            sqlite_where=REFUSED,
            postgresql_where=REFUSED,
        )
        batch_op.create_index(
            "ix_usage_refused", ["created_at"], unique=False, sqlite_where=REFUSED, postgresql_where=REFUSED
        )


def downgrade() -> None:
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_refused")
        batch_op.drop_index("ix_usage_refused_user")
        batch_op.drop_index("ix_usage_model_created")
        batch_op.drop_column("code")
