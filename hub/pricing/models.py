"""What a model costs: micro-credits per million input and per million output tokens, and per minute of audio for
transcriptions. Model "*" is the default.
"""

from __future__ import annotations

from sqlalchemy import BigInteger
from sqlmodel import Field, SQLModel

DEFAULT = "*"


class Price(SQLModel, table=True):
    __tablename__ = "prices"

    model: str = Field(primary_key=True, max_length=200)
    input_per_million: int = Field(default=0, sa_type=BigInteger)
    output_per_million: int = Field(default=0, sa_type=BigInteger)
    audio_per_minute: int = Field(default=0, sa_type=BigInteger)
    default_max_tokens: int = 1024  # what a hold assumes when a request does not say max_tokens
