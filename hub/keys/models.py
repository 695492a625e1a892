"""API keys for `/v1`: only a hash and a short visible prefix are kept."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from hub.db import utcnow
from hub.keys.trust import Trust


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=100)
    prefix: str = Field(max_length=16)
    key_hash: str = Field(max_length=64, unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    # Whose GPUs may see this key's prompts (hub.keys.trust); "trusted" names the members in key_trusted_providers.
    trust: str = Field(default=Trust.ANY, max_length=16)

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


class TrustedProvider(SQLModel, table=True):
    """A member whose GPUs a `trusted` key may use."""

    __tablename__ = "key_trusted_providers"

    key_id: int = Field(primary_key=True, foreign_key="api_keys.id", ondelete="CASCADE")
    user_id: int = Field(primary_key=True, foreign_key="users.id", ondelete="CASCADE")


class KeyModel(SQLModel, table=True):
    """A model a key may use; a key with no rows here may use every model."""

    __tablename__ = "key_models"

    key_id: int = Field(primary_key=True, foreign_key="api_keys.id", ondelete="CASCADE")
    model: str = Field(primary_key=True, max_length=200)
