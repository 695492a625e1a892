"""A Hugging Face `tokenizer.json` attached to a model name; the hub counts that model's tokens with it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Text
from sqlmodel import Field, SQLModel

from hub.db import utcnow


class ModelTokenizer(SQLModel, table=True):
    __tablename__ = "model_tokenizers"

    model: str = Field(primary_key=True, max_length=200)  # as clients name it in requests
    # The file itself, so every hub replica loads the same one and nothing is fetched at run time.
    content: str = Field(sa_type=Text)
    sha256: str = Field(max_length=64)  # of the file's bytes; replicas reload a model only when it changes
    size: int  # bytes
    attached_by: int | None = Field(default=None, foreign_key="users.id", ondelete="SET NULL")  # None: the CLI
    attached_at: datetime = Field(default_factory=utcnow)
