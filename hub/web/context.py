"""What every handler can ask for: the database session and the signed-in viewer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Response
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.accounts.models import User
from hub.club.service import club_name
from hub.club.standing import Standing, standing
from hub.db import Database
from hub.errors import NotSignedIn
from hub.outage import is_outage
from hub.runtime import runtime_of
from hub.settings import Settings

SESSION_COOKIE = "gpuclub_session"
log = logging.getLogger("gpuclub")

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
    """The signed-in member, or None; also remembers the club name and, for a whole page, the member's standing
    (balance, limits, the low-balance warning) for the page header."""
    request.state.club_name = await club_name(db, settings_of(request).club_name)
    token = request.cookies.get(SESSION_COOKIE)
    viewer = await accounts.user_for_session(db, token) if token else None
    request.state.viewer = viewer
    if viewer is not None and _whole_page(request):
        request.state.standing = await _standing(request, db, viewer)
    return viewer


def _whole_page(request: Request[Any, Any, Any]) -> bool:
    """Only a whole page shows the standing bar: not a form post (it redirects) nor an htmx fragment."""
    if request.method != "GET":
        return False
    return request.headers.get("hx-request") != "true" or request.headers.get("hx-history-restore-request") == "true"


async def _standing(request: Request[Any, Any, Any], db: AsyncSession, viewer: User) -> Standing | None:
    """The viewer's standing, or None: a page never fails because its header could not be read."""
    runtime = runtime_of(request)
    if runtime.outage.degraded:  # the database is away: the page says what it can without it
        return None
    try:
        used = runtime.admission.limiter.used_today(("user", viewer.pk))  # counted in memory; None: read it
        return await standing(db, viewer.pk, held=runtime.purses.held_by(viewer.pk), used_today=used)
    except Exception as exc:  # the bar is optional; the page is not
        if is_outage(exc):
            runtime.outage.noticed(exc)
            return None  # what was read stays as read; whatever the page still needs will say the database is away
        log.warning("the standing of member %s could not be read", viewer.pk, exc_info=exc)
        await db.rollback()  # PostgreSQL refuses anything more in a failed transaction
        await db.refresh(viewer)  # the rollback expired it; the page reads its name
        return None


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
