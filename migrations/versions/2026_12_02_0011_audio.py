"""prices per audio minute, audio length on usage rows

Transcription and translation requests are billed per audio second at the model's price per minute of audio; a
usage row keeps how much audio its request was billed for (none for every other API).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("prices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("audio_per_minute", sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.add_column(sa.Column("audio_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.drop_column("audio_ms")
    with op.batch_alter_table("prices", schema=None) as batch_op:
        batch_op.drop_column("audio_per_minute")
