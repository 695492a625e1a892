"""What every handler can ask for: the database session and the signed-in viewer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Response
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.accounts.models import User
from hub.club.service import club_name
from hub.db import Database
from hub.errors import NotSignedIn
from hub.runtime import runtime_of
from hub.settings import Settings

SESSION_COOKIE = "gpuclub_session"

# Handler parameters filled in by name from the app's dependencies.
Db = NamedDependency[AsyncSession]
Viewer = NamedDependency[User | None]


def settings_of(request: Request[Any, Any, Any]) -> Settings:
    settings: Settings = runtime_of(request).settings
    return settings


async def provide_db(request: Request[Any, Any, Any]) -> AsyncIterator[AsyncSession]:
    database: Database = runtime_of(request).database
    async with database.session() as session:
        yield session


async def provide_viewer(request: Request[Any, Any, Any], db: Db) -> User | None:
    """The signed-in member, or None; also remembers the club name for the page header."""
    request.state.club_name = await club_name(db, settings_of(request).club_name)
    token = request.cookies.get(SESSION_COOKIE)
    viewer = await accounts.user_for_session(db, token) if token else None
    request.state.viewer = viewer
    return viewer


def signed_in(viewer: User | None) -> User:
    if viewer is None:
        raise NotSignedIn("Please sign in to see this page.")
    return viewer


def admin(viewer: User | None) -> User:
    user = signed_in(viewer)
    accounts.require_admin(user)
    return user


def session_cookie(settings: Settings, token: str) -> Cookie:
    return Cookie(
        key=SESSION_COOKIE,
        value=token,
        max_age=settings.session_days * 86400,
        path="/",
        httponly=True,
        secure=settings.secure_cookies,
        samesite="lax",
    )


def clear_cookie(response: Response[Any], name: str) -> None:
    response.delete_cookie(name, path="/")
