"""Agents: one agent token per machine that shares a GPU. Live state (models, load) is kept in memory."""

from __future__ import annotations

from datetime import datetime

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
    version: str = Field(default="", max_length=40)
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def pk(self) -> int:
        if self.id is None:
            raise ValueError("agent is not saved yet")
        return self.id
