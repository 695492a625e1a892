"""One row per request a member made: who, which key, which GPU, tokens, cost and timings. No content.

A request the hub refused before any GPU saw it (no credits, unknown model, limits) has a row too: no agent, no
tokens, no cost, and the error's `code` (which is empty on every other row).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, text
from sqlmodel import Field, SQLModel

from hub.db import utcnow

REFUSED = text("code != ''")  # written out, not a parameter, so both databases match it to the partial indexes


class UsageRecord(SQLModel, table=True):
    __tablename__ = "usage"
    __table_args__ = (
        Index("ix_usage_user_created", "user_id", "created_at"),
        Index("ix_usage_agent_created", "agent_id", "created_at"),
        Index("ix_usage_key_created", "key_id", "created_at"),
        Index("ix_usage_created", "created_at"),
        Index("ix_usage_model_created", "model", "created_at"),  # the request log's model filter
        # Refused requests are few among many: the log's "refused" filter reads them alone (hub.usage.log).
        Index("ix_usage_refused_user", "user_id", "created_at", sqlite_where=REFUSED, postgresql_where=REFUSED),
        Index("ix_usage_refused", "created_at", sqlite_where=REFUSED, postgresql_where=REFUSED),
    )

    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(max_length=32, unique=True)
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE")
    key_id: int | None = Field(default=None, foreign_key="api_keys.id", ondelete="SET NULL")
    agent_id: int | None = Field(default=None, foreign_key="agents.id", ondelete="SET NULL")
    model: str = Field(max_length=200)
    endpoint: str = Field(max_length=40)
    stream: bool = False
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False
    # What the provider reported, kept when it was more than the hub believes (then `disputed`); the hub bills
    # `prompt_tokens`/`completion_tokens`, which never exceed its own bounds.
    reported_prompt_tokens: int | None = Field(default=None, sa_type=BigInteger)
    reported_completion_tokens: int | None = Field(default=None, sa_type=BigInteger)
    disputed: bool = False
    audio_ms: int | None = Field(default=None, sa_type=BigInteger)  # the audio a transcription was billed for
    ttft_ms: int | None = None
    duration_ms: int = 0
    error: str = Field(default="", max_length=300)
    code: str = Field(default="", max_length=40)  # the error code of a request the hub refused ("" otherwise)
    cost: int = Field(default=0, sa_type=BigInteger)  # micro-credits charged to the member (club fee included)
    earned: int = Field(default=0, sa_type=BigInteger)  # micro-credits paid to the GPU's owner
    created_at: datetime = Field(default_factory=utcnow)
