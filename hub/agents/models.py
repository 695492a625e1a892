"""Agents: one agent token per machine that shares a GPU. Live state (models, load) is kept in memory; the last
model list an agent offered is also kept here, so its models stay known (503, not 404) while it is away."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Text
from sqlmodel import Field, SQLModel

from hub.db import utcnow


class Agent(SQLModel, table=True):
    __tablename__ = "agents"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=100)
    prefix: str = Field(max_length=16)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    shared: bool = True
    paused: bool = False
    # An admin vouches for this machine; keys limited to verified agents may use it.
    verified: bool = False
    # Set when the hub paused the agent itself (repeated disputes); only an admin clears it.
    paused_reason: str = Field(default="", max_length=300)
    version: str = Field(default="", max_length=40)
    models: str = Field(default="", sa_type=Text)  # the names it last offered, one per line (printable, bounded)
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def pk(self) -> int:
        if self.id is None:
            raise ValueError("agent is not saved yet")
        return self.id


class ProbeResult(SQLModel, table=True):
    """One agent's answer to one model identity probe (the hub's own prompt, so its answer may be kept)."""

    __tablename__ = "probe_results"

    id: int | None = Field(default=None, primary_key=True)
    run: str = Field(max_length=32, index=True)  # the answers compared with each other share a run
    model: str = Field(max_length=200, index=True)
    agent_id: int = Field(foreign_key="agents.id", index=True, ondelete="CASCADE")
    answer_sha256: str = Field(max_length=64)  # of the normalized answer: equal hashes are equal answers
    excerpt: str = Field(default="", max_length=200)
    agreed: bool
    created_at: datetime = Field(default_factory=utcnow, index=True)


class ProbeReference(SQLModel, table=True):
    """The agent an admin trusts to run the real model: probes then compare every other answer with its answer."""

    __tablename__ = "probe_references"

    model: str = Field(primary_key=True, max_length=200)
    agent_id: int = Field(foreign_key="agents.id", ondelete="CASCADE")
    set_by: int | None = Field(default=None, foreign_key="users.id", ondelete="SET NULL")
    set_at: datetime = Field(default_factory=utcnow)
