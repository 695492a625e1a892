"""Club-wide settings an admin can change on the Settings page."""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class ClubSetting(SQLModel, table=True):
    __tablename__ = "club_settings"

    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(default="", max_length=2000)
