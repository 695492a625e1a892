"""Admin → Invitations: create a link (shown once), list with uses, revoke (sign-in links: hub/signin)."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from hub.accounts.models import User
from hub.accounts.service import parse_role
from hub.db import utcnow
from hub.invitations import service as invitations
from hub.parsing import parse_count, parse_credits, parse_duration
from hub.web.context import Db, Viewer, admin, settings_of
from hub.web.render import is_htmx, page


async def render_invitations(request: Request[Any, Any, Any], db: Db, user: User, **extra: Any) -> Template:
    """The page (or, for htmx, its list) for an admin `user` the caller has checked."""
    items = await invitations.list_invitations(db, user)
    return page(request, "admin/invitations.html", block="invitations", invitations=items, now=utcnow(), **extra)


@get("/admin/invitations", name="admin_invitations")
async def invitation_list(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template:
    user = admin(viewer)
    return await render_invitations(request, db, user)


@post("/admin/invitations")
async def invitation_create(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template:
    user = admin(viewer)
    form = await request.form()
    expires = form.get("expires", "7d").strip()
    invitation, token = await invitations.create_invitation(
        db,
        user,
        role=parse_role(form.get("role", "member")),
        max_uses=parse_count(form.get("max_uses", "1"), what="maximum number of uses", high=10_000),
        expires_in=None if expires == "never" else parse_duration(expires, what="expiry"),
        note=form.get("note", ""),
        credits=parse_credits(form.get("credits") or "0", what="starting credits", allow_zero=True),
        email=form.get("email", ""),
    )
    link = settings_of(request).url(f"/invite/{token}")
    return await render_invitations(request, db, user, new_invitation=invitation, link=link)


@post("/admin/invitations/{invitation_id:int}/revoke")
async def invitation_revoke(
    request: Request[Any, Any, Any], db: Db, viewer: Viewer, invitation_id: FromPath[int]
) -> Template | Redirect:
    user = admin(viewer)
    await invitations.revoke_invitation(db, user, invitation_id)
    if is_htmx(request):
        return await render_invitations(request, db, user)
    return Redirect("/admin/invitations", status_code=303)


routes = [invitation_list, invitation_create, invitation_revoke]
