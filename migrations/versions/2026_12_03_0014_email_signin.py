"""email sign-in: an invitation may name the person it is for; a sign-in link may honour an invitation

`invitations.email` (optional): the address an invitation is for. `login_links.invitation_id` and
`login_links.email`: a one-time link for someone invited who is not a member yet; following it makes them one.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("invitations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True))
        batch_op.create_index(batch_op.f("ix_invitations_email"), ["email"], unique=False)
    with op.batch_alter_table("login_links", schema=None) as batch_op:
        batch_op.add_column(sa.Column("invitation_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True))
        batch_op.create_foreign_key(
            "fk_login_links_invitation_id", "invitations", ["invitation_id"], ["id"], ondelete="CASCADE"
        )


def downgrade() -> None:
    with op.batch_alter_table("login_links", schema=None) as batch_op:
        batch_op.drop_constraint("fk_login_links_invitation_id", type_="foreignkey")
        batch_op.drop_column("email")
        batch_op.drop_column("invitation_id")
    with op.batch_alter_table("invitations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invitations_email"))
        batch_op.drop_column("email")
