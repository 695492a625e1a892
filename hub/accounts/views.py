"""Starting a session, the first-start owner link, and signing out (sign-in links: hub/signin/email_views.py)."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from hub.accounts import service as accounts
from hub.accounts.models import User
from hub.web.context import SESSION_COOKIE, Db, Viewer, clear_cookie, session_cookie, settings_of
from hub.web.render import page


async def signed_in_redirect(request: Request[Any, Any, Any], db: Db, user: User) -> Redirect:
    settings = settings_of(request)
    token = await accounts.start_session(db, user, days=settings.session_days)
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        await accounts.end_session(db, old)
    return Redirect("/dashboard", status_code=303, cookies=[session_cookie(settings, token)])


@get("/setup/{token:str}", name="setup")
async def setup_form(request: Request[Any, Any, Any], db: Db, viewer: Viewer, token: FromPath[str]) -> Template:
    await accounts.peek_setup_link(db, token)
    return page(request, "setup.html", token=token, email="", name="")


@post("/setup/{token:str}")
async def setup_claim(request: Request[Any, Any, Any], db: Db, viewer: Viewer, token: FromPath[str]) -> Redirect:
    form = await request.form()
    user = await accounts.claim_ownership(db, token, email=form.get("email", ""), name=form.get("name", ""))
    return await signed_in_redirect(request, db, user)


@post("/logout", name="logout")
async def logout(request: Request[Any, Any, Any], db: Db) -> Redirect:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await accounts.end_session(db, token)
    response = Redirect("/", status_code=303)
    clear_cookie(response, SESSION_COOKIE)
    return response


routes = [setup_form, setup_claim, logout]
